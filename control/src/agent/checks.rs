//! Health checks the client agent runs for its local services, as Consul's agent does.
//!
//! A check arrives as a [`CheckDefinition`] in Consul's JSON shape (from `/v1/agent/check/register`
//! or the `Check`/`Checks` block of a service definition). Consul clients send many fields we do
//! not act on, so unknown fields are accepted and ignored; what we cannot honour (a script check,
//! an `https://` URL, two kinds at once) is rejected by [`CheckDefinition::validate`] with an error
//! naming the field, instead of registering a check that silently never runs.
//!
//! A [`ValidatedCheck`] is then run by a [`CheckRunner`]: one tokio task per check that probes
//! (TCP connect, HTTP request) every `Interval`, or waits for TTL updates, and reports on an
//! `mpsc` channel only when the status or output changes. The agent's anti-entropy sync pushes
//! those changes to the catalog, so reporting only changes keeps a steady-state check from
//! producing catalog writes. The task lives exactly as long as its [`CheckHandle`].
//!
//! Where this follows Consul and where it deliberately does not is listed on
//! [`CheckDefinition`] and [`RunnerConfig`].

mod definition;
mod runner;

pub use definition::{
    CheckDefinition, CheckKind, DurationField, HttpCheck, MIN_DEREGISTER_CRITICAL_SERVICE_AFTER,
    TcpCheck, ValidatedCheck,
};
pub use runner::{CheckHandle, CheckRunner, Resume, RunnerConfig, spawn};

use crate::duration::DurationError;
use crate::model::HealthStatus;

/// Default probe timeout for TCP and HTTP checks (Consul: `Timeout` defaults to 10s).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Consul's minimum check interval (`checks.MinInterval`, 1s); shorter intervals are raised to it.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How much probe output (HTTP body, TTL note) a check keeps: Consul's default `OutputMaxSize`.
pub const OUTPUT_MAX_SIZE: usize = 4 * 1024;

/// A change in a check's state, sent by the runner to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUpdate {
    pub check_id: String,
    pub status: HealthStatus,
    pub output: String,
}

/// Why a check definition was rejected or a check operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("check definition needs exactly one of TTL, TCP or HTTP, but none was given")]
    NoKind,
    #[error("check definition needs exactly one of TTL, TCP or HTTP, but got {}", kinds.join(" and "))]
    MultipleKinds { kinds: Vec<&'static str> },
    #[error("{field} checks are not supported by this agent (supported: TTL, TCP, HTTP)")]
    UnsupportedKind { field: &'static str },
    #[error("Interval is required for {kind} checks")]
    MissingInterval { kind: &'static str },
    #[error("Interval and TTL cannot both be specified")]
    IntervalWithTtl,
    #[error("invalid {field}: {source}")]
    InvalidDuration {
        field: &'static str,
        #[source]
        source: DurationError,
    },
    #[error("invalid Status {value:?}: expected \"passing\", \"warning\" or \"critical\"")]
    InvalidStatus { value: String },
    #[error("{field} must not be negative (got {value})")]
    NegativeCounter { field: &'static str, value: i64 },
    #[error("invalid TCP address {value:?}: {reason}")]
    InvalidTcpAddress { value: String, reason: &'static str },
    #[error("invalid HTTP URL {value:?}: {reason}")]
    InvalidUrl { value: String, reason: String },
    #[error(
        "HTTP check URL {url:?} uses https, which this agent does not support (only http:// URLs; \
         TLSSkipVerify is accepted but has no effect)"
    )]
    HttpsUnsupported { url: String },
    #[error("invalid Method {value:?}: not an HTTP method token")]
    InvalidMethod { value: String },
    #[error("invalid Header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("CheckID {check_id:?} and ID {id:?} disagree; give one of them")]
    ConflictingIds { check_id: String, id: String },
    #[error("check {check_id:?} is not a TTL check; only TTL checks take pass/warn/fail updates")]
    NotTtl { check_id: String },
    #[error("check {check_id:?} is no longer running")]
    Stopped { check_id: String },
}
