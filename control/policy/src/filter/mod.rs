//! Consul's filter expression language (HashiCorp go-bexpr, as `?filter=` takes it), parsed
//! and evaluated against rows serialized in Consul's field names.
//!
//! Why here: every list endpoint of the server and the agent filters with it, so one parser
//! and one evaluator give one behaviour; pure code (no I/O) so it is fuzzed (`fuzz/`, target
//! `filter`). No maintained Rust crate implements go-bexpr, so this is a small hand-written
//! recursive-descent parser with bounded input length and nesting (see `parse`).
//!
//! Selector validation: Consul rejects a selector its row type has no field for
//! ("Selector ... is not valid"). Rows here are JSON, so the caller names the rows' top-level
//! fields ([`Filter::check_fields`]); below the first field a missing key is "not present"
//! (go-bexpr's disposition for map keys), since maps (`Meta`) and optional structs look alike
//! in JSON.

mod ast;
mod error;
mod eval;
mod lexer;
mod parse;
#[cfg(test)]
mod tests;

pub use ast::{Expr, Match, MatchOp, Selector};
pub use error::{FilterError, Position};
pub use parse::{MAX_DEPTH, MAX_LEN};

/// A parsed `?filter=` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses `input`; the error says where (`line:col (offset)`) and what was expected.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        parse::parse(input).map(|expr| Self { expr })
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Refuses a selector whose first field is not in `fields` (the rows' top-level fields),
    /// as Consul refuses a selector its row type lacks.
    pub fn check_fields(&self, fields: &[&str]) -> Result<(), FilterError> {
        let mut first_bad = None;
        visit(&self.expr, &mut |m| {
            let head = m.selector.path.first().map(String::as_str).unwrap_or("");
            if first_bad.is_none() && !fields.contains(&head) {
                first_bad = Some(m.selector.dotted());
            }
        });
        match first_bad {
            None => Ok(()),
            Some(selector) => Err(FilterError::InvalidSelector {
                selector,
                valid: fields.join(", "),
            }),
        }
    }

    /// Whether `row` passes the filter.
    pub fn matches(&self, row: &serde_json::Value) -> Result<bool, FilterError> {
        eval::eval(&self.expr, row)
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.expr.fmt(f)
    }
}

/// Calls `f` on every match expression in `e`.
fn visit(e: &Expr, f: &mut impl FnMut(&Match)) {
    match e {
        Expr::Or(items) | Expr::And(items) => items.iter().for_each(|i| visit(i, f)),
        Expr::Not(inner) => visit(inner, f),
        Expr::Match(m) => f(m),
    }
}
