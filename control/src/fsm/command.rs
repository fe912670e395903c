//! The commands that go through the Raft log, and what applying one answers.
//!
//! Everything non-deterministic (new key pairs, cluster UUID, the current time) is decided by the
//! proposer and carried inside the command, so every server applies the same bytes to the same
//! state and reaches the same result.

use serde::{Deserialize, Serialize};

use super::secret::ServerSecret;
use crate::acl::{AclPolicy, AclRole, AclToken};
use crate::ca::StoredRoot;
use crate::config_entries::{ConfigEntry, ConfigKind};
use crate::model::{CaConfig, HealthCheck, HealthStatus, Index, Intention, Node, ServiceInstance};

/// A state change, as written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
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
    /// Several catalog writes to one node, applied in order as one entry, all or none (an
    /// agent's anti-entropy pass): each op is a `Register`, `Deregister` or `UpdateCheck` of
    /// `node`. One entry wakes each blocking query once, where one write per change would wake
    /// it for every trailing write of the pass.
    SyncNode {
        node: String,
        ops: Vec<Command>,
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
    IntentionUpsert {
        intention: Intention,
        replace: bool,
    },
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
    CaSetConfig {
        config: CaConfig,
    },
    /// Drop rotated-out roots whose every leaf has expired.
    CaPruneRoots {
        now_unix: i64,
    },
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
    /// The one-time ACL bootstrap: seeds the built-in `global-management` policy and the
    /// anonymous token, and stores `token` (the proposer generated its IDs) with `now` (RFC
    /// 3339) as its `CreateTime`. Refused once done (see `fsm::acl`).
    AclBootstrap {
        token: AclToken,
        now: String,
    },
    /// Create or replace the token with `token.AccessorID`. The proposer generated the IDs, set
    /// `CreateTime` and turned any `ExpirationTTL` into `ExpirationTime`.
    AclTokenSet {
        token: AclToken,
    },
    AclTokenDelete {
        accessor_id: String,
    },
    /// Create or replace the policy with `policy.ID` (the proposer generated a new one's ID).
    AclPolicySet {
        policy: AclPolicy,
    },
    AclPolicyDelete {
        id: String,
    },
    /// Create or replace the role with `role.ID` (the proposer generated a new one's ID).
    AclRoleSet {
        role: AclRole,
    },
    AclRoleDelete {
        id: String,
    },
    /// The servers' internal secret (see `fsm::secret`), generated by the first leader. Set
    /// once: ignored when the state already holds one.
    SetServerSecret {
        secret: ServerSecret,
    },
}

impl Command {
    /// Whether only the leader may build this command, from what it alone decides: a CA root
    /// and its (sealed) key, the time rotated-out roots are pruned at, the servers' secret, or
    /// a CA configuration carrying a supplied root (which the leader must validate and
    /// cross-sign first). Such a command is never accepted in another server's forwarded write
    /// (`Cluster.Write`) and never forwarded: a follower forwards the *request* instead
    /// (`Cluster.RotateCa` with the configuration) and the leader builds the command itself.
    pub fn leader_only(&self) -> bool {
        match self {
            Command::CaInitialize { .. }
            | Command::CaRotate { .. }
            | Command::CaPruneRoots { .. }
            | Command::SetServerSecret { .. } => true,
            Command::CaSetConfig { config } => super::ca_config::has_root_material(config),
            _ => false,
        }
    }

    /// The command's name, as its `Op` tag in the log.
    pub fn op(&self) -> &'static str {
        self.into()
    }
}

