//! Why an intention was refused: one error type shared by write-time validation (`validate`),
//! L7 compilation (`matcher`) and the matcher that reports an uncompilable snapshot (`l7`).
//!
//! In a module of its own so the three depend on it and not on each other.

/// Why an intention was rejected. `field` is the JSON path of the offending field, in
/// Consul's spelling (`SourceName`, `Permissions[0].HTTP.PathExact`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum IntentionError {
    /// A required name or namespace is empty.
    #[error("{field} must be set")]
    #[strum(serialize = "empty_field")]
    Empty {
        /// The empty field (`SourceNS`, `SourceName`, `DestinationNS` or `DestinationName`).
        field: &'static str,
    },
    /// A name or namespace mixes `*` with other characters (`web-*`); only a lone `*` is allowed.
    #[error("{field}: wildcard character '*' cannot be used with partial values (got {value:?})")]
    PartialWildcard {
        /// JSON path of the offending field (`SourceName`, `DestinationNS`, ...).
        field: &'static str,
        /// The value as the caller wrote it.
        value: String,
    },
    /// An exact name after a wildcard namespace (`*/web`); Consul's precedence has no row for it.
    #[error("{field}: exact value {value:?} cannot follow wildcard namespace")]
    ExactAfterWildcardNamespace {
        /// The name field (`SourceName` or `DestinationName`).
        field: &'static str,
        /// The exact name as the caller wrote it.
        value: String,
    },
    /// Both `Action` and `Permissions` are set; an intention is either L4 or L7.
    #[error("Action must be omitted if Permissions are specified")]
    ActionWithPermissions,
    /// Neither `Action` nor `Permissions` is set.
    #[error("Action must be set to 'allow' or 'deny' (or Permissions given instead)")]
    MissingAction,
    /// `Permissions` on an intention whose destination is `*`, which Consul forbids.
    #[error("Permissions cannot be specified on intentions with wildcarded destinations")]
    PermissionsOnWildcardDestination,
    /// `SourceType` is not `consul`.
    #[error("SourceType must be set to 'consul' (got {value:?})")]
    #[strum(serialize = "invalid_source_type")]
    SourceType {
        /// The `SourceType` as the caller wrote it.
        value: String,
    },
    /// `Description` is longer than Consul accepts.
    #[error("Description exceeds maximum length {max} (got {len})")]
    DescriptionTooLong {
        /// Length of the given `Description`, in bytes.
        len: usize,
        /// The limit in bytes, [`MAX_DESCRIPTION_LEN`](super::MAX_DESCRIPTION_LEN).
        max: usize,
    },
    /// `Meta` has more pairs than Consul accepts.
    #[error("Meta exceeds maximum element count {max} (got {count})")]
    TooManyMeta {
        /// How many pairs the given `Meta` has.
        count: usize,
        /// The limit, [`MAX_META_PAIRS`](super::MAX_META_PAIRS).
        max: usize,
    },
    /// A `Meta` key is longer than Consul accepts.
    #[error("Meta key {key:?} exceeds maximum length {max}")]
    MetaKeyTooLong {
        /// The over-long key.
        key: String,
        /// The limit in bytes, [`MAX_META_KEY_LEN`](super::MAX_META_KEY_LEN).
        max: usize,
    },
    /// A `Meta` value is longer than Consul accepts.
    #[error("Meta value for key {key:?} exceeds maximum length {max}")]
    MetaValueTooLong {
        /// The key whose value is over-long.
        key: String,
        /// The limit in bytes, [`MAX_META_VALUE_LEN`](super::MAX_META_VALUE_LEN).
        max: usize,
    },
    /// A permission has no `HTTP` block.
    #[error("Permissions[{index}].HTTP is required")]
    MissingHttp {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
    },
    /// A permission's `HTTP` block sets no match at all.
    #[error("Permissions[{index}].HTTP should not be empty")]
    EmptyHttp {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
    },
    /// A permission's `HTTP` block sets more than one of `PathExact`, `PathPrefix`, `PathRegex`.
    #[error(
        "Permissions[{index}].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"
    )]
    ConflictingPaths {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
    },
    /// A permission's `PathExact` or `PathPrefix` does not start with `/`.
    #[error("Permissions[{index}].HTTP.{field} doesn't start with '/': {value:?}")]
    PathNotAbsolute {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// The path field (`PathExact` or `PathPrefix`).
        field: &'static str,
        /// The path as the caller wrote it.
        value: String,
    },
    /// A header match has no `Name`.
    #[error("Permissions[{index}].HTTP.Header[{header}] missing required Name field")]
    HeaderMissingName {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// Position of the header match in that permission's `HTTP.Header` (0-based).
        header: usize,
    },
    /// A header match sets none, or several, of `Present`, `Exact`, `Prefix`, `Suffix`, `Regex`.
    #[error(
        "Permissions[{index}].HTTP.Header[{header}] should contain exactly one of Present, Exact, Prefix, Suffix, or Regex (got {count})"
    )]
    HeaderMatchers {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// Position of the header match in that permission's `HTTP.Header` (0-based).
        header: usize,
        /// How many of the five matchers it sets.
        count: usize,
    },
    /// `Methods` names something that is not an upper-case HTTP method Consul accepts.
    #[error(
        "Permissions[{index}].HTTP.Methods contains an invalid method {method:?} (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE in upper case)"
    )]
    InvalidMethod {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// The method as the caller wrote it.
        method: String,
    },
    /// `Methods` names the same method twice.
    #[error("Permissions[{index}].HTTP.Methods contains {method:?} more than once")]
    DuplicateMethod {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// The repeated method.
        method: String,
    },
    /// A `PathRegex` or header `Regex` does not parse or is over the size limits.
    #[error("Permissions[{index}].HTTP.{field} is not a valid regular expression: {reason}")]
    InvalidRegex {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// Path of the pattern below `HTTP` (`PathRegex` or `Header[i].Regex`).
        field: String,
        /// Why the pattern was refused (the regex parser's message, or the limit exceeded).
        reason: String,
    },
    /// A header match's `Name` is not a valid HTTP header name (or is a pseudo-header).
    #[error(
        "Permissions[{index}].HTTP.Header[{header}].Name {name:?} is not a valid HTTP header name (pseudo-headers such as :authority are not supported)"
    )]
    InvalidHeaderName {
        /// Position of the permission in `Permissions` (0-based).
        index: usize,
        /// Position of the header match in that permission's `HTTP.Header` (0-based).
        header: usize,
        /// The `Name` as the caller wrote it.
        name: String,
    },
}

impl IntentionError {
    /// Stable machine-readable code, for API error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        self.into()
    }
}
