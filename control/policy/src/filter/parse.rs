//! Recursive descent over go-bexpr's grammar: `or` binds loosest, then `and`, then `not`, then
//! parentheses and match expressions. Chains of `and`/`or` are loops (n-ary nodes), so only
//! parentheses and `not` nest, and their depth is capped ([`MAX_DEPTH`]) as is the input's
//! length ([`MAX_LEN`]): no input can exhaust the stack, here or in evaluation.

use regex::RegexBuilder;

use super::ast::{Expr, Match, MatchOp, Selector};
use super::error::{FilterError, Position};
use super::lexer::Cursor;

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 8 * 1024;
/// The deepest nesting of parentheses and `not` accepted.
pub const MAX_DEPTH: usize = 64;
/// The most memory one compiled `matches` pattern may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a match expression's operator position accepts, for error messages.
const EXPECTED_OP: &str = "\"!=\", \"==\", \"contains\", \"in\", \"is\", \"matches\" or \"not\"";

/// Parses a whole expression.
pub(super) fn parse(input: &str) -> Result<Expr, FilterError> {
    let mut c = Cursor::new(input);
    if input.len() > MAX_LEN {
        return Err(FilterError::Syntax {
            at: Position::of(input, MAX_LEN),
            message: format!(
                "expression is {} bytes long; at most {MAX_LEN} are accepted",
                input.len()
            ),
        });
    }
    c.skip_ws();
    let expr = or_expr(&mut c, 0)?;
    c.skip_ws();
    if !c.at_end() {
        return Err(c.expected("\"and\", \"or\" or the end of the expression"));
    }
    Ok(expr)
}

/// `a or b or ...`; the words need whitespace on both sides.
fn or_expr(c: &mut Cursor<'_>, depth: usize) -> Result<Expr, FilterError> {
    chain(c, depth, "or", and_expr, Expr::Or)
}

fn and_expr(c: &mut Cursor<'_>, depth: usize) -> Result<Expr, FilterError> {
    chain(c, depth, "and", not_expr, Expr::And)
}

