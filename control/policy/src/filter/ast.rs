//! The parsed expression, and its printed form: [`Expr`]'s `Display` writes an expression that
//! parses back to the same tree (values double-quoted, parentheses where the tree needs them),
//! which the fuzz target checks.

use std::fmt;

/// A boolean expression over one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// True when any operand is (`a or b or c`, left to right, stops at the first true).
    Or(Vec<Expr>),
    /// True when every operand is (stops at the first false).
    And(Vec<Expr>),
    /// `not x`.
    Not(Box<Expr>),
    /// A selector matched against a value.
    Match(Match),
}

/// `selector OP value`, `value in selector`, or `selector is [not] empty`.
#[derive(Debug, Clone)]
pub struct Match {
    /// What the match reads from the row.
    pub selector: Selector,
    /// How it compares.
    pub op: MatchOp,
    /// The value as written (`None` for `is [not] empty`), coerced per row to the selected type.
    pub value: Option<String>,
    /// The compiled pattern of `matches` / `not matches`.
    pub(super) regex: Option<regex::Regex>,
}

impl PartialEq for Match {
    fn eq(&self, other: &Self) -> bool {
        // The regex is compiled from `value`, so comparing the value compares it.
        self.selector == other.selector && self.op == other.op && self.value == other.value
    }
}

/// The match operators. `contains` is `in` with its operands swapped, as in go-bexpr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `value in selector` / `selector contains value`
    In,
    /// `value not in selector` / `selector not contains value`
    NotIn,
    /// `is empty`
    IsEmpty,
    /// `is not empty`
    IsNotEmpty,
    /// `matches` (a regular expression, unanchored)
    Matches,
    /// `not matches`
    NotMatches,
}

impl MatchOp {
    /// The answer when the selected map key (or field) is absent: nothing equals, contains or
    /// matches a missing value, and a missing value is empty (go-bexpr's
    /// `NotPresentDisposition`).
    pub fn when_absent(self) -> bool {
        matches!(
            self,
            Self::NotEqual | Self::NotIn | Self::IsEmpty | Self::NotMatches
        )
    }

    /// The operator this one negates, if it is a negation.
    pub(super) fn positive(self) -> (Self, bool) {
        match self {
            Self::NotEqual => (Self::Equal, true),
            Self::NotIn => (Self::In, true),
            Self::IsNotEmpty => (Self::IsEmpty, true),
            Self::NotMatches => (Self::Matches, true),
            other => (other, false),
        }
    }

    /// go-bexpr's name for it, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Equal => "Equal",
            Self::NotEqual => "Not Equal",
            Self::In => "In",
            Self::NotIn => "Not In",
            Self::IsEmpty => "Is Empty",
            Self::IsNotEmpty => "Is Not Empty",
            Self::Matches => "Matches",
            Self::NotMatches => "Not Matches",
        }
    }
}

/// A path into the row: `Service.Tags`, `Node.Meta["rack id"]`, `Checks.0.Status`, or a
/// quoted JSON pointer `"/Service/Meta/env"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The field names and map keys, in order.
    pub path: Vec<String>,
}

impl Selector {
    /// The path joined with dots, as go-bexpr prints a selector (and uses a bare-word value).
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// A path segment that can be written bare after a dot (else it is written `["..."]`).
fn is_bare(segment: &str, first: bool) -> bool {
    let mut bytes = segment.bytes();
    let lead = bytes.next();
    let lead_ok = lead.is_some_and(|b| b.is_ascii_alphabetic())
        || (!first
            && lead.is_some_and(|b| b.is_ascii_digit())
            && segment.bytes().all(|b| b.is_ascii_digit()));
    lead_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/')
}

/// Writes `s` as a Go double-quoted literal that unquotes back to `s` and holds no `"`.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\x22")?,
            '\\' => f.write_str("\\\\")?,
            c if (c as u32) < 0x20 || c == '\x7f' => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let printable_first = self.path.first().is_some_and(|s| is_bare(s, true));
        if !printable_first {
            // Only a JSON pointer can start with something else; print it as one when it can
            // be, else (an empty path) as the empty pointer.
            f.write_str("\"")?;
            for seg in &self.path {
                write!(f, "/{}", seg.replace('~', "~0").replace('/', "~1"))?;
            }
            return f.write_str("\"");
        }
        for (i, seg) in self.path.iter().enumerate() {
            if i == 0 {
                f.write_str(seg)?;
            } else if is_bare(seg, false) {
                write!(f, ".{seg}")?;
            } else {
                f.write_str("[")?;
                write_quoted(f, seg)?;
                f.write_str("]")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value =
            |f: &mut fmt::Formatter<'_>| write_quoted(f, self.value.as_deref().unwrap_or(""));
        match self.op {
            MatchOp::In | MatchOp::NotIn => {
                value(f)?;
                let op = if self.op == MatchOp::In {
                    "in"
                } else {
                    "not in"
                };
                write!(f, " {op} {}", self.selector)
            }
            MatchOp::IsEmpty => write!(f, "{} is empty", self.selector),
            MatchOp::IsNotEmpty => write!(f, "{} is not empty", self.selector),
            op => {
                let word = match op {
                    MatchOp::Equal => "==",
                    MatchOp::NotEqual => "!=",
                    MatchOp::Matches => "matches",
                    _ => "not matches",
                };
                write!(f, "{} {word} ", self.selector)?;
                value(f)
            }
        }
    }
}

impl fmt::Display for Expr {
    /// Parenthesizes only where the tree needs it (an `or` inside `and` or `not`, an `and`
    /// inside `and` or `not`): those parentheses were in the input, so printing never nests
    /// deeper than what was parsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let child = |f: &mut fmt::Formatter<'_>, e: &Expr, bare_and: bool| match e {
            Expr::Or(_) => write!(f, "({e})"),
            Expr::And(_) if !bare_and => write!(f, "({e})"),
            _ => e.fmt(f),
        };
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr], word: &str, bare_and: bool| {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                child(f, e, bare_and)?;
            }
            Ok(())
        };
        match self {
            Self::Or(items) => list(f, items, "or", true),
            Self::And(items) => list(f, items, "and", false),
            Self::Not(e) => {
                f.write_str("not ")?;
                child(f, e, false)
            }
            Self::Match(m) => m.fmt(f),
        }
    }
}
