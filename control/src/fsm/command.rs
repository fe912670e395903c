//! The commands that go through the Raft log, and what applying one answers.
//!
//! Everything non-deterministic (new key pairs, cluster UUID, the current time) is decided by the
//! proposer and carried inside the command, so every server applies the same bytes to the same
//! state and reaches the same result.

use serde::{Deserialize, Serialize};

use crate::ca::StoredRoot;
use crate::config_entries::{ConfigEntry, ConfigKind};
use crate::model::{CaConfig, HealthCheck, HealthStatus, Index, Intention, Node, ServiceInstance};

/// A state change, as written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Op")]
#[allow(
    clippy::large_enum_variant,
    reason = "a command is built once and moved into the log; boxing buys nothing"
)]
pub enum Command {
    /// Upsert a node, optionally with one service instance and its checks (Consul's
    /// `/v1/catalog/register`).
    Register {
        node: Node,
        service: Option<ServiceInstance>,
        #[serde(default)]
        checks: Vec<HealthCheck>,
    },
    /// Remove a node (with everything on it), or only one service or check of it.
    Deregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
    /// Set the status of a check.
    UpdateCheck {
        node: String,
        check_id: String,
        status: HealthStatus,
        output: String,
    },
    /// Set every check of a node to `status` (used when an agent stops responding).
    SetNodeHealth {
        node: String,
        status: HealthStatus,
        output: String,
    },
    /// Create or update the intention for its source/destination pair. Without `replace` an
    /// existing intention for the pair is an error (Consul's `intention create` without
    /// `-replace`).
    IntentionUpsert { intention: Intention, replace: bool },
    IntentionDelete {
        source_ns: String,
        source: String,
        destination_ns: String,
        destination: String,
    },
    /// First root of the cluster. Ignored when a root exists (two leaders may race at bootstrap).
    CaInitialize {
        cluster_id: String,
        root: Box<StoredRoot>,
        config: CaConfig,
    },
    /// Switch the active root atomically. `expected_active` guards against two rotations racing.
    CaRotate {
        expected_active: String,
        new_root: Box<StoredRoot>,
        /// Cross-signed certificate of the new root by the old one.
        cross_signed_pem: String,
        config: Option<CaConfig>,
        now_unix: i64,
    },
    /// Update the CA configuration without a new root (e.g. only `LeafCertTTL` changed).
    CaSetConfig { config: CaConfig },
    /// Drop rotated-out roots whose every leaf has expired.
    CaPruneRoots { now_unix: i64 },
    /// Set the intention default policy.
    SetDefaultPolicy {
        policy: crate::intentions::DefaultPolicy,
    },
    /// Create or replace a config entry (`PUT /v1/config`). A `service-intentions` entry
    /// replaces every intention of its destination in this one command (see
    /// `crate::config_entries`). `cas`: `Some(0)` only creates, `Some(n)` only replaces an
    /// entry whose `ModifyIndex` is `n`; a failed check is a `Conflict`.
    ConfigEntrySet {
        entry: ConfigEntry,
        #[serde(default)]
        cas: Option<Index>,
    },
    /// Delete a config entry; a missing one is a no-op success (as in Consul) unless `cas` is
    /// given, which must match its `ModifyIndex`.
    ConfigEntryDelete {
        kind: ConfigKind,
        name: String,
        #[serde(default)]
        cas: Option<Index>,
    },
}

/// Errors a command can meet on apply; deterministic, so every server reports the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "Code", content = "Message")]
pub enum ApplyError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    /// The HTTP status Consul answers for this kind of error.
    pub fn http_status(&self) -> u16 {
        match self {
            ApplyError::NotFound(_) => 404,
            ApplyError::Conflict(_) => 409,
            ApplyError::Invalid(_) => 400,
        }
    }
}

/// What applying a command answers: the log index it was applied at and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApplyResult {
    pub index: Index,
    pub error: Option<ApplyError>,
}
