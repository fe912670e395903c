//! HCL text → the tree, with `hcl-rs`'s span-keeping layer (`hcl::edit`, the parser
//! `hcl::parse` itself uses), so every key keeps its line.

use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Body, Structure};

use super::{Entry, Line, LineIndex, SyntaxError, Value};

/// Parses `text` as an HCL body: the result is a [`Value::Object`].
pub fn parse_hcl(text: &str) -> Result<Value, SyntaxError> {
    let body = hcl::edit::parser::parse_body(text).map_err(|e| SyntaxError {
        syntax: "HCL",
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let lines = LineIndex::new(text);
    Ok(Value::Object(body_entries(&body, &lines)))
}

fn line_of(lines: &LineIndex, span: Option<std::ops::Range<usize>>) -> Line {
    span.map_or(Line(None), |s| lines.line(s.start))
}

fn body_entries(body: &Body, lines: &LineIndex) -> Vec<Entry> {
    body.iter()
        .map(|s| match s {
            Structure::Attribute(a) => Entry {
                key: a.key.as_str().to_string(),
                value: expr_value(&a.value, lines),
                line: line_of(lines, a.span()),
            },
            Structure::Block(b) => {
                let line = line_of(lines, b.span());
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
        Expression::Bool(b) => Value::Bool(*b.value()),
        Expression::Null(_) => Value::Null,
        Expression::Number(n) => n
            .value()
            .as_i64()
            .map_or(Value::Other("a fractional number"), Value::Int),
        Expression::Array(a) => Value::List(a.iter().map(|v| expr_value(v, lines)).collect()),
        Expression::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let line = line_of(lines, k.span());
                    let key = match k {
                        ObjectKey::Ident(i) => Some(i.as_str().to_string()),
                        ObjectKey::Expression(e) => e.as_str().map(str::to_string),
                    };
                    match key {
                        Some(key) => Entry {
                            key,
                            value: expr_value(v.expr(), lines),
                            line,
                        },
                        // A computed key names nothing a decoder knows.
                        None => Entry {
                            key: "<expression>".into(),
                            value: Value::Other("a computed key"),
                            line,
                        },
                    }
                })
                .collect(),
        ),
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
            Value::Other("a template (interpolation is not supported)")
        }
        Expression::Parenthesis(p) => expr_value(p.inner(), lines),
        _ => Value::Other("an expression"),
    }
}
