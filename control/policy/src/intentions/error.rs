//! Why an intention was refused: one error type shared by write-time validation (`validate`),
//! L7 compilation (`matcher`) and the matcher that reports an uncompilable snapshot (`l7`).
//!
//! In a module of its own so the three depend on it and not on each other.

/// Why an intention was rejected. `field` is the JSON path of the offending field, in
/// Consul's spelling (`SourceName`, `Permissions[0].HTTP.PathExact`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentionError {
    #[error("{field} must be set")]
    Empty { field: &'static str },
    #[error("{field}: wildcard character '*' cannot be used with partial values (got {value:?})")]
    PartialWildcard { field: &'static str, value: String },
    #[error("{field}: exact value {value:?} cannot follow wildcard namespace")]
    ExactAfterWildcardNamespace { field: &'static str, value: String },
    #[error("Action must be omitted if Permissions are specified")]
    ActionWithPermissions,
    #[error("Action must be set to 'allow' or 'deny' (or Permissions given instead)")]
    MissingAction,
    #[error("Permissions cannot be specified on intentions with wildcarded destinations")]
    PermissionsOnWildcardDestination,
    #[error("SourceType must be set to 'consul' (got {value:?})")]
    SourceType { value: String },
    #[error("Description exceeds maximum length {max} (got {len})")]
    DescriptionTooLong { len: usize, max: usize },
    #[error("Meta exceeds maximum element count {max} (got {count})")]
    TooManyMeta { count: usize, max: usize },
    #[error("Meta key {key:?} exceeds maximum length {max}")]
    MetaKeyTooLong { key: String, max: usize },
    #[error("Meta value for key {key:?} exceeds maximum length {max}")]
    MetaValueTooLong { key: String, max: usize },
    #[error("Permissions[{index}].HTTP is required")]
    MissingHttp { index: usize },
    #[error("Permissions[{index}].HTTP should not be empty")]
    EmptyHttp { index: usize },
    #[error(
        "Permissions[{index}].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"
    )]
    ConflictingPaths { index: usize },
    #[error("Permissions[{index}].HTTP.{field} doesn't start with '/': {value:?}")]
    PathNotAbsolute {
        index: usize,
        field: &'static str,
        value: String,
    },
    #[error("Permissions[{index}].HTTP.Header[{header}] missing required Name field")]
    HeaderMissingName { index: usize, header: usize },
    #[error(
        "Permissions[{index}].HTTP.Header[{header}] should contain exactly one of Present, Exact, Prefix, Suffix, or Regex (got {count})"
    )]
    HeaderMatchers {
        index: usize,
        header: usize,
        count: usize,
    },
    #[error(
        "Permissions[{index}].HTTP.Methods contains an invalid method {method:?} (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE in upper case)"
    )]
    InvalidMethod { index: usize, method: String },
    #[error("Permissions[{index}].HTTP.Methods contains {method:?} more than once")]
    DuplicateMethod { index: usize, method: String },
    #[error("Permissions[{index}].HTTP.{field} is not a valid regular expression: {reason}")]
    InvalidRegex {
        index: usize,
        field: String,
        reason: String,
    },
    #[error(
        "Permissions[{index}].HTTP.Header[{header}].Name {name:?} is not a valid HTTP header name (pseudo-headers such as :authority are not supported)"
    )]
    InvalidHeaderName {
        index: usize,
        header: usize,
        name: String,
    },
}

impl IntentionError {
    /// Stable machine-readable code, for API error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            IntentionError::Empty { .. } => "empty_field",
            IntentionError::PartialWildcard { .. } => "partial_wildcard",
            IntentionError::ExactAfterWildcardNamespace { .. } => "exact_after_wildcard_namespace",
            IntentionError::ActionWithPermissions => "action_with_permissions",
            IntentionError::MissingAction => "missing_action",
            IntentionError::PermissionsOnWildcardDestination => {
                "permissions_on_wildcard_destination"
            }
            IntentionError::SourceType { .. } => "invalid_source_type",
            IntentionError::DescriptionTooLong { .. } => "description_too_long",
            IntentionError::TooManyMeta { .. } => "too_many_meta",
            IntentionError::MetaKeyTooLong { .. } => "meta_key_too_long",
            IntentionError::MetaValueTooLong { .. } => "meta_value_too_long",
            IntentionError::MissingHttp { .. } => "missing_http",
            IntentionError::EmptyHttp { .. } => "empty_http",
            IntentionError::ConflictingPaths { .. } => "conflicting_paths",
            IntentionError::PathNotAbsolute { .. } => "path_not_absolute",
            IntentionError::HeaderMissingName { .. } => "header_missing_name",
            IntentionError::HeaderMatchers { .. } => "header_matchers",
            IntentionError::InvalidMethod { .. } => "invalid_method",
            IntentionError::DuplicateMethod { .. } => "duplicate_method",
            IntentionError::InvalidRegex { .. } => "invalid_regex",
            IntentionError::InvalidHeaderName { .. } => "invalid_header_name",
        }
    }
}
