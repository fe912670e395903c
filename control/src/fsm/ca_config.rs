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

/// The shortest `LeafCertTTL` accepted. Consul's minimum is 1h; seconds are allowed here so
/// renewal and rotation can be exercised in tests without waiting hours.
pub const MIN_LEAF_TTL: Duration = Duration::from_secs(1);

/// The longest `LeafCertTTL` accepted: Consul's maximum (`MaxLeafCertTTL`, one year).
pub const MAX_LEAF_TTL: Duration = Duration::from_secs(8760 * 3600);

/// Why a configuration's `LeafCertTTL` is refused.
#[derive(Debug, thiserror::Error)]
pub enum LeafTtlError {
    #[error("LeafCertTTL must be a duration string such as \"72h\"")]
    NotAString,
    #[error("LeafCertTTL: {0}")]
    Unparsable(#[source] crate::duration::DurationError),
    #[error(
        "LeafCertTTL {given} is too short: it must be at least {}",
        fmt(MIN_LEAF_TTL)
    )]
    TooShort { given: String },
    #[error(
        "LeafCertTTL {given} is too long: it must be at most {} (8760h, one year, as in Consul)",
        fmt(MAX_LEAF_TTL)
    )]
    TooLong { given: String },
    #[error(
        "LeafCertTTL {given} would outlive the root that signs the leaves ({root} left): a leaf \
         cannot be valid longer than its root; choose at most {root} or rotate to a longer-lived \
         root (RootCertTTL)"
    )]
    OutlivesRoot { given: String, root: String },
}

fn fmt(d: Duration) -> String {
    crate::duration::format_duration(d)
}

/// Checks the `LeafCertTTL` of `config`, if it sets one: a duration string within
/// [`MIN_LEAF_TTL`]..=[`MAX_LEAF_TTL`] and no longer than `root_left`, the lifetime left to the
/// root that will sign the leaves (the active root, or the configuration's `RootCertTTL` when the
/// change makes a new root). Pure: the caller reads the root.
pub fn check_leaf_ttl(config: &CaConfig, root_left: Option<Duration>) -> Result<(), LeafTtlError> {
    let Some(v) = config.config.get("LeafCertTTL") else {
        return Ok(());
    };
    let s = v.as_str().ok_or(LeafTtlError::NotAString)?;
    let d = crate::duration::parse_duration(s).map_err(LeafTtlError::Unparsable)?;
    let given = s.to_string();
    if d < MIN_LEAF_TTL {
        return Err(LeafTtlError::TooShort { given });
    }
    if d > MAX_LEAF_TTL {
        return Err(LeafTtlError::TooLong { given });
    }
    match root_left {
        Some(root) if d > root => Err(LeafTtlError::OutlivesRoot {
            given,
            root: fmt(root),
        }),
        _ => Ok(()),
    }
}

/// `RootCertTTL` of a configuration, when it sets a valid one.
pub fn root_ttl(config: &CaConfig) -> Option<Duration> {
    config
        .config
        .get("RootCertTTL")
        .and_then(|v| v.as_str())
        .and_then(|s| crate::duration::parse_duration(s).ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_leaf_ttl(ttl: serde_json::Value) -> CaConfig {
        CaConfig {
            provider: "consul".into(),
            config: [("LeafCertTTL".to_string(), ttl)].into(),
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn leaf_ttl_is_bounded_by_consuls_limits_and_the_root() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let check = |ttl: &str, root: Option<Duration>| {
            check_leaf_ttl(&with_leaf_ttl(ttl.into()), root).map_err(|e| e.to_string())
        };
        assert!(check("72h", None).is_ok());
        assert!(check("8760h", Some(hours(87600))).is_ok());
        assert!(check("6s", Some(hours(1))).is_ok());
        let long = check("80000h", None).unwrap_err();
        assert!(long.contains("at most 8760h0m0s"), "{long}");
        let outlives = check("100h", Some(hours(99))).unwrap_err();
        assert!(outlives.contains("outlive the root"), "{outlives}");
        assert!(outlives.contains("99h0m0s left"), "{outlives}");
        assert!(check("500ms", None).unwrap_err().contains("at least 1s"));
        assert!(check("soon", None).is_err());
        let number = check_leaf_ttl(&with_leaf_ttl(3600.into()), None).unwrap_err();
        assert!(matches!(number, LeafTtlError::NotAString), "{number}");
        let none = CaConfig {
            config: Default::default(),
            ..with_leaf_ttl("1h".into())
        };
        assert!(check_leaf_ttl(&none, Some(Duration::ZERO)).is_ok());
    }
}
