//! `State` and its `apply`: the data every server holds, and the one dispatcher that hands
//! each command to its table's module (`catalog`, `intentions`, `ca`, `config_entries`,
//! `acl`), the only code that changes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acl_state::AclState;
use super::command::{ApplyError, ApplyResult, Command, Invalid};
use super::indexes::{Derived, Moved};
use super::secret::ServerSecret;
use crate::ca::StoredRoot;
use crate::config_entries::{IntentionEntryMeta, MeshConfig, ServiceDefaults};
use crate::intentions::DefaultPolicy;
use crate::model::{
    CaConfig, CaRoot, CaRootList, HealthCheck, Index, Intention, Node, ServiceInstance,
};

/// The CA's part of the state. Private keys live here, as with Consul's built-in provider; they
/// are never part of an API answer (`CaState::root_list` strips them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    pub cluster_id: String,
    pub trust_domain: String,
    /// Oldest first; exactly one is active once initialized.
    pub roots: Vec<StoredRoot>,
    pub config: Option<CaConfig>,
    /// Root ID → unix time after which every leaf it signed has expired.
    pub prune_after: BTreeMap<String, i64>,
    /// Next `SerialNumber` for a new root.
    pub next_serial: u64,
}

impl CaState {
    pub fn active(&self) -> Option<&StoredRoot> {
        self.roots.iter().find(|r| r.root.active)
    }

    /// The roots as published: public parts only.
    pub fn root_list(&self) -> CaRootList {
        CaRootList {
            active_root_id: self.active().map(|r| r.root.id.clone()).unwrap_or_default(),
            trust_domain: self.trust_domain.clone(),
            roots: self.roots.iter().map(|r| r.root.clone()).collect(),
        }
    }

    pub fn public_roots(&self) -> Vec<CaRoot> {
        self.roots.iter().map(|r| r.root.clone()).collect()
    }
}

/// Modify index of each table, for blocking queries and watches ("has anything I care about
/// changed since index N").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIndexes {
    pub nodes: Index,
    pub services: Index,
    pub checks: Index,
    pub intentions: Index,
    pub roots: Index,
    pub ca_config: Index,
    pub config: Index,
    /// `service-defaults` entries (`service-intentions` live in `intentions`).
    #[serde(default)]
    pub config_entries: Index,
    /// ACL tokens, policies and roles (one index for all three, as their API reads them
    /// together to resolve links). `default` so snapshots from before ACLs load.
    #[serde(default)]
    pub acl: Index,
}

/// Everything the servers replicate.
///
/// `remote = "Self"`: the derived `Serialize`/`Deserialize` become inherent functions, and the
/// trait impls below wrap them so a deserialized state rebuilds its [`Derived`] lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct State {
    pub nodes: BTreeMap<String, Node>,
    /// node → service ID → instance.
    pub services: BTreeMap<String, BTreeMap<String, ServiceInstance>>,
    /// node → check ID → check.
    pub checks: BTreeMap<String, BTreeMap<String, HealthCheck>>,
    /// Keyed by the intention's ID (derived from its source and destination).
    pub intentions: BTreeMap<String, Intention>,
    pub ca: CaState,
    pub default_policy: DefaultPolicy,
    /// `service-defaults` config entries by service name.
    #[serde(default)]
    pub service_defaults: BTreeMap<String, ServiceDefaults>,
    /// Entry-level indexes and `Meta` of `service-intentions` entries, keyed `ns/name` of the
    /// destination; the entry's sources are the intentions of that destination.
    #[serde(default)]
    pub intention_entries: BTreeMap<String, IntentionEntryMeta>,
    /// The `mesh` config entry, when written.
    #[serde(default)]
    pub mesh: Option<MeshConfig>,
    /// ACL tokens, policies and roles. Left out of the encoding while empty, so a cluster that
    /// never used ACLs keeps its snapshot bytes and digest.
    #[serde(default, skip_serializing_if = "AclState::is_empty")]
    pub acl: AclState,
    /// The servers' internal secret, once the first leader wrote it. Left out of the encoding
    /// while unset (older snapshots load), and out of [`State::digest`] always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret: Option<ServerSecret>,
    pub tables: TableIndexes,
    /// Index of the last applied command.
    pub last_index: Index,
    /// Lookups derived from the tables above (`indexes`): never encoded, rebuilt on decode.
    #[serde(skip)]
    pub(super) derived: Derived,
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        State::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = State::deserialize(deserializer)?;
        state.derived = state.derive();
        Ok(state)
    }
}

impl State {
    /// Applies `cmd` committed at log `index`. Deterministic: same state + same command gives
    /// the same state and result on every server. A rejected command changes nothing.
    pub fn apply(&mut self, index: Index, cmd: Command) -> ApplyResult {
        let error = self.apply_inner(index, cmd).err();
        self.last_index = self.last_index.max(index);
        ApplyResult { index, error }
    }

