//! Lookup tables derived from `State`, so a read or a watch of one object costs O(answer), not
//! O(catalog) (issue 17): service instances by service name and by the service they take mesh
//! traffic for, checks by `(node, service ID)`, intentions by destination and by source, and
//! Consul-style per-object modify indexes (the health of service X moves only when X's
//! instances, their checks or their nodes change; the intentions of destination X only when an
//! intention to X changes).
//!
//! Why derived and not replicated: everything here follows from the tables, so it stays out of
//! the snapshot bytes and of `State::digest` (`#[serde(skip)]`; existing snapshots load
//! unchanged) and is rebuilt by [`Derived::build`] whenever a `State` is deserialized. The
//! structural tables are maintained by the `*_changed` methods below, which the table writers
//! in `catalog`, `intentions` and `config_entries` call at each insert and removal; `build`
//! goes through the same `add_*` functions, so there is one copy of the bookkeeping.
//!
//! The per-object modify indexes cannot be rebuilt exactly (a removal leaves no trace in the
//! tables), so a rebuilt state starts every one of them at a floor, the table index at rebuild
//! time: as high as the old table-wide index was, never lower than the true value, so a
//! blocking query holding an older index wakes once at most. A name whose last member goes away
//! is dropped and the keyspace's extinction index moves (Consul's
//! `service_last_extinction`), so the table stays bounded by the live names.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::intentions::WILDCARD;
use crate::model::{HealthCheck, Index, Intention, ServiceInstance};

/// `(node, service ID)`; the service ID is `""` for a node's own checks.
pub(super) type InstanceKey = (String, String);

/// Everything derived from the tables. Never compared: two states are equal when their
/// replicated data is (a replayed state and a restored one differ only in their floors).
#[derive(Clone, Default)]
pub struct Derived {
    pub(super) catalog: CatalogIndex,
    pub(super) intentions: IntentionIndex,
    /// By service name; an instance counts under its name and under its connect target.
    pub(super) services: ModifyIndexes,
    /// By intention destination name (`*` for the wildcard destination).
    pub(super) destinations: ModifyIndexes,
    /// When `*` last lost its last intention: part of every destination's index while `*`
    /// has none (the keyspace's extinction index would move them all at any name's end).
    wildcard_gone: Index,
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

impl fmt::Debug for Derived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Derived")
            .field("instances", &self.catalog.instances.len())
            .field("intentions", &self.intentions.len())
            .finish_non_exhaustive()
    }
}

/// The service names an instance is found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InstanceNames {
    service: String,
    /// The service it takes mesh traffic for (a sidecar's destination, a connect-native
    /// instance's own name), as `ServiceInstance::connect_target`.
    connect: Option<String>,
}

impl InstanceNames {
    fn of(s: &ServiceInstance) -> Self {
        Self {
            service: s.service.clone(),
            connect: s.connect_target().map(str::to_string),
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.service.as_str()).chain(self.connect.as_deref())
    }
}

/// Catalog lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CatalogIndex {
    instances: BTreeMap<InstanceKey, InstanceNames>,
    by_service: BTreeMap<String, BTreeSet<InstanceKey>>,
    by_connect: BTreeMap<String, BTreeSet<InstanceKey>>,
    /// `(node, service ID or "")` → check IDs.
    checks: BTreeMap<InstanceKey, BTreeSet<String>>,
}

impl CatalogIndex {
    fn add_instance(&mut self, s: &ServiceInstance) {
        let key = (s.node.clone(), s.id.clone());
        let names = InstanceNames::of(s);
        set_insert(&mut self.by_service, &names.service, key.clone());
        if let Some(c) = &names.connect {
            set_insert(&mut self.by_connect, c, key.clone());
        }
        self.instances.insert(key, names);
    }

    fn remove_instance(&mut self, key: &InstanceKey) {
        if let Some(names) = self.instances.remove(key) {
            set_remove(&mut self.by_service, &names.service, key);
            if let Some(c) = &names.connect {
                set_remove(&mut self.by_connect, c, key);
            }
        }
    }

