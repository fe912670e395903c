//! Static mode's errors: each names the file or the field at fault, so one log line tells
//! the operator what to fix. Every piece of static mode returns [`StaticConfigError`].

use std::path::PathBuf;

use crate::identity::IdentityError;

/// Errors in a static config or the files it names. Each names the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: cannot read {path}")]
    ReadFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key: {path} is readable or writable by group or others (mode {mode:04o}); it must be 0600 or stricter"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{field}")]
    Material {
        field: &'static str,
        #[source]
        source: IdentityError,
    },
}

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> StaticConfigError {
    StaticConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The mesh's one error-chain formatter (shared with `meshd` and `meshctl`).
pub use mesh_policy::error_chain::error_chain;