    /// Hands each command to its table's module (`catalog`, `intentions`, `ca`,
    /// `config_entries`, `acl`).
    pub(super) fn apply_inner(&mut self, index: Index, cmd: Command) -> Result<(), ApplyError> {
        match cmd {
            Command::Register {
                node,
                service,
                checks,
            } => self.register(index, node, service, checks),
            Command::Deregister {
                node,
                service_id,
                check_id,
            } => self.deregister(index, &node, service_id, check_id),
            Command::UpdateCheck {
                node,
                check_id,
                status,
                output,
            } => self.update_check(index, node, check_id, status, output),
            Command::SyncNode { node, ops } => self.sync_node(index, node, ops),
            Command::SetNodeHealth {
                node,
                status,
                output,
            } => self.set_node_health(index, node, status, output),
            Command::IntentionUpsert { intention, replace } => {
                self.intention_upsert(index, intention, replace)
            }
            Command::IntentionDelete {
                source_ns,
                source,
                destination_ns,
                destination,
            } => self.intention_delete(index, source_ns, source, destination_ns, destination),
            Command::SetDefaultPolicy { policy } => self.set_default_policy(index, policy),
            Command::CaInitialize {
                cluster_id,
                root,
                config,
            } => self.ca_initialize(index, cluster_id, root, config),
            Command::CaRotate {
                expected_active,
                new_root,
                cross_signed_pem,
                config,
                now_unix,
            } => self.ca_rotate(
                index,
                expected_active,
                new_root,
                cross_signed_pem,
                config,
                now_unix,
            ),
            Command::CaSetConfig { config } => {
                self.set_ca_config(index, config);
                Ok(())
            }
            Command::CaPruneRoots { now_unix } => self.ca_prune_roots(index, now_unix),
            Command::ConfigEntrySet { entry, cas } => self.config_entry_set(index, entry, cas),
            Command::ConfigEntryDelete { kind, name, cas } => {
                self.config_entry_delete(index, kind, &name, cas)
            }
            Command::AclBootstrap { token, now } => self.acl_bootstrap(index, token, now),
            Command::AclTokenSet { token } => self.acl_token_set(index, token),
            Command::AclTokenDelete { accessor_id } => self.acl_token_delete(index, &accessor_id),
            Command::AclPolicySet { policy } => self.acl_policy_set(index, policy),
            Command::AclPolicyDelete { id } => self.acl_policy_delete(index, &id),
            Command::AclRoleSet { role } => self.acl_role_set(index, role),
            Command::AclRoleDelete { id } => self.acl_role_delete(index, &id),
            Command::SetServerSecret { secret } => self.set_server_secret(index, secret),
        }
    }

    /// Stores `secret` unless one is already set (then nothing changes). A secret that is not
    /// 64 lowercase hex digits is refused (deterministically, so on every server).
    fn set_server_secret(&mut self, _index: Index, secret: ServerSecret) -> Result<(), ApplyError> {
        if self.server_secret.is_some() {
            return Ok(());
        }
        let secret = ServerSecret::new(secret.expose().to_string()).map_err(Invalid::from)?;
        self.server_secret = Some(secret);
        Ok(())
    }

    /// A stable digest of the whole state but the servers' internal secret, to compare servers
    /// (FNV-1a over canonical JSON; every map is a `BTreeMap`, so the encoding is canonical).
    /// The digest is served over HTTP and FNV is no one-way function, so the secret stays out.
    pub fn digest(&self) -> String {
        let json = if self.server_secret.is_some() {
            let mut without = self.clone();
            without.server_secret = None;
            serde_json::to_vec(&without)
        } else {
            serde_json::to_vec(self)
        }
        .expect("state serializes");
        format!("{:016x}", crate::hash::fnv1a64(&json))
    }
}

impl State {
    /// The lookups of `fsm::indexes`, rebuilt from the tables (after a snapshot is
    /// deserialized; the tests compare it with the incrementally kept ones).
    pub(super) fn derive(&self) -> Derived {
        Derived::build(
            self.health_index(),
            self.tables.intentions,
            self.services.values().flat_map(|m| m.values()),
            self.checks.values().flat_map(|m| m.values()),
            self.intentions.values(),
        )
    }

    /// Service names whose [`State::service_index`] moved after `after` (watch fan-out).
    pub fn services_moved_since(&self, after: Index) -> Moved {
        self.derived.services.moved_since(after)
    }

    /// Intention destination names whose index moved after `after` (`*` among them: every
    /// destination's [`State::intentions_index_for`] moved).
    pub fn destinations_moved_since(&self, after: Index) -> Moved {
        self.derived.destinations.moved_since(after)
    }
}
