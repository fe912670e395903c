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
        self.intentions.insert(id, intention);
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
        if self.intentions.remove(&id).is_none() {
            return Err(NotFound::Intention {
                source_name: source,
                destination_name: destination,
            }
            .into());
        }
        let dest = config_entries::destination_key(&destination_ns, &destination);
        let any_left = self
            .intentions
            .values()
            .any(|i| i.destination_ns == destination_ns && i.destination_name == destination);
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

    pub fn intention_list(&self) -> Vec<Intention> {
        let mut v: Vec<Intention> = self.intentions.values().cloned().collect();
        v.sort_by(intentions::consul_order);
        v
    }
}
