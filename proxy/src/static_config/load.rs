//! One load of static mode: the config file parsed ([`super::schema`]) and the certificate,
//! key and trust bundle it names read ([`super::pem`]), joined into the [`Loaded`] material
//! the agent loops would have published in agent mode.

use std::path::Path;
use std::sync::Arc;

use mesh_policy::model::CaRootList;
use mesh_policy::spiffe::SpiffeId;
use rustls::crypto::CryptoProvider;

use super::error::StaticConfigError;
use super::pem::{check_key_mode, leaf_from_files, read, roots_from_bundle};
use super::schema::{StaticConfig, parse_config};
use crate::agent::{Endpoint, LeafCert};
use crate::authz::Policy;
use crate::identity::{Identity, IdentityError};

/// Everything one load produced: what the agent loops would have published.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: StaticConfig,
    pub leaf: LeafCert,
    pub roots: CaRootList,
    /// The leaf's identity (the proxy's own).
    pub id: SpiffeId,
}

impl Loaded {
    /// The allow-list policy, stamped with `generation`.
    pub fn policy(&self, generation: u64) -> Policy {
        Policy::allow_list(
            &self.id.service,
            &self.id.trust_domain,
            generation,
            self.config.source_patterns(),
        )
        .with_protocol(self.config.protocol)
    }

    pub fn endpoints(&self) -> Vec<(String, Vec<Endpoint>)> {
        self.config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.addresses.clone()))
            .collect()
    }
}

/// Reads and validates the config file and every file it names. `generation` becomes the leaf's
/// and the policy's index.
pub fn load(
    path: &Path,
    provider: &Arc<CryptoProvider>,
    generation: u64,
) -> Result<Loaded, StaticConfigError> {
    let text = std::fs::read(path).map_err(|source| StaticConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = parse_config(path, &text)?;
    let cert = read("cert", &config.cert)?;
    check_key_mode(&config.key)?;
    let key = read("key", &config.key)?;
    let bundle = read("trust_bundle", &config.trust_bundle)?;
    let (leaf, id) = leaf_from_files(&config.cert, &cert, &key, generation)?;
    let roots = roots_from_bundle(&config.trust_bundle, &bundle, &id.trust_domain)?;
    // Build once here so a key that does not match, or a root rustls will not use, is an error
    // naming the file instead of a warning from the identity manager.
    Identity::build(provider, &leaf, &roots, &config.targets()).map_err(|source| {
        let field = match &source {
            IdentityError::KeyPem(_) | IdentityError::Key(_) => "key",
            IdentityError::RootPem { .. }
            | IdentityError::RootAnchor { .. }
            | IdentityError::NoRoots => "trust_bundle",
            _ => "cert",
        };
        StaticConfigError::Material { field, source }
    })?;
    Ok(Loaded {
        config,
        leaf,
        roots,
        id,
    })
}