    fn add_check(&mut self, c: &HealthCheck) {
        set_insert(
            &mut self.checks,
            &(c.node.clone(), c.service_id.clone()),
            c.check_id.clone(),
        );
    }

    fn remove_check(&mut self, c: &HealthCheck) {
        set_remove(
            &mut self.checks,
            &(c.node.clone(), c.service_id.clone()),
            &c.check_id,
        );
    }

    /// Drops every entry of `node`.
    fn remove_node(&mut self, node: &str) {
        let keys: Vec<InstanceKey> = on_node(&self.instances, node)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.remove_instance(&key);
        }
        let check_keys: Vec<InstanceKey> = on_node(&self.checks, node)
            .map(|(k, _)| k.clone())
            .collect();
        for key in check_keys {
            self.checks.remove(&key);
        }
    }

    /// The instances named `name` (`connect`: those taking mesh traffic for it), in
    /// `(node, service ID)` order.
    pub(super) fn instances(
        &self,
        name: &str,
        connect: bool,
    ) -> impl Iterator<Item = &InstanceKey> {
        let map = if connect {
            &self.by_connect
        } else {
            &self.by_service
        };
        map.get(name).into_iter().flatten()
    }

    /// Every service name with its instances, in name order.
    pub(super) fn by_service(&self) -> impl Iterator<Item = (&String, &BTreeSet<InstanceKey>)> {
        self.by_service.iter()
    }

    /// IDs of the checks of `node` registered for service ID `service_id` (`""`: the node's own).
    pub(super) fn check_ids(&self, node: &str, service_id: &str) -> impl Iterator<Item = &String> {
        self.checks
            .get(&(node.to_string(), service_id.to_string()))
            .into_iter()
            .flatten()
    }

    /// Whether some instance is found under `name`.
    fn has_name(&self, name: &str) -> bool {
        self.by_service.contains_key(name) || self.by_connect.contains_key(name)
    }

    /// The names of the instances a check of `(node, service_id)` decides the health of: that
    /// instance's, or every instance's on the node for a node check.
    fn names_under(&self, node: &str, service_id: &str) -> BTreeSet<String> {
        on_node(&self.instances, node)
            .filter(|((_, sid), _)| service_id.is_empty() || sid == service_id)
            .flat_map(|(_, names)| names.names().map(str::to_string))
            .collect()
    }
}

/// An intention's place in Consul's list order (`intentions::consul_order`: precedence,
/// highest first, then the source and destination; the ID last, which the store's unique
/// source/destination pairs never reach).
type OrderKey = (Reverse<u32>, String, String, String, String, String);

fn order_key(i: &Intention) -> OrderKey {
    (
        Reverse(i.precedence),
        i.source_ns.clone(),
        i.source_name.clone(),
        i.destination_ns.clone(),
        i.destination_name.clone(),
        i.id.clone(),
    )
}

/// Intention lookups, by name (the namespace is checked by the reader), and the list order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct IntentionIndex {
    /// Destination name → intention IDs.
    by_destination: BTreeMap<String, BTreeSet<String>>,
    /// Source name → intention IDs.
    by_source: BTreeMap<String, BTreeSet<String>>,
    /// Every intention in list order, so a list is not sorted per request.
    ordered: BTreeSet<OrderKey>,
}

impl IntentionIndex {
    fn add(&mut self, i: &Intention) {
        set_insert(&mut self.by_destination, &i.destination_name, i.id.clone());
        set_insert(&mut self.by_source, &i.source_name, i.id.clone());
        self.ordered.insert(order_key(i));
    }

    fn remove(&mut self, i: &Intention) {
        set_remove(&mut self.by_destination, &i.destination_name, &i.id);
        set_remove(&mut self.by_source, &i.source_name, &i.id);
        self.ordered.remove(&order_key(i));
    }

    /// Every intention ID in Consul's list order.
    pub(super) fn ordered_ids(&self) -> impl Iterator<Item = &String> {
        self.ordered.iter().map(|k| &k.5)
    }

    fn len(&self) -> usize {
        self.ordered.len()
    }

