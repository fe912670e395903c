//! The TLS settings of the RPC port, built once at start from the operator's files (Consul's
//! `tls.defaults.{ca_file,cert_file,key_file}`): the rustls configurations both ends of a
//! server or agent connection use, and the certificate they present, which auto-encrypt
//! replaces at runtime.
//!
//! Choices (Consul's `verify_incoming`, `verify_outgoing` and `verify_server_hostname` all on,
//! with no way to turn them off once TLS is configured):
//! * Servers require a client certificate from the agent CA, or, where auto-encrypt is allowed,
//!   accept a connection without one (it may only ask for a certificate, `tls::peer`) or with
//!   an agent certificate the mesh CA issued through auto-encrypt.
//! * Every outgoing connection verifies the server's chain against the agent CA and its name
//!   `server.<dc>.<domain>`, so neither a client certificate nor another datacenter's server
//!   can pose as a server here.
//! * TLS 1.3 only (both ends are ours), ALPN `h2`, the aws-lc-rs provider, no session
//!   resumption (each connection verifies the certificate it is given, so one presented
//!   after auto-encrypt is never shadowed by a resumed certificate-less session).
//! * A server's own certificate must be a server certificate of its datacenter, and any
//!   certificate must chain to the CA file: checked at start so a wrong file fails there, not
//!   at the first connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::peer::{Peer, PeerRefusal, classify};
use super::pki::{DEFAULT_DOMAIN, Role, role_name};

/// Why the RPC TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RpcTlsError {
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} is readable by group or others (mode {mode:03o}): it holds a private key; \
         run `chmod 600 {path}`"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("--tls-cert-file and --tls-key-file go together (one was given without the other)")]
    Incomplete,
    #[error("auto-encrypt (--auto-encrypt-allow-tls) needs TLS on the RPC port (--tls-*-file)")]
    AutoEncryptNeedsTls,
    #[error(
        "auto-encrypt (--auto-encrypt-allow-tls) needs ACLs: an agent's token is what vouches \
         for it, so without ACLs anyone reaching the RPC port could get a certificate"
    )]
    AutoEncryptNeedsAcls,
    #[error("a server needs --tls-cert-file and --tls-key-file (a server certificate)")]
    ServerNeedsCertificate,
    #[error(
        "the certificate in {path} does not verify as a server certificate of datacenter \
         {dc} against the CA file: {reason} (make one with `meshctl tls cert create -server \
         -dc {dc}`)"
    )]
    NotAServerCertificate {
        path: PathBuf,
        dc: String,
        reason: String,
    },
    #[error("the certificate in {path} does not chain to the CA file: {reason}")]
    NotFromThisCa { path: PathBuf, reason: String },
    #[error("the key in {path} does not match the certificate or is unusable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the operator's files are.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The mesh CA's roots, for verifying auto-encrypt agent certificates (a server reads them
