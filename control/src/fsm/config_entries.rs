//! Applying config entry commands (`service-defaults`, `service-intentions`, `mesh`) with
//! `?cas=`, and reading entries back; `service-intentions` entries are built from the
//! intentions table.

use std::collections::BTreeMap;

use super::command::{ApplyError, Conflict, Invalid};
use super::state::State;
use crate::config_entries::{self, ConfigEntry, ConfigKind, IntentionEntryMeta, ServiceIntentions};
use crate::intentions;
use crate::model::{Index, Intention};

impl State {
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

    pub(super) fn config_entry_set(
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
                let old: BTreeMap<String, Intention> = self
                    .intention_ids_of(&e.namespace, &e.name)
                    .into_iter()
                    .filter_map(|id| self.remove_intention(index, &id))
                    .map(|i| (i.id.clone(), i))
                    .collect();
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
                    self.put_intention(index, i);
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

    pub(super) fn config_entry_delete(
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
                let removed = self
                    .intention_ids_of(ns, name)
                    .into_iter()
                    .filter_map(|id| self.remove_intention(index, &id))
                    .count();
                let had_meta = self
                    .intention_entries
                    .remove(&config_entries::destination_key(ns, name))
                    .is_some();
                if had_meta || removed > 0 {
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
            self.intentions_named(false, name),
        )
    }

    /// IDs of the intentions to destination `ns/name`.
    fn intention_ids_of(&self, ns: &str, name: &str) -> Vec<String> {
        self.intentions_named(false, name)
            .filter(|i| i.destination_ns == ns)
            .map(|i| i.id.clone())
            .collect()
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
}
