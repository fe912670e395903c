//! The proxy's certificate store: its leaf (with key) and the mesh's trust bundle, and the
//! rustls configurations built from them.
//!
//! The agent loops publish the leaf and the roots on `watch` channels; [`run_manager_with`]
//! combines them into one immutable [`Identity`] (rebuilt whenever either changes) and
//! publishes it on its own `watch` channel. A handshake takes the current `Arc<Identity>` when it starts, so
//! established connections keep the material they started with and every new handshake uses
//! the newest leaf and roots (linkerd `meshtls`, ztunnel `identity/manager.rs`).
//!
//! During a CA rotation the new active root carries a certificate of itself cross-signed by the
//! old root. The proxy sends it after its leaf, so a peer that has not yet seen the new root can
//! still verify a leaf signed by it; and it trusts every root in the bundle, so leaves signed by
//! the old root stay valid until the control plane prunes that root.
//!
//! TLS session resumption is on by default (rustls's stateful TLS 1.3 tickets on the server
//! side, an in-memory session cache per upstream on the client side), as Envoy and Linkerd do:
//! a resumed handshake skips both certificate signatures and verifications. [`TlsOptions`]
//! turns it off (`--no-tls-resumption`, or `tls.resumption: false` in a static config) for
//! deployments that want every connection to prove possession of the current key, and for
//! benchmarks that must compare full mutual-TLS handshakes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use mesh_policy::model::CaRootList;
use mesh_policy::spiffe::{SpiffeId, SpiffeIdError};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::agent::LeafCert;
use crate::tls::SpiffeServerVerifier;

/// Errors building an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("leaf certificate PEM has no certificate")]
    EmptyLeaf,
    #[error("leaf certificate PEM does not parse")]
    LeafPem(#[source] rustls::pki_types::pem::Error),
    #[error("leaf private key PEM does not parse")]
    KeyPem(#[source] rustls::pki_types::pem::Error),
    #[error("leaf key does not match its certificate or is unsupported")]
    Key(#[source] rustls::Error),
    #[error("leaf ServiceURI {uri:?} is not a SPIFFE service ID")]
    LeafId {
        uri: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("CA root {id} does not parse")]
    RootPem {
        id: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA root {id} is not a usable trust anchor")]
    RootAnchor {
        id: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the CA root list is empty")]
    NoRoots,
    #[error("building the TLS server configuration failed")]
    ServerVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("building a TLS configuration failed")]
    Config(#[source] rustls::Error),
}

/// What the proxy can say about its leaf (no key material).
#[derive(Debug, Clone, Serialize)]
pub struct LeafInfo {
    pub spiffe_id: String,
    pub serial_number: String,
    pub root_id: String,
    pub valid_after: String,
    pub valid_before: String,
    /// Unix seconds of `valid_before` (0 when it does not parse).
    pub not_after_unix: i64,
    pub index: u64,
    /// Certificates sent in the handshake: the leaf plus cross-signed intermediates.
    pub chain_len: usize,
}

/// What the proxy can say about its trust bundle.
#[derive(Debug, Clone, Serialize)]
pub struct RootsInfo {
    pub trust_domain: String,
    pub active_root_id: String,
    pub root_ids: Vec<String>,
}

/// One consistent set of TLS material.
pub struct Identity {
    pub id: SpiffeId,
    pub trust_domain: String,
    pub leaf: LeafInfo,
    pub roots: RootsInfo,
    /// Inbound: our leaf, client certificate required and verified against every root.
    pub server: Arc<ServerConfig>,
    /// Outbound, per upstream service name: our leaf as client certificate, the server must be
    /// exactly that upstream.
    clients: BTreeMap<String, (SpiffeId, Arc<ClientConfig>)>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.uri())
            .field("leaf", &self.leaf)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// TLS settings that are not certificates: fixed for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// Resume TLS sessions: the server issues TLS 1.3 session tickets (stateful, kept in
    /// memory) and the client keeps the sessions it was given, per upstream. When false every
    /// connection is a full handshake with both certificate chains and signatures.
    pub resumption: bool,
    /// The TLS 1.3 cipher suites offered and accepted, in preference order; the defaults when
    /// none were chosen (`crate::cipher_suites`).
    pub cipher_suites: crate::cipher_suites::CipherSuites,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            resumption: true,
            cipher_suites: crate::cipher_suites::CipherSuites::default(),
        }
    }
}

/// An upstream the identity must build a client configuration for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub name: String,
    /// Datacenter of the upstream; empty means ours.
    pub datacenter: String,
    /// The exact identity the server must present. `None` (agent mode) derives it from the
    /// name, the datacenter and our trust domain; static mode names it in its config file.
    pub spiffe_id: Option<SpiffeId>,
}

