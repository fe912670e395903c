//! Applying intention commands (upsert, delete, default policy): the intentions table, which
//! `service-intentions` config entries are a view of (see `config_entries`).

use super::command::{ApplyError, Conflict, Invalid, NotFound};
use super::state::State;
use crate::config_entries::{self, IntentionEntryMeta};
use crate::intentions::{self, DefaultPolicy};
use crate::model::{Index, Intention};

impl State {
    pub(super) fn intention_upsert(
        &mut self,
        index: Index,
        mut intention: Intention,
        replace: bool,
    ) -> Result<(), ApplyError> {
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
        let dest =
            config_entries::destination_key(&intention.destination_ns, &intention.destination_name);
        self.put_intention(index, intention);
        self.touch_intention_entry(index, dest);
        self.tables.intentions = index;
        Ok(())
    }

    pub(super) fn intention_delete(
        &mut self,
        index: Index,
        source_ns: String,
        source: String,
        destination_ns: String,
        destination: String,
    ) -> Result<(), ApplyError> {
        let id = intentions::legacy_id(&source_ns, &source, &destination_ns, &destination);
        if self.remove_intention(index, &id).is_none() {
            return Err(NotFound::Intention {
                source_name: source,
                destination_name: destination,
            }
            .into());
        }
        let dest = config_entries::destination_key(&destination_ns, &destination);
        let any_left = self
            .intentions_named(false, &destination)
            .any(|i| i.destination_ns == destination_ns);
        if any_left {
            self.touch_intention_entry(index, dest);
        } else {
            // Removing the last source removes the entry, as in Consul.
            self.intention_entries.remove(&dest);
        }
        self.tables.intentions = index;
        Ok(())
    }

    pub(super) fn set_default_policy(
        &mut self,
        index: Index,
        policy: DefaultPolicy,
    ) -> Result<(), ApplyError> {
        self.default_policy = policy;
        self.tables.config = index;
        Ok(())
    }

    /// Records a change to the intentions of destination `dest` (`ns/name`) in its entry's
    /// bookkeeping, creating it when the destination had none.
    pub(super) fn touch_intention_entry(&mut self, index: Index, dest: String) {
        let e = self
            .intention_entries
            .entry(dest)
            .or_insert_with(|| IntentionEntryMeta {
                create_index: index,
                ..Default::default()
            });
        e.modify_index = index;
    }

    /// Stores `intention` (keyed by its ID, replacing the one there), keeping the derived
    /// lookups in step: with [`Self::remove_intention`], the only writers of the table.
    pub(super) fn put_intention(&mut self, index: Index, intention: Intention) {
        self.derived
            .intention_changed(self.intentions.get(&intention.id), Some(&intention), index);
        self.intentions.insert(intention.id.clone(), intention);
    }

    /// Removes intention `id`; what was there.
    pub(super) fn remove_intention(&mut self, index: Index, id: &str) -> Option<Intention> {
        let old = self.intentions.remove(id)?;
        self.derived.intention_changed(Some(&old), None, index);
        Some(old)
    }

    /// The intentions whose destination (`by_source`: source) name is exactly `name`, any
    /// namespace, by ID. O(answer).
    pub fn intentions_named(
        &self,
        by_source: bool,
        name: &str,
    ) -> impl Iterator<Item = &Intention> {
        self.derived
            .intentions
            .ids(by_source, name)
            .filter_map(|id| self.intentions.get(id))
    }

    /// The intentions a proxy of destination `name` enforces: those to `name` and those to
    /// `*`, in Consul's order (an empty `name`: every intention). O(answer).
    pub fn intentions_for_destination(&self, name: &str) -> Vec<Intention> {
        if name.is_empty() {
            return self.intention_list();
        }
        let wildcard = (name != intentions::WILDCARD).then_some(intentions::WILDCARD);
        let mut v: Vec<Intention> = std::iter::once(name)
            .chain(wildcard)
            .flat_map(|n| self.intentions_named(false, n))
            .cloned()
            .collect();
        v.sort_by(intentions::consul_order);
        v
    }

    /// Index that moves whenever what decides for destination `name` may change: a write of
    /// an intention to `name` or to `*` (an empty `name`: any intention), or of the default
    /// policy. What the intentions API blocks on, the watch topics report and the compiled
    /// sets are kept by.
    pub fn intentions_index_for(&self, name: &str) -> Index {
        let intentions = if name.is_empty() {
            self.tables.intentions
        } else {
            self.derived.destination_index(name)
        };
        intentions.max(self.tables.config)
    }

    /// Every intention in Consul's list order (kept in that order by the derived lookups).
    pub fn intention_list(&self) -> Vec<Intention> {
        self.derived
            .intentions
            .ordered_ids()
            .filter_map(|id| self.intentions.get(id))
            .cloned()
            .collect()
    }
}
