//! An HCL or JSON document as one small tree that keeps the line of every key.
//!
//! Consul accepts the same text in HCL or in JSON (HCL's JSON mapping) for ACL rules and for
//! agent configuration files, and refusals should point at the line to fix. `hcl::Body` and
//! `serde_json::Value` both drop positions, so the two parsers here (`hcl`, on `hcl-rs`'s
//! span-keeping layer; `json`, on serde_json with a position-counting reader) build this tree
//! instead, and every decoder (the ACL rule language, `meshd`'s configuration files) reads the
//! tree: one decoder per language, never one per syntax, so the two syntaxes cannot disagree.
//!
//! Mapping (HCL's own JSON mapping): a block `ident "l1" "l2" { body }` becomes the entry
//! `ident` → `{ "l1": { "l2": body } }`; an attribute `k = v` the entry `k` → `v`. Entries keep
//! their source order and duplicates, so a decoder can refuse a key given twice instead of
//! silently keeping one. Values a decoder never needs (fractional numbers, interpolations,
//! function calls, ...) are kept only as a kind name, for the error message.

mod hcl;
mod json;

use std::fmt;

pub use hcl::parse_hcl;
pub use json::parse_json;

/// A 1-based line in the text, when known (every key has one; a whole document has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Line(pub Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, " (line {n})"),
            None => Ok(()),
        }
    }
}

/// A value in the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string literal.
    Str(String),
    /// A list, elements in order.
    List(Vec<Value>),
    /// An object or block body: entries in source order, duplicates kept.
    Object(Vec<Entry>),
    /// Anything else, by kind name (`"a fractional number"`, `"a function call"`, ...).
    Other(&'static str),
}

impl Value {
    /// What the value is, for "must be X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Object(_) => "a block",
            Value::Other(k) => k,
        }
    }
}

/// `key = value`, or a block `key "label" { ... }`, with the line of the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (or block identifier, or label) as written.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// Where the key is.
    pub line: Line,
}

/// Why a text is not valid HCL or JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {syntax} at line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// `"HCL"` or `"JSON"`.
    pub syntax: &'static str,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
    /// The parser's message.
    pub message: String,
}

/// Byte offset → 1-based line.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        Self(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The line holding byte `offset`: one more than the newlines before it.
    fn line(&self, offset: usize) -> Line {
        Line(Some(self.0.partition_point(|&nl| nl < offset) + 1))
    }
}

#[cfg(test)]
mod tests;
