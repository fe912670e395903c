//! Evaluating a parsed expression against one row (a `serde_json::Value` in Consul's field
//! names), with go-bexpr's semantics:
//!
//! * a selector walks objects by key and lists by index (`Checks.0.Status`); any other
//!   segment applied to a list is applied to every element and the match holds when it holds
//!   for ANY element (`Checks.Status == critical`; an empty list matches nothing);
//! * a missing key or a `null` on the way answers as Consul's `NotPresentDisposition`: false
//!   for `==`, `in`, `is not empty`, `matches`, true for their negations and `is empty`;
//! * the value is coerced to the selected type: a number field compares numerically
//!   (`Port == 8080`), a boolean one with Go's `ParseBool` words, a string one as text;
//! * `in` / `contains` is key presence on a map, element equality on a list, substring on a
//!   string; `is empty` is length zero; `matches` is an unanchored regular expression search.
//!
//! An operator that cannot apply to what the selector found (`==` on a list, `matches` on a
//! number, a value that is not a number for a number field) is an [`FilterError::Evaluate`].

use serde_json::Value;

use super::ast::{Expr, Match, MatchOp};
use super::error::FilterError;

/// Evaluates `expr` against `row`.
pub(super) fn eval(expr: &Expr, row: &Value) -> Result<bool, FilterError> {
    match expr {
        Expr::Or(items) => {
            for e in items {
                if eval(e, row)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::And(items) => {
            for e in items {
                if !eval(e, row)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Not(e) => Ok(!eval(e, row)?),
        Expr::Match(m) => walk(m, &m.selector.path, row),
    }
}

/// Follows `rest` of the selector from `v`, then applies the match.
fn walk(m: &Match, rest: &[String], v: &Value) -> Result<bool, FilterError> {
    let Some((seg, tail)) = rest.split_first() else {
        return terminal(m, v);
    };
    match v {
        Value::Object(map) => match map.get(seg) {
            Some(next) => walk(m, tail, next),
            None => Ok(m.op.when_absent()),
        },
        Value::Array(items) => match seg.parse::<usize>() {
            Ok(i) => items
                .get(i)
                .map_or(Ok(m.op.when_absent()), |next| walk(m, tail, next)),
            Err(_) => {
                for item in items {
                    if walk(m, rest, item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        },
        Value::Null => Ok(m.op.when_absent()),
        other => Err(fail(
            m,
            format!(
                "a {} has no field {seg:?} (the selector goes past a value)",
                kind(other)
            ),
        )),
    }
}

/// Applies the operator to the selected value.
fn terminal(m: &Match, v: &Value) -> Result<bool, FilterError> {
    if v.is_null() {
        return Ok(m.op.when_absent());
    }
    let (op, negate) = m.op.positive();
    let raw = m.value.as_deref().unwrap_or("");
    let hit = match op {
        MatchOp::Equal => match v {
            Value::Array(_) | Value::Object(_) => {
                return Err(invalid_op(m, v));
            }
            scalar => equal(m, raw, scalar)?,
        },
        MatchOp::In => match v {
            Value::Object(map) => map.contains_key(raw),
            Value::Array(items) => items.iter().any(|item| {
                !item.is_array() && !item.is_object() && equal(m, raw, item).unwrap_or(false)
            }),
            Value::String(s) => s.contains(raw),
            other => {
                return Err(fail(
                    m,
                    format!("cannot perform in/contains operations on a {}", kind(other)),
                ));
            }
        },
        MatchOp::IsEmpty => match v {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            other => return Err(invalid_op(m, other)),
        },
        _ => match (v, &m.regex) {
            (Value::String(s), Some(re)) => re.is_match(s),
            (other, _) => return Err(invalid_op(m, other)),
        },
    };
    Ok(hit != negate)
}

/// `raw` coerced to the type of `scalar`, compared with it.
fn equal(m: &Match, raw: &str, scalar: &Value) -> Result<bool, FilterError> {
    match scalar {
        Value::String(s) => Ok(s == raw),
        Value::Bool(b) => Ok(parse_bool(raw).ok_or_else(|| coerce(m, raw, "a boolean"))? == *b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(raw
                    .parse::<i64>()
                    .map_err(|_| coerce(m, raw, "an integer"))?
                    == i)
            } else if let Some(u) = n.as_u64() {
                Ok(raw
                    .parse::<u64>()
                    .map_err(|_| coerce(m, raw, "an integer"))?
                    == u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Ok(raw.parse::<f64>().map_err(|_| coerce(m, raw, "a number"))? == f)
            }
        }
        _ => Ok(false),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn fail(m: &Match, reason: String) -> FilterError {
    FilterError::Evaluate {
        selector: m.selector.dotted(),
        reason,
    }
}

fn invalid_op(m: &Match, v: &Value) -> FilterError {
    fail(
        m,
        format!(
            "Invalid match operator {:?} for a {} value",
            m.op.name(),
            kind(v)
        ),
    )
}

fn coerce(m: &Match, raw: &str, want: &str) -> FilterError {
    fail(
        m,
        format!("Failed to coerce value {raw:?}: the field holds {want}"),
    )
}
