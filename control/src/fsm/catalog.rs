//! Applying catalog commands (nodes, service instances, checks) and reading the catalog back
//! with health: the catalog's part of `State`, apart from the other tables so each table's
//! rules read in one place.

use std::collections::BTreeMap;

use super::command::{ApplyError, Command, Invalid, NotFound};
use super::state::State;
use crate::model::{HealthCheck, HealthStatus, Index, Node, ServiceInstance};
use crate::wire::ServiceHealth;

impl State {
    pub(super) fn update_check(
        &mut self,
        index: Index,
        node: String,
        check_id: String,
        status: HealthStatus,
        output: String,
    ) -> Result<(), ApplyError> {
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
            self.derived.check_changed(Some(check), Some(check), index);
        }
        Ok(())
    }

    /// Applies `ops` (catalog writes to `node`) in order, all or none: on the first failure
    /// the node's entries and the table indexes are put back as they were, so a rejected batch
    /// changes nothing, as any rejected command.
    pub(super) fn sync_node(
        &mut self,
        index: Index,
        node: String,
        ops: Vec<Command>,
    ) -> Result<(), ApplyError> {
        let saved = (
            self.nodes.get(&node).cloned(),
            self.services.get(&node).cloned(),
            self.checks.get(&node).cloned(),
            self.tables,
        );
        let result = ops
            .into_iter()
            .try_for_each(|op| self.sync_op(index, &node, op));
        if result.is_err() {
            let (n, services, checks, tables) = saved;
            restore(&mut self.nodes, &node, n);
            restore(&mut self.services, &node, services);
            restore(&mut self.checks, &node, checks);
            self.tables = tables;
            self.derived.node_restored(
                &node,
                self.services.get(&node),
                self.checks.get(&node),
                index,
            );
        }
        result
    }

    /// One op of [`State::sync_node`]: a catalog write naming `node` (a registration, a service
    /// or check deregistration, a check update), applied as that command alone would be;
    /// anything else refused.
    fn sync_op(&mut self, index: Index, node: &str, op: Command) -> Result<(), ApplyError> {
        let named = match &op {
            Command::Register { node, .. } => Some(node.node.as_str()),
            Command::Deregister { node, .. } | Command::UpdateCheck { node, .. } => {
                Some(node.as_str())
            }
            _ => None,
        };
        let whole_node = matches!(
            &op,
            Command::Deregister {
                service_id: None,
                check_id: None,
                ..
            }
        );
        if named != Some(node) || whole_node {
            return Err(Invalid::SyncOp {
                node: node.to_string(),
                op: op.op().to_string(),
                other: named.unwrap_or(node).to_string(),
            }
            .into());
        }
        self.apply_inner(index, op)
    }

    pub(super) fn set_node_health(
        &mut self,
        index: Index,
        node: String,
        status: HealthStatus,
        output: String,
    ) -> Result<(), ApplyError> {
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
            self.derived.node_changed(&node, index);
        }
        Ok(())
    }

    pub(super) fn register(
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
                self.derived.node_changed(&node.node, index);
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
                    self.derived.service_changed(existing, Some(&s), index);
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
                        self.derived.check_changed(existing, Some(&c), index);
                        node_checks.insert(c.check_id.clone(), c);
                        self.tables.checks = index;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn deregister(
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
                if let Some(services) = self.services.remove(node) {
                    for s in services.values() {
                        self.derived.service_changed(Some(s), None, index);
                    }
                    self.tables.services = index;
                }
                if let Some(checks) = self.checks.remove(node) {
                    for c in checks.values() {
                        self.derived.check_changed(Some(c), None, index);
                    }
                    self.tables.checks = index;
                }
            }
            (Some(sid), _) => {
                let Some(s) = remove_on_node(&mut self.services, node, &sid) else {
                    return Err(NotFound::Service {
                        node: node.to_string(),
                        service_id: sid,
                    }
                    .into());
                };
                self.derived.service_changed(Some(&s), None, index);
                self.tables.services = index;
                let check_ids: Vec<String> = self
                    .derived
                    .catalog
                    .check_ids(node, &sid)
                    .cloned()
                    .collect();
                for cid in check_ids {
                    if let Some(c) = remove_on_node(&mut self.checks, node, &cid) {
                        self.derived.check_changed(Some(&c), None, index);
                        self.tables.checks = index;
                    }
                }
            }
            (None, Some(cid)) => {
                let Some(c) = remove_on_node(&mut self.checks, node, &cid) else {
                    return Err(NotFound::Check {
                        node: node.to_string(),
                        check_id: cid,
                    }
                    .into());
                };
                self.derived.check_changed(Some(&c), None, index);
                self.tables.checks = index;
            }
        }
        Ok(())
    }

    /// Instances of `service` (by service name) with the checks deciding their health.
    /// `connect`: the instances that accept mesh traffic for `service` (its sidecar proxies and
    /// connect-native instances), as `/v1/health/connect/:s` answers. O(answer): read through
    /// the derived lookups (`indexes`), in `(node, service ID)` order.
    pub fn service_health(&self, service: &str, connect: bool) -> Vec<ServiceHealth> {
        let catalog = &self.derived.catalog;
        let mut out = Vec::new();
        for (node_name, id) in catalog.instances(service, connect) {
            let (Some(node), Some(s)) = (
                self.nodes.get(node_name),
                self.services.get(node_name).and_then(|m| m.get(id)),
            ) else {
                continue;
            };
            let node_checks = self.checks.get(node_name);
            let mut ids: Vec<&String> = catalog
                .check_ids(node_name, "")
                .chain(catalog.check_ids(node_name, id))
                .collect();
            ids.sort_unstable();
            let checks = ids
                .into_iter()
                .filter_map(|c| node_checks.and_then(|m| m.get(c)).cloned())
                .collect();
            out.push(ServiceHealth {
                node: node.clone(),
                service: s.clone(),
                checks,
            });
        }
        out
    }

    /// [`service_health`](Self::service_health), only the passing instances when
    /// `passing_only` (`?passing`; the agents' health watch): the entries the health endpoints
    /// and the health topic serve.
    pub fn health_entries(
        &self,
        service: &str,
        connect: bool,
        passing_only: bool,
    ) -> Vec<ServiceHealth> {
        let mut all = self.service_health(service, connect);
        if passing_only {
            all.retain(|h| h.status() == HealthStatus::Passing);
        }
        all
    }

    /// Every service name with its instances, in name order (instances in `(node, ID)`
    /// order): the catalog's service list without a walk of every node.
    pub fn services_by_name(
        &self,
    ) -> impl Iterator<Item = (&str, impl Iterator<Item = &ServiceInstance>)> {
        self.derived.catalog.by_service().map(|(name, keys)| {
            let instances = keys
                .iter()
                .filter_map(|(node, id)| self.services.get(node).and_then(|m| m.get(id)));
            (name.as_str(), instances)
        })
    }

    /// Index that changes whenever `service_health(service, _)` may change: Consul's
    /// per-service index, moved by a change to an instance named `service` or taking mesh
    /// traffic for it, to one of their checks or to their nodes.
    pub fn service_index(&self, service: &str) -> Index {
        self.derived.services.get(service)
    }

    /// Index that changes whenever any `service_health` may change (the catalog's tables).
    pub fn health_index(&self) -> Index {
        self.tables
            .nodes
            .max(self.tables.services)
            .max(self.tables.checks)
    }
}

/// Removes `id` from `node`'s entries of a per-node table; what was there.
fn remove_on_node<V>(
    table: &mut BTreeMap<String, BTreeMap<String, V>>,
    node: &str,
    id: &str,
) -> Option<V> {
    table.get_mut(node).and_then(|m| m.remove(id))
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

/// Puts `node`'s entry of `map` back to `saved` (absent when `None`).
fn restore<V>(map: &mut BTreeMap<String, V>, node: &str, saved: Option<V>) {
    match saved {
        Some(v) => {
            map.insert(node.to_string(), v);
        }
        None => {
            map.remove(node);
        }
    }
}