    /// IDs of the intentions whose destination (`by_source`: source) name is `name` exactly.
    pub(super) fn ids(&self, by_source: bool, name: &str) -> impl Iterator<Item = &String> {
        let map = if by_source {
            &self.by_source
        } else {
            &self.by_destination
        };
        map.get(name).into_iter().flatten()
    }

    fn has_destination(&self, name: &str) -> bool {
        self.by_destination.contains_key(name)
    }
}

/// The entries of `map` keyed under `node`.
fn on_node<'a, V>(
    map: &'a BTreeMap<InstanceKey, V>,
    node: &'a str,
) -> impl Iterator<Item = (&'a InstanceKey, &'a V)> {
    map.range((node.to_string(), String::new())..)
        .take_while(move |((n, _), _)| n == node)
}

fn set_insert<K: Ord + Clone, V: Ord>(map: &mut BTreeMap<K, BTreeSet<V>>, key: &K, v: V) {
    match map.get_mut(key) {
        Some(set) => {
            set.insert(v);
        }
        None => {
            map.insert(key.clone(), BTreeSet::from([v]));
        }
    }
}

fn set_remove<K: Ord, V: Ord>(map: &mut BTreeMap<K, BTreeSet<V>>, key: &K, v: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(v);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Per-name modify indexes of one keyspace, with the names ordered by index so a watcher can
/// ask which names moved after index N in O(moved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ModifyIndexes {
    /// No name's index is below this (the table index when the state was rebuilt).
    floor: Index,
    /// The last time a name lost its last member (Consul's extinction index): the index of
    /// every name not in `by_name`.
    extinction: Index,
    by_name: HashMap<String, Index>,
    by_index: BTreeSet<(Index, String)>,
}

/// Which names of a keyspace moved after some index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Every name may have moved (the state was rebuilt since).
    pub all: bool,
    /// Names with no member moved (one went extinct since).
    pub absent: bool,
    /// The live names that moved.
    pub names: Vec<String>,
}

impl ModifyIndexes {
    fn with_floor(floor: Index) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// The index of `name`.
    pub(super) fn get(&self, name: &str) -> Index {
        self.by_name
            .get(name)
            .copied()
            .unwrap_or(self.extinction)
            .max(self.floor)
    }

    /// `name`'s index while it has a member.
    fn live(&self, name: &str) -> Option<Index> {
        self.by_name.get(name).map(|&i| i.max(self.floor))
    }

    /// Records a change to `name` at `index`; `live`: whether it still has a member.
    fn bump(&mut self, name: &str, index: Index, live: bool) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_index.remove(&(old, name.to_string()));
        }
        if live {
            self.by_name.insert(name.to_string(), index);
            self.by_index.insert((index, name.to_string()));
        } else {
            self.extinction = self.extinction.max(index);
        }
    }

    /// What moved after `after`.
    pub(super) fn moved_since(&self, after: Index) -> Moved {
        Moved {
            all: self.floor > after,
            absent: self.extinction > after,
            names: self
                .by_index
                .range((after.saturating_add(1), String::new())..)
                .map(|(_, n)| n.clone())
                .collect(),
        }
    }
}

