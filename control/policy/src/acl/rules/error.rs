//! Why a rule text was refused. Every variant names the field (as a path such as
//! `service "db".policy`) and the line it is on, so an operator can find it.

pub use crate::spanned::Line;
use crate::spanned::SyntaxError;

/// Why a rule text could not be turned into [`Rules`](super::Rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RulesError {
    /// The HCL text is not valid HCL.
    #[error("invalid HCL at line {line}, column {column}: {message}")]
    #[strum(serialize = "invalid_hcl")]
    Hcl {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The JSON text is not valid JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    #[strum(serialize = "invalid_json")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A resource name that neither this mesh nor Consul knows.
    #[error("unknown ACL resource {resource:?}{line}")]
    UnknownResource {
        /// The resource as written.
        resource: String,
        /// Where it is.
        line: Line,
    },
    /// A Consul resource this mesh does not enforce (`key`, `session`, `event`, ...).
    #[error(
        "ACL resource {resource:?} is not supported by this mesh (supported: service, service_prefix, node, node_prefix, agent, agent_prefix, operator, acl, mesh){line}"
    )]
    UnsupportedResource {
        /// The resource as written.
        resource: String,
        /// Where it is.
        line: Line,
    },
    /// A field a rule of this resource does not have.
    #[error("unknown field {field}{line}")]
    UnknownField {
        /// Path of the field, e.g. `service "db".polcy`.
        field: String,
        /// Where it is.
        line: Line,
    },
    /// An access level other than the ones the field accepts.
    #[error("invalid access level {value:?} for {field} (expected {expected}){line}")]
    #[strum(serialize = "invalid_access_level")]
    InvalidAccess {
        /// Path of the field, e.g. `service "db".policy` or `operator`.
        field: String,
        /// The value as written.
        value: String,
        /// What the field accepts.
        expected: &'static str,
        /// Where it is.
        line: Line,
    },
    /// A rule without its required `policy`.
    #[error("missing field {field}{line}")]
    MissingField {
        /// Path of the missing field, e.g. `node "n1".policy`.
        field: String,
        /// Where the rule is.
        line: Line,
    },
    /// The same segment, field or scalar given twice.
    #[error("{field} is given more than once{line}")]
    Duplicate {
        /// Path of the repeated item, e.g. `service "db"` or `operator`.
        field: String,
        /// Where the repetition is.
        line: Line,
    },
    /// A value of the wrong shape (a number where a string belongs, a string where a block does).
    #[error("{field} must be {expected}, found {found}{line}")]
    WrongType {
        /// Path of the value.
        field: String,
        /// What belongs there.
        expected: &'static str,
        /// What was found.
        found: &'static str,
        /// Where it is.
        line: Line,
    },
}

impl RulesError {
    /// Stable machine-readable code, for API error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        self.into()
    }

    /// The line the error is on, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RulesError::Hcl { line, .. } | RulesError::Json { line, .. } => Some(*line),
            RulesError::UnknownResource { line, .. }
            | RulesError::UnsupportedResource { line, .. }
            | RulesError::UnknownField { line, .. }
            | RulesError::InvalidAccess { line, .. }
            | RulesError::MissingField { line, .. }
            | RulesError::Duplicate { line, .. }
            | RulesError::WrongType { line, .. } => line.0,
        }
    }
}

impl From<SyntaxError> for RulesError {
    fn from(e: SyntaxError) -> Self {
        let SyntaxError {
            syntax,
            line,
            column,
            message,
        } = e;
        if syntax == "HCL" {
            RulesError::Hcl {
                line,
                column,
                message,
            }
        } else {
            RulesError::Json {
                line,
                column,
                message,
            }
        }
    }
}