/// One or more `operand`s joined by the keyword `word`, as one n-ary node.
fn chain(
    c: &mut Cursor<'_>,
    depth: usize,
    word: &str,
    operand: fn(&mut Cursor<'_>, usize) -> Result<Expr, FilterError>,
    node: fn(Vec<Expr>) -> Expr,
) -> Result<Expr, FilterError> {
    let first = operand(c, depth)?;
    let mut rest = Vec::new();
    loop {
        let save = c.pos;
        if c.skip_ws() && c.keyword(word) && c.skip_ws() {
            rest.push(operand(c, depth)?);
        } else {
            c.pos = save;
            break;
        }
    }
    if rest.is_empty() {
        return Ok(first);
    }
    rest.insert(0, first);
    Ok(node(rest))
}

fn deeper(c: &Cursor<'_>, depth: usize) -> Result<usize, FilterError> {
    if depth >= MAX_DEPTH {
        return Err(FilterError::TooDeep {
            at: Position::of(c.input, c.pos),
            max: MAX_DEPTH,
        });
    }
    Ok(depth + 1)
}

/// `not x` (`not not x` is `x`), else a parenthesized or match expression. As in go-bexpr's
/// PEG, a `not` that does not start a negation can still be a selector (`not == 1`).
fn not_expr(c: &mut Cursor<'_>, depth: usize) -> Result<Expr, FilterError> {
    let start = c.pos;
    if c.keyword("not") && c.skip_ws() {
        let d = deeper(c, depth)?;
        match not_expr(c, d) {
            Ok(Expr::Not(inner)) => return Ok(*inner),
            Ok(e) => return Ok(Expr::Not(Box::new(e))),
            Err(e @ FilterError::TooDeep { .. }) => return Err(e),
            Err(first) => {
                c.pos = start;
                return primary(c, depth).map_err(|second| farther(first, second));
            }
        }
    }
    c.pos = start;
    primary(c, depth)
}

/// Of two errors, the one that got further into the input (as a PEG parser reports).
fn farther(a: FilterError, b: FilterError) -> FilterError {
    let at = |e: &FilterError| match e {
        FilterError::Syntax { at, .. }
        | FilterError::Regex { at, .. }
        | FilterError::TooDeep { at, .. } => at.offset,
        _ => 0,
    };
    if at(&b) >= at(&a) { b } else { a }
}

/// `( expr )` or a match expression.
fn primary(c: &mut Cursor<'_>, depth: usize) -> Result<Expr, FilterError> {
    if c.eat("(") {
        let d = deeper(c, depth)?;
        c.skip_ws();
        let e = or_expr(c, d)?;
        c.skip_ws();
        if !c.eat(")") {
            return Err(c.error_at(
                c.pos,
                "Unmatched parentheses: expected \")\", \"and\" or \"or\"",
            ));
        }
        return Ok(e);
    }
    match_expr(c).map(Expr::Match)
}

/// A selector or value (whichever the operator makes it) that starts a match expression.
enum Lead {
    Selector(Selector),
    Value(String),
}

fn match_expr(c: &mut Cursor<'_>) -> Result<Match, FilterError> {
    let lead = lead(c)?;
    let after_lead = c.pos;
    let had_ws = c.skip_ws();
    if c.eat("==") || c.eat("!=") {
        let op = if c.input[..c.pos].ends_with("==") {
            MatchOp::Equal
        } else {
            MatchOp::NotEqual
        };
        c.skip_ws();
        return with_value(c, need_selector(c, lead, after_lead)?, op);
    }
    if !had_ws {
        return Err(c.expected(EXPECTED_OP));
    }
    let negated = {
        let save = c.pos;
        if c.keyword("not") && c.skip_ws() {
            true
        } else {
            c.pos = save;
            false
        }
    };
    let op_at = c.pos;
    let Some(word) = c.identifier() else {
        return Err(c.expected(EXPECTED_OP));
    };
    let pick = |pos: MatchOp, neg: MatchOp| if negated { neg } else { pos };
    match word {
        "is" if !negated => {
            if !c.skip_ws() {
                return Err(c.expected("whitespace"));
            }
            let not = c.keyword("not") && c.skip_ws();
            if !c.keyword("empty") {
                return Err(c.expected(if not {
                    "\"empty\""
                } else {
                    "\"empty\" or \"not\""
                }));
            }
            let op = if not {
                MatchOp::IsNotEmpty
            } else {
                MatchOp::IsEmpty
            };
            Ok(Match {
                selector: need_selector(c, lead, after_lead)?,
                op,
                value: None,
                regex: None,
            })
        }
        "contains" | "matches" => {
            if !c.skip_ws() {
                return Err(c.expected("whitespace"));
            }
            let op = if word == "contains" {
                pick(MatchOp::In, MatchOp::NotIn)
            } else {
                pick(MatchOp::Matches, MatchOp::NotMatches)
            };
            with_value(c, need_selector(c, lead, after_lead)?, op)
        }
        "in" => {
            if !c.skip_ws() {
                return Err(c.expected("whitespace"));
            }
            let value = match lead {
                Lead::Value(v) => v,
                Lead::Selector(s) => s.dotted(),
            };
            let sel_at = c.pos;
            let selector = match lead_selector(c)? {
                Some(s) => s,
                None => return Err(c.error_at(sel_at, "rule \"match\": Invalid selector")),
            };
            Ok(Match {
                selector,
                op: pick(MatchOp::In, MatchOp::NotIn),
                value: Some(value),
                regex: None,
            })
        }
        _ => {
            c.pos = op_at;
            Err(c.expected(if negated {
                "\"contains\", \"in\" or \"matches\""
            } else {
                EXPECTED_OP
            }))
        }
    }
}

/// The lead must be a selector for every operator but `in`.
fn need_selector(c: &Cursor<'_>, lead: Lead, after: usize) -> Result<Selector, FilterError> {
    match lead {
        Lead::Selector(s) => Ok(s),
        Lead::Value(_) => Err(c.error_at(
            after,
            "a string or number can only be followed by \"in\" or \"not in\" (a selector must \
             be on the left of other operators)",
        )),
    }
}

/// Reads the value after the operator and builds the match, compiling a `matches` pattern.
fn with_value(c: &mut Cursor<'_>, selector: Selector, op: MatchOp) -> Result<Match, FilterError> {
    let at = c.pos;
    let value = value(c)?;
    let regex = if matches!(op, MatchOp::Matches | MatchOp::NotMatches) {
        let re = RegexBuilder::new(&value)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| FilterError::Regex {
                at: Position::of(c.input, at),
                pattern: value.clone(),
                reason: e.to_string(),
            })?;
        Some(re)
    } else {
        None
    };
    Ok(Match {
        selector,
        op,
        value: Some(value),
        regex,
    })
}