/// from its replicated state): given the index of the roots already held, `None` when they are
/// still current, else the current index and roots.
pub type MeshRoots =
    Arc<dyn Fn(Option<u64>) -> Option<(u64, Vec<CertificateDer<'static>>)> + Send + Sync>;

/// The certificate this process presents; auto-encrypt swaps it when it renews.
#[derive(Debug, Default)]
pub struct Identity(RwLock<Option<Arc<CertifiedKey>>>);

impl Identity {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write() = Some(key);
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().clone()
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.0.read().is_some()
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// The RPC port's TLS, shared by every connection of a server or an agent.
pub struct RpcTls {
    datacenter: String,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    /// Chains to the agent CA (client side of the check, used to classify peers).
    agent_ca: Arc<dyn ClientCertVerifier>,
    identity: Arc<Identity>,
    client: Arc<rustls::ClientConfig>,
    server: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcTls")
            .field("datacenter", &self.datacenter)
            .field("has_certificate", &self.identity.get().is_some())
            .field("serves", &self.server.is_some())
            .finish()
    }
}

const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, RpcTlsError> {
    std::fs::read(path).map_err(|e| RpcTlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RpcTlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RpcTlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RpcTlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A private key file: refused when group or others may read it.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, RpcTlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| RpcTlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .permissions()
        .mode();
    if let Some(open) = crate::data_dir::too_open(path, crate::data_dir::Kind::File, mode) {
        return Err(RpcTlsError::KeyExposed {
            path: open.path,
            mode: open.mode,
        });
    }
    // The key's text never reaches an error message.
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|_| RpcTlsError::BadKey {
        path: path.to_path_buf(),
        reason: "no PEM private key in the file".into(),
    })
}

impl RpcTls {
    /// A server's TLS: `files` must hold a server certificate of `datacenter`. With
    /// `mesh_roots`, auto-encrypt is allowed: connections without a certificate are accepted
    /// (for `AutoEncrypt.Sign` only) and so are agent certificates under those roots.
    pub fn server(
        files: &TlsFiles,
        datacenter: &str,
        mesh_roots: Option<MeshRoots>,
    ) -> Result<Arc<Self>, RpcTlsError> {
        let (Some(cert_file), Some(_)) = (&files.cert_file, &files.key_file) else {
            return Err(RpcTlsError::ServerNeedsCertificate);
        };
        let mut tls = Self::build(files, datacenter)?;
        let key = tls
            .identity
            .get()
            .ok_or(RpcTlsError::ServerNeedsCertificate)?;
        tls.check_server_certificate(&key, cert_file)?;
        let verifier = Arc::new(IncomingVerifier {
            agent_ca: tls.agent_ca.clone(),
            mesh: mesh_roots.map(|source| MeshRootsVerifier {
                source,
                provider: tls.provider.clone(),
                cached: Mutex::new(None),
            }),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(tls.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(tls.identity.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No resumption: every connection presents and verifies a certificate (a resumed
        // session would carry the identity of the one it resumes, e.g. auto-encrypt's
        // certificate-less first connection). RPC connections are few and long-lived.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        tls.server = Some(Arc::new(server));
        Ok(Arc::new(tls))
    }

    /// An agent's TLS: with a certificate from `files`, or none yet (auto-encrypt fetches one
    /// and [`RpcTls::identity`] takes it).
    pub fn agent(files: &TlsFiles, datacenter: &str) -> Result<Arc<Self>, RpcTlsError> {
        let tls = Self::build(files, datacenter)?;
        if let (Some(key), Some(path)) = (tls.identity.get(), &files.cert_file) {
            tls.agent_ca
                .verify_client_cert(&key.cert[0], &key.cert[1..], UnixTime::now())
                .map_err(|e| RpcTlsError::NotFromThisCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Arc::new(tls))
    }

    fn build(files: &TlsFiles, datacenter: &str) -> Result<Self, RpcTlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for cert in load_certs(&files.ca_file)? {
            roots.add(cert).map_err(|e| RpcTlsError::Read {
                path: files.ca_file.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let agent_ca = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| RpcTlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let identity = Arc::new(Identity::default());
        match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert)?;
                let key_der = load_key(key)?;
                let certified = CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
                    RpcTlsError::BadKey {
                        path: key.clone(),
                        reason: e.to_string(),
                    }
                })?;
                identity.set(Arc::new(certified));
            }
            (None, None) => {}
            _ => return Err(RpcTlsError::Incomplete),
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(identity.clone());
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            datacenter: datacenter.to_string(),
            provider,
            roots,
            agent_ca,
            identity,
            client: Arc::new(client),
            server: None,
        })
    }

    fn check_server_certificate(&self, key: &CertifiedKey, path: &Path) -> Result<(), RpcTlsError> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| RpcTlsError::Rustls(rustls::Error::General(e.to_string())))?;
        verifier
            .verify_server_cert(
                &key.cert[0],
                &key.cert[1..],
                &self.server_name(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| RpcTlsError::NotAServerCertificate {
                path: path.to_path_buf(),
                dc: self.datacenter.clone(),
                reason: e.to_string(),
            })
    }

    /// The name every server of this datacenter is verified against.
    pub fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(role_name(Role::Server, &self.datacenter, DEFAULT_DOMAIN))
            .expect("role names are DNS names (the datacenter was validated as a label)")
    }

    pub fn datacenter(&self) -> &str {
        &self.datacenter
    }

    /// The configuration of outgoing connections.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The configuration of the RPC listener (servers only).
    pub fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.server.clone()
    }

    /// The certificate presented (auto-encrypt replaces it).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Who presented `chain` (already verified by the handshake): see [`classify`].
    pub fn classify(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<Peer, PeerRefusal> {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Ok(Peer::Anonymous);
        };
        let from_agent_ca = self
            .agent_ca
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok();
        classify(leaf, from_agent_ca, &self.datacenter)
    }
}

/// The server side's client-certificate check: the agent CA, else (auto-encrypt) the mesh
/// CA's current roots.
#[derive(Debug)]
struct IncomingVerifier {
    agent_ca: Arc<dyn ClientCertVerifier>,
    mesh: Option<MeshRootsVerifier>,
}

struct MeshRootsVerifier {
    source: MeshRoots,
    provider: Arc<CryptoProvider>,
    /// The verifier for the roots at an index, rebuilt when they change.
    cached: Mutex<Option<(u64, Arc<dyn ClientCertVerifier>)>>,
}

impl std::fmt::Debug for MeshRootsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshRootsVerifier")
    }
}

impl MeshRootsVerifier {
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let mut cached = self.cached.lock();
        let held = cached.as_ref().map(|(at, _)| *at);
        let Some((index, roots)) = (self.source)(held) else {
            if let Some((_, v)) = cached.as_ref() {
                return Ok(v.clone());
            }
            return Err(rustls::Error::General("no mesh CA root yet".into()));
        };
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(roots);
        if added == 0 {
            return Err(rustls::Error::General("no mesh CA root yet".into()));
        }
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        *cached = Some((index, v.clone()));
        Ok(v)
    }
}

impl ClientCertVerifier for IncomingVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mesh.is_none()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.agent_ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let first = match self
            .agent_ca
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match &self.mesh {
            Some(mesh) => mesh
                .current()?
                .verify_client_cert(end_entity, intermediates, now)
                .map_err(|_| first),
            None => Err(first),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.agent_ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.agent_ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.agent_ca.supported_verify_schemes()
    }
}