impl Derived {
    /// Everything derived from the tables, from scratch (after a snapshot is deserialized):
    /// `State::derive` hands them over. The floors are the tables' indexes at that moment.
    pub(super) fn build<'a>(
        services_floor: Index,
        destinations_floor: Index,
        instances: impl Iterator<Item = &'a ServiceInstance>,
        checks: impl Iterator<Item = &'a HealthCheck>,
        intentions: impl Iterator<Item = &'a Intention>,
    ) -> Self {
        let mut d = Self {
            services: ModifyIndexes::with_floor(services_floor),
            destinations: ModifyIndexes::with_floor(destinations_floor),
            ..Self::default()
        };
        for instance in instances {
            d.catalog.add_instance(instance);
        }
        for check in checks {
            d.catalog.add_check(check);
        }
        for i in intentions {
            d.intentions.add(i);
        }
        d
    }

    /// Instance `old` became `new` (either absent: added or removed) at `index`.
    pub(super) fn service_changed(
        &mut self,
        old: Option<&ServiceInstance>,
        new: Option<&ServiceInstance>,
        index: Index,
    ) {
        let mut names = BTreeSet::new();
        if let Some(o) = old {
            names.extend(InstanceNames::of(o).names().map(str::to_string));
            self.catalog
                .remove_instance(&(o.node.clone(), o.id.clone()));
        }
        if let Some(n) = new {
            names.extend(InstanceNames::of(n).names().map(str::to_string));
            self.catalog.add_instance(n);
        }
        self.bump_services(names, index);
    }

    /// Check `old` became `new` (either absent: added or removed) at `index`; with both the
    /// same check, a change of its status only.
    pub(super) fn check_changed(
        &mut self,
        old: Option<&HealthCheck>,
        new: Option<&HealthCheck>,
        index: Index,
    ) {
        let mut names = BTreeSet::new();
        for (c, add) in [(old, false), (new, true)] {
            let Some(c) = c else { continue };
            names.extend(self.catalog.names_under(&c.node, &c.service_id));
            if add {
                self.catalog.add_check(c);
            } else {
                self.catalog.remove_check(c);
            }
        }
        self.bump_services(names, index);
    }

    /// `node`'s instances and checks were put back wholesale to `services` and `checks` (a
    /// rejected `SyncNode` batch): its lookups are rebuilt from them, and the names it had
    /// either side of the restore move to `index` (a spurious wake at most).
    pub(super) fn node_restored(
        &mut self,
        node: &str,
        services: Option<&BTreeMap<String, ServiceInstance>>,
        checks: Option<&BTreeMap<String, HealthCheck>>,
        index: Index,
    ) {
        let mut names = self.catalog.names_under(node, "");
        self.catalog.remove_node(node);
        for s in services.into_iter().flat_map(|m| m.values()) {
            self.catalog.add_instance(s);
        }
        for c in checks.into_iter().flat_map(|m| m.values()) {
            self.catalog.add_check(c);
        }
        names.extend(self.catalog.names_under(node, ""));
        self.bump_services(names, index);
    }

    /// `node` itself changed (its address or meta): every instance on it shows it.
    pub(super) fn node_changed(&mut self, node: &str, index: Index) {
        let names = self.catalog.names_under(node, "");
        self.bump_services(names, index);
    }

    /// Intention `old` became `new` (either absent: added or removed) at `index`.
    pub(super) fn intention_changed(
        &mut self,
        old: Option<&Intention>,
        new: Option<&Intention>,
        index: Index,
    ) {
        if let Some(i) = old {
            self.intentions.remove(i);
        }
        if let Some(i) = new {
            self.intentions.add(i);
        }
        // Each destination once, live or not after the whole change: an update in place
        // keeps its destination live, and must not read as that name's extinction.
        let names: BTreeSet<&str> = old
            .into_iter()
            .chain(new)
            .map(|i| i.destination_name.as_str())
            .collect();
        for name in names {
            let live = self.intentions.has_destination(name);
            if name == WILDCARD && !live {
                self.wildcard_gone = index;
            }
            self.destinations.bump(name, index, live);
        }
    }

    fn bump_services(&mut self, names: BTreeSet<String>, index: Index) {
        for name in names {
            let live = self.catalog.has_name(&name);
            self.services.bump(&name, index, live);
        }
    }

    /// Index of the intentions that apply to destination `name`: its own and the wildcard's.
    pub(super) fn destination_index(&self, name: &str) -> Index {
        let own = self.destinations.get(name);
        if name == WILDCARD {
            return own;
        }
        let wildcard = self
            .destinations
            .live(WILDCARD)
            .unwrap_or_else(|| self.wildcard_gone.max(self.destinations.floor));
        own.max(wildcard)
    }
}

#[cfg(test)]
impl Derived {
    /// The structural tables, to compare an incrementally maintained state with a rebuild.
    pub(super) fn structure(&self) -> (&CatalogIndex, &IntentionIndex) {
        (&self.catalog, &self.intentions)
    }
}
