//! HCL rule text → the decoder's tree, with the `hcl-rs` parser.
//!
//! We use `hcl-rs`'s span-keeping layer (`hcl::edit`, the parser `hcl::parse` itself uses) rather
//! than `hcl::Body`, because it keeps where each attribute and block starts: every refusal of
//! the decoder can then name the line, not only syntax errors.
//!
//! Mapping (HCL's own JSON mapping): a block `ident "l1" "l2" { body }` becomes the entry
//! `ident` → `{ "l1": { "l2": body } }`; an attribute `k = "v"` the entry `k` → `"v"`; an object
//! expression `k = { a = "b" }` an object. Interpolations, numbers, lists, variables and
//! function calls are kept only as a kind, for the error message: rules are literal text.

use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Body, Structure};

use super::error::{Line, RulesError};
use super::tree::{Entry, Value};

/// Parses `text` as HCL into the decoder's tree.
pub(super) fn to_tree(text: &str) -> Result<Value, RulesError> {
    let body = hcl::edit::parser::parse_body(text).map_err(|e| RulesError::Hcl {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let lines = LineIndex::new(text);
    Ok(Value::Object(body_entries(&body, &lines)))
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

    fn line(&self, span: Option<std::ops::Range<usize>>) -> Line {
        // Line n starts after the (n-1)th newline: count the newlines before the offset.
        Line(span.map(|s| self.0.partition_point(|&nl| nl < s.start) + 1))
    }
}

fn body_entries(body: &Body, lines: &LineIndex) -> Vec<Entry> {
    body.iter()
        .map(|s| match s {
            Structure::Attribute(a) => Entry {
                key: a.key.as_str().to_string(),
                value: expr_value(&a.value, lines),
                line: lines.line(a.span()),
            },
            Structure::Block(b) => {
                let line = lines.line(b.span());
                // Innermost first: `ident "l1" "l2" { body }` → l2 → body, then l1 → that.
                let mut value = Value::Object(body_entries(&b.body, lines));
                for label in b.labels.iter().rev() {
                    value = Value::Object(vec![Entry {
                        key: label.as_str().to_string(),
                        value,
                        line,
                    }]);
                }
                Entry {
                    key: b.ident.as_str().to_string(),
                    value,
                    line,
                }
            }
        })
        .collect()
}

fn expr_value(e: &Expression, lines: &LineIndex) -> Value {
    match e {
        Expression::String(s) => Value::Str(s.value().clone()),
        Expression::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Ident(i) => Some(i.as_str().to_string()),
                        ObjectKey::Expression(e) => e.as_str().map(str::to_string),
                    };
                    match key {
                        Some(key) => Entry {
                            key,
                            value: expr_value(v.expr(), lines),
                            line: lines.line(k.span()),
                        },
                        // A computed key cannot name a resource, segment or field.
                        None => Entry {
                            key: "<expression>".into(),
                            value: Value::Other("a computed key"),
                            line: lines.line(k.span()),
                        },
                    }
                })
                .collect(),
        ),
        Expression::Null(_) => Value::Other("null"),
        Expression::Bool(_) => Value::Other("a boolean"),
        Expression::Number(_) => Value::Other("a number"),
        Expression::Array(_) => Value::Other("a list"),
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
            Value::Other("a template (interpolation is not supported in rules)")
        }
        Expression::Parenthesis(p) => expr_value(p.inner(), lines),
        _ => Value::Other("an expression"),
    }
}
