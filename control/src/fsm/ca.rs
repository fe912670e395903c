//! Applying CA commands to `State::ca`: initialize, rotate with a cross-signed root, set the
//! configuration, prune rotated-out roots once their leaves have expired; and the leaf TTL a
//! configuration implies. (`CaState` itself is data of `State`, in `state.rs`, so this module
//! imports the state and not the other way round.)

use std::time::Duration;

use super::command::{ApplyError, Conflict, Invalid};
use super::state::State;
use crate::ca::StoredRoot;
use crate::model::{CaConfig, Index};

/// Default lifetime of a leaf certificate (Consul's `LeafCertTTL` default).
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(72 * 3600);

/// `LeafCertTTL` of a CA configuration, or the default.
pub fn leaf_ttl(config: Option<&CaConfig>) -> Duration {
    config
        .and_then(|c| c.config.get("LeafCertTTL"))
        .and_then(|v| v.as_str())
        .and_then(|s| crate::duration::parse_duration(s).ok())
        .unwrap_or(DEFAULT_LEAF_TTL)
}

/// The CA configuration keys that carry an operator-supplied root (Consul's built-in provider
/// accepts both). The leader turns them into a root and never stores them in the configuration:
/// the key would otherwise sit in the Raft log unsealed.
pub const ROOT_MATERIAL_KEYS: [&str; 2] = ["RootCert", "PrivateKey"];

/// Whether `config` carries a supplied root (or half of one).
pub fn has_root_material(config: &CaConfig) -> bool {
    ROOT_MATERIAL_KEYS
        .iter()
        .any(|k| config.config.contains_key(*k))
}

/// A root given in the CA configuration: its certificate and private key, PEM.
#[derive(Clone, Copy)]
pub struct SuppliedRoot<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Why the configuration's `RootCert`/`PrivateKey` cannot be used as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SuppliedRootError {
    #[error(
        "RootCert and PrivateKey must be given together (as PEM strings): the built-in CA does \
         not build a root around a supplied key, nor sign with a certificate whose key it lacks"
    )]
    Incomplete,
}

/// The root `config` supplies, if any.
pub fn supplied_root(config: &CaConfig) -> Result<Option<SuppliedRoot<'_>>, SuppliedRootError> {
    let get = |k: &str| {
        config
            .config
            .get(k)
            .map(|v| v.as_str().filter(|s| !s.is_empty()))
    };
    match (get("RootCert"), get("PrivateKey")) {
        (None, None) => Ok(None),
        (Some(Some(cert_pem)), Some(Some(key_pem))) => Ok(Some(SuppliedRoot { cert_pem, key_pem })),
        _ => Err(SuppliedRootError::Incomplete),
    }
}

/// `config` without the supplied root, as it is stored.
pub fn without_root_material(mut config: CaConfig) -> CaConfig {
    for k in ROOT_MATERIAL_KEYS {
        config.config.remove(k);
    }
    config
}

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