/// A value: a bare selector (its dotted text), a number or a string literal.
fn value(c: &mut Cursor<'_>) -> Result<String, FilterError> {
    if c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        return Ok(selector_path(c)?.dotted());
    }
    if let Some(n) = c.number()? {
        return Ok(n.to_string());
    }
    if let Some(s) = c.string()? {
        return Ok(s);
    }
    Err(c.expected("a value (a quoted string, a number or a bare word)"))
}

/// What starts a match expression: a selector, or a value if it can only be one.
fn lead(c: &mut Cursor<'_>) -> Result<Lead, FilterError> {
    let start = c.pos;
    if let Some(sel) = lead_selector(c)? {
        // A quoted pointer before `in` is the string it spells (a value), not a selector.
        let quoted = c.input[start..].starts_with('"');
        let save = c.pos;
        let before_in = c.skip_ws()
            && (c.keyword("in") || (c.keyword("not") && c.skip_ws() && c.keyword("in")));
        c.pos = save;
        if !(quoted && before_in) {
            return Ok(Lead::Selector(sel));
        }
        c.pos = start;
    }
    if let Some(n) = c.number()? {
        return Ok(Lead::Value(n.to_string()));
    }
    if let Some(s) = c.string()? {
        return Ok(Lead::Value(s));
    }
    Err(c.expected("a selector, a value or \"(\""))
}

/// A selector (identifier path or quoted JSON pointer) if one starts here.
fn lead_selector(c: &mut Cursor<'_>) -> Result<Option<Selector>, FilterError> {
    if c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        return selector_path(c).map(Some);
    }
    Ok(json_pointer(c))
}

/// `Ident(.Ident | .digits | [ "key" ])*`.
fn selector_path(c: &mut Cursor<'_>) -> Result<Selector, FilterError> {
    let mut path = vec![c.identifier().unwrap_or_default().to_string()];
    loop {
        if c.peek() == Some(b'.') {
            c.pos += 1;
            if let Some(id) = c.identifier() {
                path.push(id.to_string());
                continue;
            }
            let start = c.pos;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.pos += 1;
            }
            if c.pos == start {
                return Err(c.expected("a field name or index after \".\""));
            }
            path.push(c.input[start..c.pos].to_string());
        } else if c.peek() == Some(b'[') {
            let open = c.pos;
            c.pos += 1;
            c.skip_ws();
            let Some(key) = c.string()? else {
                return Err(c.error_at(
                    open,
                    "rule \"index\": Invalid index (expected a quoted key)",
                ));
            };
            c.skip_ws();
            if !c.eat("]") {
                return Err(c.error_at(open, "rule \"index\": Unclosed index expression"));
            }
            path.push(key);
        } else {
            return Ok(Selector { path });
        }
    }
}

/// `"/seg/seg"` with segments of letters, digits and `-_.~:|` (`~0` is `~`, `~1` is `/`), or
/// `None` (position unchanged) when the quoted text here is not one.
fn json_pointer(c: &mut Cursor<'_>) -> Option<Selector> {
    let start = c.pos;
    if c.peek() != Some(b'"') {
        return None;
    }
    let rest = &c.input[start + 1..];
    let end = rest.find('"')?;
    let body = &rest[..end];
    if !(body.is_empty() || body.starts_with('/')) {
        return None;
    }
    let mut path = Vec::new();
    for seg in body.split('/').skip(1) {
        let ok = !seg.is_empty()
            && seg
                .chars()
                .all(|ch| ch.is_alphanumeric() || "-_.~:|".contains(ch));
        if !ok {
            return None;
        }
        path.push(decode_pointer_segment(seg)?);
    }
    c.pos = start + 1 + end + 1;
    Some(Selector { path })
}

/// RFC 6901 unescaping: `~1` is `/`, `~0` is `~`; any other `~` is invalid.
fn decode_pointer_segment(seg: &str) -> Option<String> {
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(ch) = chars.next() {
        if ch == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(ch);
        }
    }
    Some(out)
}