/// Errors a command can meet on apply; deterministic, so every server reports the same. The
/// kind decides the status (404, 409, 400); each carries the names its message quotes. The
/// messages are Consul's where Consul has one (API clients show them as they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "Code", content = "Message")]
pub enum ApplyError {
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Invalid(#[from] Invalid),
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

/// What a command refers to that the state does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NotFound {
    #[error("Unknown node {node:?}")]
    Node { node: String },
    #[error("Unknown service ID {service_id:?} on node {node:?}")]
    Service { node: String, service_id: String },
    #[error("Unknown check ID {check_id:?} on node {node:?}")]
    Check { node: String, check_id: String },
    #[error("Intention with source {source_name:?} and destination {destination_name:?} not found")]
    Intention {
        source_name: String,
        destination_name: String,
    },
    #[error("Cannot find token to delete")]
    AclToken { accessor_id: String },
    #[error("Cannot find policy to delete")]
    AclPolicy { id: String },
    #[error("Cannot find role to delete")]
    AclRole { id: String },
}

/// A command that contradicts the state it meets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Conflict {
    #[error(
        "Intention with source {source_name:?} and destination {destination_name:?} already exists"
    )]
    IntentionExists {
        source_name: String,
        destination_name: String,
    },
    #[error("active root changed during rotation (expected {expected}, found {found})")]
    RootChanged { expected: String, found: String },
    #[error("new root is already present")]
    RootPresent,
    /// Consul's `ACLBootstrapNotAllowedErr`, with the index the bootstrap happened at.
    #[error("ACL bootstrap no longer allowed (reset index: {reset_index})")]
    AclBootstrapped { reset_index: Index },
    /// `?cas=` did not match; `have` is `None` when the entry is absent.
    #[error(
        "check-and-set failed for {kind} {name:?}: cas index {want}, current ModifyIndex {}",
        .have.map_or_else(|| "none (entry absent)".to_string(), |h| h.to_string())
    )]
    Cas {
        kind: ConfigKind,
        name: String,
        want: Index,
        have: Option<Index>,
    },
}

/// A command the state machine refuses whatever the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Invalid {
    /// The intention failed `intentions::validate`; `reason` is its message.
    #[error("{reason}")]
    Intention { reason: String },
    /// The entry failed `config_entries::validate`; `reason` is its message.
    #[error("{reason}")]
    ConfigEntry { reason: String },
    #[error("CA is not initialized")]
    CaNotInitialized,
    #[error("cas index 0 is not valid for a delete")]
    CasZeroOnDelete,
    #[error("Must provide node")]
    MissingNode,
    #[error("Must provide service name")]
    MissingServiceName,
    #[error("Proxy.DestinationServiceName must be set for a connect-proxy")]
    ProxyWithoutDestination,
    #[error("Must provide CheckID")]
    MissingCheckId,
    /// A `SyncNode` op that is not a catalog write to the synced node.
    #[error("a node sync holds only catalog writes to its node {node:?} (got {op} for {other:?})")]
    SyncOp {
        node: String,
        op: String,
        other: String,
    },
    #[error("Check {check_id:?} refers to unknown service {service_id:?}")]
    CheckForUnknownService {
        check_id: String,
        service_id: String,
    },
    /// The token, policy or role failed `acl::validate_*`; `reason` is its message (it names
    /// the field, and for rules the line).
    #[error("{reason}")]
    Acl { reason: String },
    /// A server-generated field the proposer left empty (`AccessorID`, `SecretID`, `ID`).
    #[error("{field} must be set by the server")]
    AclMissingId { field: String },
    /// `ExpirationTTL` reached the state machine instead of being turned into a time.
    #[error("ExpirationTTL must be turned into ExpirationTime before it is stored")]
    AclUnconvertedTtl,
    #[error("Invalid Policy: A Policy with Name {name:?} already exists")]
    AclPolicyNameTaken { name: String },
    #[error("Invalid Role: A Role with Name {name:?} already exists")]
    AclRoleNameTaken { name: String },
    #[error("Invalid Token: SecretID is already in use")]
    AclSecretInUse,
    #[error("Invalid Token: AccessorID is reserved for the anonymous token")]
    AclAccessorReserved,
    #[error("Changing a token's SecretID is not permitted")]
    AclSecretChange,
    #[error("Cannot change expiration time")]
    AclExpirationChange,
    #[error("No such ACL policy with ID {id:?}")]
    AclUnknownPolicyId { id: String },
    #[error("No such ACL policy with name {name:?}")]
    AclUnknownPolicyName { name: String },
    #[error("No such ACL role with ID {id:?}")]
    AclUnknownRoleId { id: String },
    #[error("No such ACL role with name {name:?}")]
    AclUnknownRoleName { name: String },
    /// The built-in `global-management` policy keeps its name and rules (`field`).
    #[error("Changing the {field} for the builtin global-management policy is not permitted")]
    GlobalManagementChange { field: String },
    #[error("Delete operation not permitted on the builtin global-management policy")]
    GlobalManagementDelete,
    #[error("Delete operation not permitted on the anonymous token")]
    AnonymousTokenDelete,
    /// The servers' internal secret must be 64 lowercase hex digits (the value is not quoted).
    #[error("the server secret must be 64 lowercase hex digits")]
    ServerSecret,
}

