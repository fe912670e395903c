//! `State` and its `apply`: the data every server holds, and the only code that changes it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::command::{ApplyError, ApplyResult, Command, Conflict, Invalid, NotFound};
use crate::ca::StoredRoot;
use crate::config_entries::{
    self, ConfigEntry, ConfigKind, IntentionEntryMeta, MeshConfig, ServiceDefaults,
    ServiceIntentions,
};
use crate::intentions::{self, DefaultPolicy};
use crate::model::{
    CaConfig, CaRoot, CaRootList, HealthCheck, HealthStatus, Index, Intention, Node,
    ServiceInstance,
};

/// Default lifetime of a leaf certificate (Consul's `LeafCertTTL` default).
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(72 * 3600);

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

/// `LeafCertTTL` of a CA configuration, or the default.
pub fn leaf_ttl(config: Option<&CaConfig>) -> Duration {
    config
        .and_then(|c| c.config.get("LeafCertTTL"))
        .and_then(|v| v.as_str())
        .and_then(|s| crate::duration::parse_duration(s).ok())
        .unwrap_or(DEFAULT_LEAF_TTL)
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
}

/// A service instance with the checks that decide its health (Consul's `/v1/health/service`
/// entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceHealth {
    pub node: Node,
    pub service: ServiceInstance,
    pub checks: Vec<HealthCheck>,
}

impl InstanceHealth {
    /// Worst status of the node's own checks and the instance's checks; passing when none.
    pub fn status(&self) -> HealthStatus {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }
}

/// Everything the servers replicate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub tables: TableIndexes,
    /// Index of the last applied command.
    pub last_index: Index,
}

impl State {
    /// Applies `cmd` committed at log `index`. Deterministic: same state + same command gives
    /// the same state and result on every server. A rejected command changes nothing.
    pub fn apply(&mut self, index: Index, cmd: Command) -> ApplyResult {
        let error = self.apply_inner(index, cmd).err();
        self.last_index = self.last_index.max(index);
        ApplyResult { index, error }
    }

