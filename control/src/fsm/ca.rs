//! Applying CA commands to `State::ca`: initialize, rotate with a cross-signed root, set the
//! configuration, prune rotated-out roots once their leaves have expired. (What a CA
//! configuration says, the leaf TTL and a supplied root, is read in `ca_config`.) (`CaState` itself is data of `State`, in `state.rs`, so this module
//! imports the state and not the other way round.)

use super::ca_config::leaf_ttl;
use super::command::{ApplyError, Conflict, Invalid};
use super::state::State;
use crate::ca::StoredRoot;
use crate::model::{CaConfig, Index};

impl State {
    pub(super) fn ca_initialize(
        &mut self,
        index: Index,
        cluster_id: String,
        root: Box<StoredRoot>,
        config: CaConfig,
    ) -> Result<(), ApplyError> {
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

    pub(super) fn ca_rotate(
        &mut self,
        index: Index,
        expected_active: String,
        new_root: Box<StoredRoot>,
        cross_signed_pem: String,
        config: Option<CaConfig>,
        now_unix: i64,
    ) -> Result<(), ApplyError> {
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

    pub(super) fn ca_prune_roots(&mut self, index: Index, now_unix: i64) -> Result<(), ApplyError> {
        let before = self.ca.roots.len();
        let prune_after = &self.ca.prune_after;
        self.ca.roots.retain(|r| {
            r.root.active || prune_after.get(&r.root.id).is_none_or(|t| now_unix <= *t)
        });
        if self.ca.roots.len() != before {
            let kept: Vec<String> = self.ca.roots.iter().map(|r| r.root.id.clone()).collect();
            self.ca.prune_after.retain(|id, _| kept.contains(id));
            self.tables.roots = index;
        }
        Ok(())
    }

    pub(super) fn set_ca_config(&mut self, index: Index, config: CaConfig) {
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
}