/// What applying a command answers: the log index it was applied at and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApplyResult {
    pub index: Index,
    pub error: Option<ApplyError>,
}

impl From<super::secret::MalformedSecret> for Invalid {
    fn from(_: super::secret::MalformedSecret) -> Self {
        Invalid::ServerSecret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed variants print what the preformatted strings did: API clients see the same
    /// messages.
    #[test]
    fn messages_read_as_before() {
        let cases: [(ApplyError, &str); 5] = [
            (
                NotFound::Check {
                    node: "n1".into(),
                    check_id: "c1".into(),
                }
                .into(),
                r#"Unknown check ID "c1" on node "n1""#,
            ),
            (
                Conflict::IntentionExists {
                    source_name: "web".into(),
                    destination_name: "db".into(),
                }
                .into(),
                r#"Intention with source "web" and destination "db" already exists"#,
            ),
            (
                Conflict::Cas {
                    kind: ConfigKind::ServiceDefaults,
                    name: "web".into(),
                    want: 3,
                    have: None,
                }
                .into(),
                r#"check-and-set failed for service-defaults "web": cas index 3, current ModifyIndex none (entry absent)"#,
            ),
            (
                Conflict::Cas {
                    kind: ConfigKind::ServiceDefaults,
                    name: "web".into(),
                    want: 3,
                    have: Some(7),
                }
                .into(),
                r#"check-and-set failed for service-defaults "web": cas index 3, current ModifyIndex 7"#,
            ),
            (
                Invalid::CheckForUnknownService {
                    check_id: "c1".into(),
                    service_id: "s1".into(),
                }
                .into(),
                r#"Check "c1" refers to unknown service "s1""#,
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    /// Commands carrying roots, keys or the leader's decisions are the leader's alone; the
    /// catalog, intentions, ACLs and a plain CA configuration may be forwarded.
    #[test]
    fn only_the_leader_builds_ca_and_secret_commands() {
        use crate::model::CaConfig;
        let root = crate::ca::CaProvider::generate_root(
            &crate::ca::BuiltinProvider,
            "11111111-2222-3333-4444-555555555555.consul",
            1,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let config = |keys: &[&str]| CaConfig {
            provider: "consul".into(),
            config: keys
                .iter()
                .map(|k| (k.to_string(), serde_json::Value::from("x")))
                .collect(),
            create_index: 0,
            modify_index: 0,
        };
        let leader_only = [
            Command::CaInitialize {
                cluster_id: "c".into(),
                root: Box::new(root.clone()),
                config: config(&[]),
            },
            Command::CaRotate {
                expected_active: "a".into(),
                new_root: Box::new(root),
                cross_signed_pem: String::new(),
                config: None,
                now_unix: 0,
            },
            Command::CaPruneRoots { now_unix: i64::MAX },
            Command::SetServerSecret {
                secret: ServerSecret::new("ab".repeat(32)).unwrap(),
            },
            Command::CaSetConfig {
                config: config(&["RootCert"]),
            },
            Command::CaSetConfig {
                config: config(&["PrivateKey", "LeafCertTTL"]),
            },
        ];
        for c in &leader_only {
            assert!(c.leader_only(), "{}", c.op());
        }
        let forwardable = [
            Command::CaSetConfig {
                config: config(&["LeafCertTTL"]),
            },
            Command::AclTokenDelete {
                accessor_id: "x".into(),
            },
            Command::Deregister {
                node: "n".into(),
                service_id: None,
                check_id: None,
            },
        ];
        for c in &forwardable {
            assert!(!c.leader_only(), "{}", c.op());
        }
        assert_eq!(leader_only[1].op(), "CaRotate");
    }

    /// A forwarded write's result crosses servers as JSON; the typed error survives the trip.
    #[test]
    fn result_round_trips_as_json() {
        let r = ApplyResult {
            index: 4,
            error: Some(
                Conflict::RootChanged {
                    expected: "a".into(),
                    found: "b".into(),
                }
                .into(),
            ),
        };
        let back: ApplyResult = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