    fn apply_inner(&mut self, index: Index, cmd: Command) -> Result<(), ApplyError> {
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
            } => {
                let check = self
                    .checks
                    .get_mut(&node)
                    .and_then(|m| m.get_mut(&check_id))
                    .ok_or_else(|| NotFound::Check {
                        node: node.clone(),
                        check_id: check_id.clone(),
                    })?;
                if check.status != status || check.output != output {
                    check.status = status;
                    check.output = output;
                    check.modify_index = index;
                    self.tables.checks = index;
                }
                Ok(())
            }
            Command::SetNodeHealth {
                node,
                status,
                output,
            } => {
                if !self.nodes.contains_key(&node) {
                    return Err(NotFound::Node { node }.into());
                }
                let mut changed = false;
                // `get_mut`, not `entry`: a node without checks must not gain an empty map (a
                // no-op would otherwise change the state and its digest).
                for check in self
                    .checks
                    .get_mut(&node)
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    if check.status != status {
                        check.status = status;
                        check.output = output.clone();
                        check.modify_index = index;
                        changed = true;
                    }
                }
                if changed {
                    self.tables.checks = index;
                }
                Ok(())
            }
            Command::IntentionUpsert {
                mut intention,
                replace,
            } => {
                intentions::validate(&intention).map_err(|e| Invalid::Intention {
                    reason: e.to_string(),
                })?;
                let id = intentions::legacy_id(
                    &intention.source_ns,
                    &intention.source_name,
                    &intention.destination_ns,
                    &intention.destination_name,
                );
                intention.id = id.clone();
                intention.precedence = intentions::precedence(
                    &intention.source_ns,
                    &intention.source_name,
                    &intention.destination_ns,
                    &intention.destination_name,
                );
                intention.modify_index = index;
                match self.intentions.get(&id) {
                    Some(existing) if !replace => {
                        return Err(Conflict::IntentionExists {
                            source_name: existing.source_name.clone(),
                            destination_name: existing.destination_name.clone(),
                        }
                        .into());
                    }
                    Some(existing) => intention.create_index = existing.create_index,
                    None => intention.create_index = index,
                }
                let dest = config_entries::destination_key(
                    &intention.destination_ns,
                    &intention.destination_name,
                );
                self.intentions.insert(id, intention);
                self.touch_intention_entry(index, dest);
                self.tables.intentions = index;
                Ok(())
            }
            Command::IntentionDelete {
                source_ns,
                source,
                destination_ns,
                destination,
            } => {
                let id = intentions::legacy_id(&source_ns, &source, &destination_ns, &destination);
                if self.intentions.remove(&id).is_none() {
                    return Err(NotFound::Intention {
                        source_name: source,
                        destination_name: destination,
                    }
                    .into());
                }
                let dest = config_entries::destination_key(&destination_ns, &destination);
                let any_left = self.intentions.values().any(|i| {
                    i.destination_ns == destination_ns && i.destination_name == destination
                });
                if any_left {
                    self.touch_intention_entry(index, dest);
                } else {
                    // Removing the last source removes the entry, as in Consul.
                    self.intention_entries.remove(&dest);
                }
                self.tables.intentions = index;
                Ok(())
            }
            Command::CaInitialize {
                cluster_id,
                root,
                config,
            } => {
                if !self.ca.roots.is_empty() {
                    // Another leader initialized first; keep its root.
                    return Ok(());
                }
                let mut root = *root;
                root.root.active = true;
                root.root.create_index = index;
                root.root.modify_index = index;
                self.ca.trust_domain = format!("{cluster_id}.consul");
                self.ca.cluster_id = cluster_id;
                self.ca.next_serial = root.root.serial_number + 1;
                self.ca.roots.push(root);
                self.ca.config = Some(CaConfig {
                    create_index: index,
                    modify_index: index,
                    ..config
                });
                self.tables.roots = index;
                self.tables.ca_config = index;
                Ok(())
            }
            Command::CaRotate {
                expected_active,
                new_root,
                cross_signed_pem,
                config,
                now_unix,
            } => {
                let current = self.ca.active().ok_or(Invalid::CaNotInitialized)?;
                if current.root.id != expected_active {
                    return Err(Conflict::RootChanged {
                        expected: expected_active,
                        found: current.root.id.clone(),
                    }
                    .into());
                }
                if self.ca.roots.iter().any(|r| r.root.id == new_root.root.id) {
                    return Err(Conflict::RootPresent.into());
                }
                // Every leaf the old root signed was signed with at most the current TTL.
                let ttl = leaf_ttl(self.ca.config.as_ref()).as_secs() as i64;
                self.ca
                    .prune_after
                    .insert(expected_active.clone(), now_unix.saturating_add(ttl));
                for r in &mut self.ca.roots {
                    if r.root.active {
                        r.root.active = false;
                        r.root.rotated_out_at = now_unix;
                        r.root.modify_index = index;
                    }
                }
                let mut new_root = *new_root;
                new_root.root.active = true;
                new_root.root.create_index = index;
                new_root.root.modify_index = index;
                new_root.root.intermediate_certs = vec![cross_signed_pem];
                self.ca.next_serial = self.ca.next_serial.max(new_root.root.serial_number + 1);
                self.ca.roots.push(new_root);
                self.tables.roots = index;
                if let Some(config) = config {
                    self.set_ca_config(index, config);
                }
                Ok(())
            }
            Command::CaSetConfig { config } => {
                self.set_ca_config(index, config);
                Ok(())
            }
            Command::CaPruneRoots { now_unix } => {
                let before = self.ca.roots.len();
                let prune_after = &self.ca.prune_after;
                self.ca.roots.retain(|r| {
                    r.root.active || prune_after.get(&r.root.id).is_none_or(|t| now_unix <= *t)
                });
                if self.ca.roots.len() != before {
                    let kept: Vec<String> =
                        self.ca.roots.iter().map(|r| r.root.id.clone()).collect();
                    self.ca.prune_after.retain(|id, _| kept.contains(id));
                    self.tables.roots = index;
                }
                Ok(())
            }
            Command::SetDefaultPolicy { policy } => {
                self.default_policy = policy;
                self.tables.config = index;
                Ok(())
            }
            Command::ConfigEntrySet { entry, cas } => self.config_entry_set(index, entry, cas),
            Command::ConfigEntryDelete { kind, name, cas } => {
                self.config_entry_delete(index, kind, &name, cas)
            }
        }
    }

    /// Records a change to the intentions of destination `dest` (`ns/name`) in its entry's
    /// bookkeeping, creating it when the destination had none.
    fn touch_intention_entry(&mut self, index: Index, dest: String) {
        let e = self
            .intention_entries
            .entry(dest)
            .or_insert_with(|| IntentionEntryMeta {
                create_index: index,
                ..Default::default()
            });
        e.modify_index = index;
    }

    /// `ModifyIndex` of an entry, `None` when absent.
    fn config_modify_index(&self, kind: ConfigKind, name: &str) -> Option<Index> {
        self.config_entry(kind, name).map(|e| e.modify_index())
    }

    fn check_cas(
        &self,
        kind: ConfigKind,
        name: &str,
        cas: Option<Index>,
    ) -> Result<(), ApplyError> {
        let Some(want) = cas else { return Ok(()) };
        let have = self.config_modify_index(kind, name);
        let ok = match (want, have) {
            (0, None) => true,
            (w, Some(h)) => w == h,
            (_, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Conflict::Cas {
                kind,
                name: name.to_string(),
                want,
                have,
            }
            .into())
        }
    }

    fn config_entry_set(
        &mut self,
        index: Index,
        mut entry: ConfigEntry,
        cas: Option<Index>,
    ) -> Result<(), ApplyError> {
        entry.normalize();
        config_entries::validate(&entry).map_err(|e| Invalid::ConfigEntry {
            reason: e.to_string(),
        })?;
        self.check_cas(entry.kind(), entry.name(), cas)?;
        match entry {
            ConfigEntry::ServiceDefaults(mut e) => {
                e.create_index = self
                    .service_defaults
                    .get(&e.name)
                    .map_or(index, |old| old.create_index);
                e.modify_index = index;
                self.service_defaults.insert(e.name.clone(), e);
                self.tables.config_entries = index;
            }
            ConfigEntry::ServiceIntentions(e) => {
                let dest = config_entries::destination_key(&e.namespace, &e.name);
                let mut old: BTreeMap<String, Intention> = BTreeMap::new();
                self.intentions.retain(|id, i| {
                    if i.destination_ns == e.namespace && i.destination_name == e.name {
                        old.insert(id.clone(), i.clone());
                        false
                    } else {
                        true
                    }
                });
                for s in &e.sources {
                    let mut i = config_entries::source_to_intention(&e, s);
                    i.precedence = intentions::precedence(
                        &i.source_ns,
                        &i.source_name,
                        &i.destination_ns,
                        &i.destination_name,
                    );
                    i.create_index = old.get(&i.id).map_or(index, |o| o.create_index);
                    i.modify_index = index;
                    self.intentions.insert(i.id.clone(), i);
                }
                let create_index = self
                    .intention_entries
                    .get(&dest)
                    .map(|m| m.create_index)
                    .or_else(|| old.values().map(|i| i.create_index).min())
                    .unwrap_or(index);
                self.intention_entries.insert(
                    dest,
                    IntentionEntryMeta {
                        meta: e.meta,
                        create_index,
                        modify_index: index,
                    },
                );
                self.tables.intentions = index;
            }
            ConfigEntry::Mesh(mut e) => {
                e.name = None;
                e.create_index = self.mesh.as_ref().map_or(index, |old| old.create_index);
                e.modify_index = index;
                self.mesh = Some(e);
                self.tables.config_entries = index;
            }
        }
        Ok(())
    }

    fn config_entry_delete(
        &mut self,
        index: Index,
        kind: ConfigKind,
        name: &str,
        cas: Option<Index>,
    ) -> Result<(), ApplyError> {
        if cas.is_some_and(|c| c == 0) {
            return Err(Invalid::CasZeroOnDelete.into());
        }
        self.check_cas(kind, name, cas)?;
        match kind {
            ConfigKind::ServiceDefaults => {
                if self.service_defaults.remove(name).is_some() {
                    self.tables.config_entries = index;
                }
            }
            ConfigKind::ServiceIntentions => {
                let ns = intentions::DEFAULT_NAMESPACE;
                let before = self.intentions.len();
                self.intentions
                    .retain(|_, i| !(i.destination_ns == ns && i.destination_name == name));
                let had_meta = self
                    .intention_entries
                    .remove(&config_entries::destination_key(ns, name))
                    .is_some();
                if had_meta || self.intentions.len() != before {
                    self.tables.intentions = index;
                }
            }
            ConfigKind::Mesh => {
                if name == config_entries::MESH && self.mesh.take().is_some() {
                    self.tables.config_entries = index;
                }
            }
        }
        Ok(())
    }

    /// The entry `kind`/`name` (default namespace), `None` when absent.
    pub fn config_entry(&self, kind: ConfigKind, name: &str) -> Option<ConfigEntry> {
        match kind {
            ConfigKind::ServiceDefaults => self
                .service_defaults
                .get(name)
                .cloned()
                .map(ConfigEntry::ServiceDefaults),
            ConfigKind::ServiceIntentions => self
                .intentions_entry(intentions::DEFAULT_NAMESPACE, name)
                .map(ConfigEntry::ServiceIntentions),
            ConfigKind::Mesh => self
                .mesh
                .clone()
                .filter(|_| name == config_entries::MESH)
                .map(ConfigEntry::Mesh),
        }
    }

    /// The `service-intentions` entry of destination `ns/name`, built from the intentions.
    pub fn intentions_entry(&self, ns: &str, name: &str) -> Option<ServiceIntentions> {
        config_entries::intentions_entry(
            ns,
            name,
            self.intention_entries
                .get(&config_entries::destination_key(ns, name)),
            self.intentions.values(),
        )
    }

    /// Every entry of `kind`, by name.
    pub fn config_entries(&self, kind: ConfigKind) -> Vec<ConfigEntry> {
        match kind {
            ConfigKind::ServiceDefaults => self
                .service_defaults
                .values()
                .cloned()
                .map(ConfigEntry::ServiceDefaults)
                .collect(),
            ConfigKind::ServiceIntentions => {
                let mut dests: std::collections::BTreeSet<(String, String)> = self
                    .intentions
                    .values()
                    .map(|i| (i.destination_ns.clone(), i.destination_name.clone()))
                    .collect();
                for k in self.intention_entries.keys() {
                    if let Some((ns, name)) = k.split_once('/') {
                        dests.insert((ns.to_string(), name.to_string()));
                    }
                }
                dests
                    .into_iter()
                    .filter_map(|(ns, name)| self.intentions_entry(&ns, &name))
                    .map(ConfigEntry::ServiceIntentions)
                    .collect()
            }
            ConfigKind::Mesh => self
                .mesh
                .clone()
                .map(ConfigEntry::Mesh)
                .into_iter()
                .collect(),
        }
    }

    /// Index that changes whenever an entry of `kind` may change (for blocking queries).
    pub fn config_index(&self, kind: ConfigKind) -> Index {
        match kind {
            ConfigKind::ServiceDefaults | ConfigKind::Mesh => self.tables.config_entries,
            ConfigKind::ServiceIntentions => self.tables.intentions,
        }
    }

    fn set_ca_config(&mut self, index: Index, config: CaConfig) {
        let create_index = self
            .ca
            .config
            .as_ref()
            .map(|c| c.create_index)
            .unwrap_or(index);
        self.ca.config = Some(CaConfig {
            create_index,
            modify_index: index,
            ..config
        });
        self.tables.ca_config = index;
    }

    fn register(
        &mut self,
        index: Index,
        mut node: Node,
        service: Option<ServiceInstance>,
        checks: Vec<HealthCheck>,
    ) -> Result<(), ApplyError> {
        if node.node.is_empty() {
            return Err(Invalid::MissingNode.into());
        }
        if let Some(s) = &service {
            if s.service.is_empty() {
                return Err(Invalid::MissingServiceName.into());
            }
            if s.kind == "connect-proxy"
                && s.proxy
                    .as_ref()
                    .is_none_or(|p| p.destination_service_name.is_empty())
            {
                return Err(Invalid::ProxyWithoutDestination.into());
            }
        }
        for c in &checks {
            if c.check_id.is_empty() {
                return Err(Invalid::MissingCheckId.into());
            }
            if !c.service_id.is_empty()
                // The service's ID defaults to its name (below), as in Consul.
                && service.as_ref().is_none_or(|s| {
                    let id = if s.id.is_empty() { &s.service } else { &s.id };
                    *id != c.service_id
                })
                && !self
                    .services
                    .get(&node.node)
                    .is_some_and(|m| m.contains_key(&c.service_id))
            {
                return Err(Invalid::CheckForUnknownService {
                    check_id: c.check_id.clone(),
                    service_id: c.service_id.clone(),
                }
                .into());
            }
        }
        // Node: upsert, keeping its create index.
        match self.nodes.get(&node.node) {
            Some(existing) if same_node(existing, &node) => {}
            existing => {
                node.create_index = existing.map(|n| n.create_index).unwrap_or(index);
                node.modify_index = index;
                self.tables.nodes = index;
                self.nodes.insert(node.node.clone(), node.clone());
            }
        }
        if let Some(mut s) = service {
            s.node = node.node.clone();
            if s.id.is_empty() {
                s.id = s.service.clone();
            }
            let services = self.services.entry(node.node.clone()).or_default();
            match services.get(&s.id) {
                Some(existing) if existing.same_registration(&s) => {}
                existing => {
                    s.create_index = existing.map(|e| e.create_index).unwrap_or(index);
                    s.modify_index = index;
                    services.insert(s.id.clone(), s);
                    self.tables.services = index;
                }
            }
        }
        if !checks.is_empty() {
            let node_checks = self.checks.entry(node.node.clone()).or_default();
            for mut c in checks {
                c.node = node.node.clone();
                match node_checks.get(&c.check_id) {
                    Some(existing) if same_check(existing, &c) => {}
                    existing => {
                        c.create_index = existing.map(|e| e.create_index).unwrap_or(index);
                        c.modify_index = index;
                        node_checks.insert(c.check_id.clone(), c);
                        self.tables.checks = index;
                    }
                }
            }
        }
        Ok(())
    }

    fn deregister(
        &mut self,
        index: Index,
        node: &str,
        service_id: Option<String>,
        check_id: Option<String>,
    ) -> Result<(), ApplyError> {
        if !self.nodes.contains_key(node) {
            // Consul treats deregistering an unknown node as a no-op success.
            return Ok(());
        }
        match (service_id, check_id) {
            (None, None) => {
                self.nodes.remove(node);
                self.tables.nodes = index;
                if self.services.remove(node).is_some() {
                    self.tables.services = index;
                }
                if self.checks.remove(node).is_some() {
                    self.tables.checks = index;
                }
            }
            (Some(sid), _) => {
                let removed = self
                    .services
                    .get_mut(node)
                    .and_then(|m| m.remove(&sid))
                    .is_some();
                if !removed {
                    return Err(NotFound::Service {
                        node: node.to_string(),
                        service_id: sid,
                    }
                    .into());
                }
                self.tables.services = index;
                if let Some(checks) = self.checks.get_mut(node) {
                    let before = checks.len();
                    checks.retain(|_, c| c.service_id != sid);
                    if checks.len() != before {
                        self.tables.checks = index;
                    }
                }
            }
            (None, Some(cid)) => {
                let removed = self
                    .checks
                    .get_mut(node)
                    .and_then(|m| m.remove(&cid))
                    .is_some();
                if !removed {
                    return Err(NotFound::Check {
                        node: node.to_string(),
                        check_id: cid,
                    }
                    .into());
                }
                self.tables.checks = index;
            }
        }
        Ok(())
    }

    /// Instances of `service` (by service name) with the checks deciding their health.
    /// `connect`: the instances that accept mesh traffic for `service` (its sidecar proxies and
    /// connect-native instances), as `/v1/health/connect/:s` answers.
    pub fn service_health(&self, service: &str, connect: bool) -> Vec<InstanceHealth> {
        let mut out = Vec::new();
        for (node_name, services) in &self.services {
            let Some(node) = self.nodes.get(node_name) else {
                continue;
            };
            for s in services.values() {
                let hit = if connect {
                    s.connect_target() == Some(service)
                } else {
                    s.service == service
                };
                if !hit {
                    continue;
                }
                let checks = self
                    .checks
                    .get(node_name)
                    .map(|m| {
                        m.values()
                            .filter(|c| c.service_id.is_empty() || c.service_id == s.id)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(InstanceHealth {
                    node: node.clone(),
                    service: s.clone(),
                    checks,
                });
            }
        }
        out
    }

    /// Index that changes whenever `service_health` may change.
    pub fn health_index(&self) -> Index {
        self.tables
            .nodes
            .max(self.tables.services)
            .max(self.tables.checks)
    }

    pub fn intention_list(&self) -> Vec<Intention> {
        let mut v: Vec<Intention> = self.intentions.values().cloned().collect();
        v.sort_by(intentions::consul_order);
        v
    }

    /// A stable digest of the whole state, to compare servers (FNV-1a over canonical JSON;
    /// every map is a `BTreeMap`, so the encoding is canonical).
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("state serializes");
        format!("{:016x}", crate::hash::fnv1a64(&json))
    }
}

fn same_node(a: &Node, b: &Node) -> bool {
    a.id == b.id && a.address == b.address && a.datacenter == b.datacenter && a.meta == b.meta
}

fn same_check(a: &HealthCheck, b: &HealthCheck) -> bool {
    let strip = |c: &HealthCheck| HealthCheck {
        create_index: 0,
        modify_index: 0,
        ..c.clone()
    };
    strip(a) == strip(b)
}