impl Identity {
    /// Builds the material from a leaf and the CA roots, with the default [`TlsOptions`].
    pub fn build(
        provider: &Arc<CryptoProvider>,
        leaf: &LeafCert,
        roots: &CaRootList,
        upstreams: &[UpstreamTarget],
    ) -> Result<Self, IdentityError> {
        Self::build_with(provider, leaf, roots, upstreams, TlsOptions::default())
    }

    /// Builds the material from a leaf and the CA roots.
    pub fn build_with(
        provider: &Arc<CryptoProvider>,
        leaf: &LeafCert,
        roots: &CaRootList,
        upstreams: &[UpstreamTarget],
        options: TlsOptions,
    ) -> Result<Self, IdentityError> {
        // Both sides' configs come from the provider narrowed to the chosen suites (once per
        // rotation, not per connection).
        let provider = &options.cipher_suites.provider(provider);
        let id = SpiffeId::parse(&leaf.service_uri).map_err(|source| IdentityError::LeafId {
            uri: leaf.service_uri.clone(),
            source,
        })?;
        let trust_domain = if roots.trust_domain.is_empty() {
            id.trust_domain.clone()
        } else {
            roots.trust_domain.to_ascii_lowercase()
        };

        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(IdentityError::LeafPem)?;
        if chain.is_empty() {
            return Err(IdentityError::EmptyLeaf);
        }
        if let Some(signer) = roots.roots.iter().find(|r| r.id == leaf.root_id) {
            for pem in &signer.intermediate_certs {
                match CertificateDer::from_pem_slice(pem.as_bytes()) {
                    Ok(der) => chain.push(der),
                    Err(e) => {
                        tracing::warn!(root = %signer.id, error = %e, "skipping unparsable cross-signed certificate")
                    }
                }
            }
        }
        let key = PrivateKeyDer::from_pem_slice(leaf.private_key_pem.as_bytes())
            .map_err(IdentityError::KeyPem)?;
        let chain_len = chain.len();
        let certified =
            Arc::new(CertifiedKey::from_der(chain, key, provider).map_err(IdentityError::Key)?);

        let mut store = RootCertStore::empty();
        for r in &roots.roots {
            let der = CertificateDer::from_pem_slice(r.root_cert.as_bytes()).map_err(|source| {
                IdentityError::RootPem {
                    id: r.id.clone(),
                    source,
                }
            })?;
            store.add(der).map_err(|source| IdentityError::RootAnchor {
                id: r.id.clone(),
                source,
            })?;
        }
        if store.is_empty() {
            return Err(IdentityError::NoRoots);
        }
        let store = Arc::new(store);

        let verifier = WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
            .build()
            .map_err(IdentityError::ServerVerifier)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(IdentityError::Config)?
            .with_client_cert_verifier(Arc::new(crate::tls::RememberingClientVerifier::new(
                verifier,
            )))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        if !options.resumption {
            // No session cache (TLS 1.2 IDs, TLS 1.3 stateful tickets) and no tickets sent:
            // nothing a client could resume with. The default ticketer makes no stateless
            // tickets either.
            server.session_storage = Arc::new(NoServerSessionStorage {});
            server.send_tls13_tickets = 0;
        }

        let mut clients = BTreeMap::new();
        for u in upstreams {
            let dc = if u.datacenter.is_empty() {
                id.datacenter.as_str()
            } else {
                u.datacenter.as_str()
            };
            let expected = u
                .spiffe_id
                .clone()
                .unwrap_or_else(|| SpiffeId::service(&trust_domain, dc, &u.name));
            let verifier = SpiffeServerVerifier::new(
                store.clone(),
                expected.clone(),
                provider.signature_verification_algorithms,
            );
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .map_err(IdentityError::Config)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
            if !options.resumption {
                client.resumption = Resumption::disabled();
            }
            clients.insert(u.name.clone(), (expected, Arc::new(client)));
        }

        // From the certificate itself rather than the agent's string: it is what peers check.
        let not_after_unix = x509_parser::parse_x509_certificate(
            certified.end_entity_cert().map_err(IdentityError::Key)?,
        )
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0);
        Ok(Self {
            leaf: LeafInfo {
                spiffe_id: id.uri(),
                serial_number: leaf.serial_number.clone(),
                root_id: leaf.root_id.clone(),
                valid_after: leaf.valid_after.clone(),
                valid_before: leaf.valid_before.clone(),
                not_after_unix,
                index: leaf.modify_index,
                chain_len,
            },
            roots: RootsInfo {
                trust_domain: trust_domain.clone(),
                active_root_id: roots.active_root_id.clone(),
                root_ids: roots.roots.iter().map(|r| r.id.clone()).collect(),
            },
            id,
            trust_domain,
            server: Arc::new(server),
            clients,
        })
    }

    /// The client configuration and expected server identity for `upstream`.
    pub fn client(&self, upstream: &str) -> Option<(&SpiffeId, Arc<ClientConfig>)> {
        self.clients.get(upstream).map(|(id, c)| (id, c.clone()))
    }

    /// Seconds until the leaf expires (negative once expired).
    pub fn seconds_until_expiry(&self) -> i64 {
        self.leaf.not_after_unix - OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// Rebuilds the [`Identity`] (with `options`) whenever the leaf or the roots change; stops when
/// every receiver of `out` is gone or an input channel closes.
pub async fn run_manager_with(
    provider: Arc<CryptoProvider>,
    mut leaf: watch::Receiver<Option<Arc<LeafCert>>>,
    mut roots: watch::Receiver<Option<Arc<CaRootList>>>,
    upstreams: Vec<UpstreamTarget>,
    options: TlsOptions,
    out: watch::Sender<Option<Arc<Identity>>>,
) {
    loop {
        let (l, r) = (
            leaf.borrow_and_update().clone(),
            roots.borrow_and_update().clone(),
        );
        if let (Some(l), Some(r)) = (l, r) {
            match Identity::build_with(&provider, &l, &r, &upstreams, options) {
                Ok(id) => {
                    let changed = out.borrow().as_ref().is_none_or(|old| {
                        old.leaf.serial_number != id.leaf.serial_number
                            || old.roots.root_ids != id.roots.root_ids
                            || old.roots.active_root_id != id.roots.active_root_id
                    });
                    if changed {
                        tracing::info!(
                            id = %id.id,
                            serial = %id.leaf.serial_number,
                            leaf_root = %id.leaf.root_id,
                            active_root = %id.roots.active_root_id,
                            roots = id.roots.root_ids.len(),
                            "TLS identity loaded"
                        );
                    }
                    out.send_replace(Some(Arc::new(id)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build TLS identity; keeping the previous one")
                }
            }
        }
        tokio::select! {
            c = leaf.changed() => if c.is_err() { return },
            c = roots.changed() => if c.is_err() { return },
            _ = out.closed() => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, StoredRoot, generate_csr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

    fn leaf(root: &StoredRoot, service: &str) -> LeafCert {
        let id = SpiffeId::service(TD, "dc1", service);
        let (csr, key) = generate_csr(&id).unwrap();
        let l = BuiltinProvider
            .sign_leaf(
                root,
                &LeafRequest {
                    csr_pem: &csr,
                    trust_domain: TD,
                    datacenter: "dc1",
                    service,
                    ttl: std::time::Duration::from_secs(3600),
                },
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        LeafCert {
            serial_number: l.serial_number,
            cert_pem: l.cert_pem,
            private_key_pem: key,
            service: service.into(),
            service_uri: l.service_uri,
            valid_after: l.valid_after,
            valid_before: l.valid_before,
            create_index: 1,
            modify_index: 1,
            root_id: l.root_id,
        }
    }

    pub(crate) fn identity(root: &StoredRoot, service: &str, upstream: &str) -> Identity {
        identity_with(root, service, upstream, TlsOptions::default())
    }

    fn identity_with(
        root: &StoredRoot,
        service: &str,
        upstream: &str,
        options: TlsOptions,
    ) -> Identity {
        identity_trusting(root, service, upstream, &[root], options)
    }

    /// `service`'s identity with a leaf signed by `root` (the active root), trusting `trusted`,
    /// with a client configuration for `upstream`.
    pub(crate) fn identity_trusting(
        root: &StoredRoot,
        service: &str,
        upstream: &str,
        trusted: &[&StoredRoot],
        options: TlsOptions,
    ) -> Identity {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = CaRootList {
            active_root_id: root.root.id.clone(),
            trust_domain: TD.into(),
            roots: trusted.iter().map(|r| r.root.clone()).collect(),
        };
        let up = [UpstreamTarget {
            name: upstream.into(),
            datacenter: String::new(),
            spiffe_id: None,
        }];
        Identity::build_with(&provider, &leaf(root, service), &roots, &up, options).unwrap()
    }

    /// A new root of the test trust domain; `serial` tells roots apart.
    pub(crate) fn new_root(serial: u64) -> StoredRoot {
        BuiltinProvider
            .generate_root(TD, serial, OffsetDateTime::now_utc())
            .unwrap()
    }

    /// One connection from `client` (dialling `upstream`) to `server`, with a request and a
    /// reply so the client reads whatever session tickets the server sends; returns how the
    /// client's handshake went.
    async fn exchange(
        client: &Identity,
        upstream: &str,
        server: &Identity,
    ) -> rustls::HandshakeKind {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
        let srv = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.unwrap();
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.unwrap();
            tls.write_all(b"pong").await.unwrap();
            tls.flush().await.unwrap();
            tls.get_ref().1.handshake_kind()
        });
        let (_, config) = client.client(upstream).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from("mesh.invalid").unwrap();
        let mut tls = connector.connect(name, c).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        tls.flush().await.unwrap();
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
        let kind = tls.get_ref().1.handshake_kind().unwrap();
        assert_eq!(srv.await.unwrap(), Some(kind), "both sides agree");
        kind
    }

    /// A handshake between `client` (dialling `upstream`) and `server` over an in-memory pipe;
    /// returns the client's error, if any, and the peer ID the server saw.
    async fn handshake(
        client: &Identity,
        upstream: &str,
        server: &Identity,
    ) -> Result<SpiffeId, String> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
        let srv = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            let peer = crate::tls::peer_spiffe_id(tls.get_ref().1.peer_certificates())
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 2];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        });
        let (_, config) = client.client(upstream).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from("mesh.invalid").unwrap();
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"hi").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        srv.await.unwrap()
    }

    #[tokio::test]
    async fn mutual_tls_with_spiffe_identities() {
        let root = new_root(1);
        let web = identity(&root, "web", "db");
        let db = identity(&root, "db", "web");
        assert_eq!(web.client("db").unwrap().0.service, "db");
        let peer = handshake(&web, "db", &db).await.unwrap();
        assert_eq!(peer.service, "web");
        assert!(web.seconds_until_expiry() > 3000);
        assert!(!format!("{web:?}").contains("PRIVATE"));
    }

    #[tokio::test]
    async fn sessions_resume_by_default_and_never_when_disabled() {
        use rustls::HandshakeKind::{Full, Resumed};
        let root = new_root(1);
        let on = TlsOptions::default();
        let off = TlsOptions {
            resumption: false,
            ..TlsOptions::default()
        };
        assert!(on.resumption, "resumption is on unless switched off");

        let web = identity_with(&root, "web", "db", on);
        let db = identity_with(&root, "db", "web", on);
        assert_eq!(exchange(&web, "db", &db).await, Full);
        assert_eq!(exchange(&web, "db", &db).await, Resumed);

        // Either side alone switching it off is enough: the server issues no tickets, or the
        // client neither stores nor offers them.
        for (client, server) in [(off, on), (on, off), (off, off)] {
            let web = identity_with(&root, "web", "db", client);
            let db = identity_with(&root, "db", "web", server);
            for _ in 0..3 {
                assert_eq!(
                    exchange(&web, "db", &db).await,
                    Full,
                    "client {client:?}, server {server:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn client_refuses_a_valid_certificate_of_another_service() {
        let root = new_root(1);
        let web = identity(&root, "web", "db");
        let api = identity(&root, "api", "web");
        let err = handshake(&web, "db", &api).await.unwrap_err();
        assert!(err.contains("svc/api") && err.contains("svc/db"), "{err}");
    }

    #[tokio::test]
    async fn server_refuses_a_client_from_another_root() {
        let root = new_root(1);
        let other = new_root(2);
        let web_elsewhere = identity(&other, "web", "db");
        let db = identity(&root, "db", "web");
        // The client does not trust db's root either; check the server side alone by letting
        // the client trust both roots.
        let both = [&root, &other];
        let web = identity_trusting(&other, "web", "db", &both, TlsOptions::default());
        assert!(handshake(&web, "db", &db).await.is_err());
        assert!(handshake(&web_elsewhere, "db", &db).await.is_err());
    }
}
