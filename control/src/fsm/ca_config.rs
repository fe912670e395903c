//! What a CA configuration says, read without touching the state: the leaf lifetime it implies
//! (`LeafCertTTL`) and the root an operator may supply in it (`RootCert`/`PrivateKey`, as
//! Consul's built-in provider takes them). Pure; used by the commands (a configuration with a
//! root is a command only the leader builds), by applying them (`ca`) and by the server.

use std::time::Duration;

use crate::model::CaConfig;

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
