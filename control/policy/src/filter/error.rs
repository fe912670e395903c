//! The filter's errors, worded as Consul's (go-bexpr's) so a client that greps for them still
//! finds them: a syntax error carries `line:col (offset)` where the parser stopped.

/// Where in the expression: 1-based line and column (in characters, as go-bexpr counts) and the
/// 0-based byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// 0-based byte offset.
    pub offset: usize,
}

impl Position {
    /// The position of byte `offset` in `input`.
    pub fn of(input: &str, offset: usize) -> Self {
        let before = input.get(..offset).unwrap_or(input);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
            offset,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({})", self.line, self.col, self.offset)
    }
}

/// Why an expression was refused or could not be applied to a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression does not parse; `message` says what was expected there.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Position,
        /// What it found and what it expected.
        message: String,
    },
    /// Parentheses and `not` nest deeper than the parser allows.
    #[error("{at}: expression nests parentheses and \"not\" more than {max} deep")]
    TooDeep {
        /// Where the limit was passed.
        at: Position,
        /// The limit.
        max: usize,
    },
    /// A `matches` pattern is not a valid regular expression.
    #[error("{at}: Failed to compile regular expression {pattern:?}: {reason}")]
    Regex {
        /// Where the pattern starts.
        at: Position,
        /// The pattern as given.
        pattern: String,
        /// The regex engine's reason.
        reason: String,
    },
    /// The selector's first field is not one of the rows' fields.
    #[error("Selector {selector:?} is not valid (valid selectors start with one of: {valid})")]
    InvalidSelector {
        /// The selector's first field.
        selector: String,
        /// The rows' fields, comma separated.
        valid: String,
    },
    /// The operator cannot be applied to what the selector found in a row (e.g. `==` on a list).
    #[error("Failed to apply filter to selector {selector:?}: {reason}")]
    Evaluate {
        /// The selector as written.
        selector: String,
        /// What did not fit.
        reason: String,
    },
}

impl FilterError {
    /// True for the errors found when creating the filter (what Consul reports as "Failed to
    /// create boolean expression evaluator"), false for one found applying it to a row.
    pub fn is_creation(&self) -> bool {
        !matches!(self, Self::Evaluate { .. })
    }
}
