//! Static mode (`meshproxy run --config FILE`): the proxy without a control plane, for
//! certificates that SPIRE or another SPIFFE issuer writes to disk.
//!
//! The config file is JSON (the workspace has serde_json and no TOML or YAML crate) and names
//! the certificate chain, the PKCS#8 key, the trust bundle, the inbound listener, the allowed
//! source SPIFFE IDs and the upstreams. [`load`] reads and validates all of it and turns it into
//! exactly what the agent loops produce in agent mode (a [`LeafCert`], a [`CaRootList`], a
//! [`Policy`], upstream [`Endpoint`]s and a [`LocalApp`]), so the data path is the same code:
//! [`watch_files`] feeds the same `watch` channels the agent loops feed.
//!
//! Reload: every [`POLL_INTERVAL`] the watcher compares the mtime and length of the config file
//! and of the three PEM files with what it last saw. On a change it loads everything again; a
//! load that fails keeps the previous material and logs one line. New handshakes use the new
//! material, established connections keep theirs, and a changed `allowed_sources` re-checks the
//! live inbound connections like an intention change does.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_policy::model::{CaRoot, CaRootList};
use mesh_policy::spiffe::SpiffeId;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::{Endpoint, LeafCert};
use crate::authz::{Policy, SourcePattern};
use crate::config::DataPathOptions;
use crate::identity::{Identity, IdentityError, UpstreamTarget};
use crate::inbound::LocalApp;
use crate::tls::TlsError;

/// How often the watcher looks at the files (SPIRE rotates leaves at half their lifetime, so a
/// second is far below any useful bound and costs four `stat` calls).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors in a static config or the files it names. Each names the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: cannot read {path}")]
    ReadFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key: {path} is readable or writable by group or others (mode {mode:04o}); it must be 0600 or stricter"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{field}")]
    Material {
        field: &'static str,
        #[source]
        source: IdentityError,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> StaticConfigError {
    StaticConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cert: PathBuf,
    key: PathBuf,
    trust_bundle: PathBuf,
    inbound: FileInbound,
    #[serde(default)]
    allowed_sources: Vec<String>,
    #[serde(default)]
    upstreams: Vec<FileUpstream>,
    #[serde(default)]
    admin: Option<String>,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    keep_denied_connections: bool,
    #[serde(default)]
    tls: FileTls,
    /// Declared protocol of the local service (tcp, http, http2, grpc; default tcp).
    #[serde(default)]
    protocol: Option<String>,
}

/// `"tls": {"resumption": false}`: TLS settings besides certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default = "default_true")]
    resumption: bool,
}

impl Default for FileTls {
    fn default() -> Self {
        Self { resumption: true }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInbound {
    listen: String,
    local_app: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    name: String,
    listen: String,
    addresses: Vec<String>,
    spiffe_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    connect: Option<String>,
    handshake: Option<String>,
    drain: Option<String>,
}

/// One upstream of a static config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticUpstream {
    pub name: String,
    pub listen: SocketAddr,
    /// Tried round-robin; on a failed TCP connect the next one (each at most once).
    pub addresses: Vec<Endpoint>,
    /// The identity the server must present.
    #[serde(serialize_with = "as_uri")]
    pub spiffe_id: SpiffeId,
}

fn as_uri<S: serde::Serializer>(id: &SpiffeId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.uri())
}

/// A validated static config (printable: it holds paths, never key material).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticConfig {
    /// The config file itself.
    pub path: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_bundle: PathBuf,
    pub listen: SocketAddr,
    pub local_app: LocalApp,
    pub allowed_sources: Vec<String>,
    pub upstreams: Vec<StaticUpstream>,
    pub admin: Option<SocketAddr>,
    /// Timeouts, denied-connection handling and TLS options (`tls` applies at start only),
    /// flattened in `/config` as before.
    #[serde(flatten)]
    pub data_path: DataPathOptions,
    /// Declared protocol of the local service; a change applies to new connections.
    pub protocol: mesh_policy::config_entries::Protocol,
}

impl StaticConfig {
    /// The upstreams as identity targets (explicit server IDs).
    pub fn targets(&self) -> Vec<UpstreamTarget> {
        self.upstreams
            .iter()
            .map(|u| UpstreamTarget {
                name: u.name.clone(),
                datacenter: String::new(),
                spiffe_id: Some(u.spiffe_id.clone()),
            })
            .collect()
    }

    /// Parsed `allowed_sources` (validated when the config was loaded).
    pub fn source_patterns(&self) -> Vec<SourcePattern> {
        self.allowed_sources
            .iter()
            .filter_map(|s| SourcePattern::parse(s).ok())
            .collect()
    }

    /// Settings that only apply at start; a reload that changes them is reported, not applied.
    fn restart_only(&self) -> impl PartialEq + fmt::Debug + use<> {
        (
            self.listen,
            self.admin,
            self.upstreams
                .iter()
                .map(|u| (u.name.clone(), u.listen, u.spiffe_id.uri()))
                .collect::<Vec<_>>(),
            self.data_path,
        )
    }
}

/// `IP:port`, e.g. a listener.
fn socket_addr(field: &str, value: &str) -> Result<SocketAddr, StaticConfigError> {
    value
        .parse()
        .map_err(|_| invalid(field, format!("{value:?} is not an IP:port address")))
}

/// `host:port` (host a name or an IP, `[v6]:port` for IPv6), port not 0.
fn host_port(field: &str, value: &str) -> Result<(String, u16), StaticConfigError> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(invalid(field, format!("{value:?}: port must not be 0")));
        }
        return Ok((a.ip().to_string(), a.port()));
    }
    let bad = || invalid(field, format!("{value:?} is not a host:port address"));
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if !host_ok || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn timeout(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, StaticConfigError> {
    let Some(v) = value else { return Ok(default) };
    let d = mesh_policy::duration::parse_duration(v)
        .map_err(|e| invalid(field, format!("{v:?}: {e}")))?;
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(d)
}

/// Paths in the file are relative to the file's directory.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses and validates the config file alone (no certificate files read).
pub fn parse_config(path: &Path, text: &[u8]) -> Result<StaticConfig, StaticConfigError> {
    let f: FileConfig =
        serde_json::from_slice(text).map_err(|source| StaticConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for (field, p) in [
        ("cert", &f.cert),
        ("key", &f.key),
        ("trust_bundle", &f.trust_bundle),
    ] {
        if p.as_os_str().is_empty() {
            return Err(invalid(field, "must name a file"));
        }
    }
    let listen = socket_addr("inbound.listen", &f.inbound.listen)?;
    let (host, port) = host_port("inbound.local_app", &f.inbound.local_app)?;
    let mut allowed_sources = Vec::new();
    for (i, s) in f.allowed_sources.iter().enumerate() {
        let p = SourcePattern::parse(s)
            .map_err(|e| invalid(format!("allowed_sources[{i}]"), e.to_string()))?;
        allowed_sources.push(p.to_string());
    }
    let mut upstreams: Vec<StaticUpstream> = Vec::new();
    for (i, u) in f.upstreams.iter().enumerate() {
        let field = |name: &str| format!("upstreams[{i}].{name}");
        if u.name.is_empty()
            || !u
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                field("name"),
                format!("{:?} must be a name of letters, digits, - _ .", u.name),
            ));
        }
        if upstreams.iter().any(|o| o.name == u.name) {
            return Err(invalid(
                field("name"),
                format!("{:?} is given more than once", u.name),
            ));
        }
        let bind = socket_addr(&field("listen"), &u.listen)?;
        if !bind.ip().is_loopback() {
            return Err(invalid(
                field("listen"),
                format!("{bind} is not a loopback address; upstream listeners must stay local"),
            ));
        }
        // Port 0 lets the OS choose (the ready line on stdout and `/config` say which).
        if bind.port() != 0 && (upstreams.iter().any(|o| o.listen == bind) || bind == listen) {
            return Err(invalid(
                field("listen"),
                format!("{bind} is already used by another listener"),
            ));
        }
        if u.addresses.is_empty() {
            return Err(invalid(
                field("addresses"),
                "must list at least one host:port",
            ));
        }
        let mut addresses = Vec::new();
        for (j, a) in u.addresses.iter().enumerate() {
            let (host, port) = host_port(&format!("upstreams[{i}].addresses[{j}]"), a)?;
            addresses.push(Endpoint {
                id: a.clone(),
                host,
                port,
            });
        }
        let spiffe_id = SpiffeId::parse(&u.spiffe_id)
            .map_err(|e| invalid(field("spiffe_id"), e.to_string()))?;
        upstreams.push(StaticUpstream {
            name: u.name.clone(),
            listen: bind,
            addresses,
            spiffe_id,
        });
    }
    let admin = match &f.admin {
        None => None,
        Some(a) => {
            let a = socket_addr("admin", a)?;
            if !a.ip().is_loopback() {
                return Err(invalid(
                    "admin",
                    format!("{a} is not a loopback address; the admin port must stay local"),
                ));
            }
            Some(a)
        }
    };
    Ok(StaticConfig {
        path: path.to_path_buf(),
        cert: resolve(base, &f.cert),
        key: resolve(base, &f.key),
        trust_bundle: resolve(base, &f.trust_bundle),
        listen,
        local_app: LocalApp { host, port },
        allowed_sources,
        upstreams,
        admin,
        data_path: DataPathOptions {
            connect_timeout: timeout(
                "timeouts.connect",
                f.timeouts.connect.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            handshake_timeout: timeout(
                "timeouts.handshake",
                f.timeouts.handshake.as_deref(),
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
            drain_timeout: timeout(
                "timeouts.drain",
                f.timeouts.drain.as_deref(),
                DEFAULT_DRAIN_TIMEOUT,
            )?,
            keep_denied_connections: f.keep_denied_connections,
            tls: crate::identity::TlsOptions {
                resumption: f.tls.resumption,
            },
        },
        protocol: f.protocol.as_deref().unwrap_or_default().parse().map_err(
            |e: mesh_policy::config_entries::ConfigEntryError| invalid("protocol", e.to_string()),
        )?,
    })
}

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

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, StaticConfigError> {
    std::fs::read(path).map_err(|source| StaticConfigError::ReadFile {
        field,
        path: path.to_path_buf(),
        source,
    })
}

/// The key must not be accessible by group or others (like ssh and SPIRE's own files).
fn check_key_mode(path: &Path) -> Result<(), StaticConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| StaticConfigError::ReadFile {
        field: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StaticConfigError::KeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The PEM blocks of type CERTIFICATE in `text`, each as its own PEM string.
fn certificate_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// The trust bundle as the agent's root list: one root per certificate, IDs from a hash of the
/// certificate so a changed bundle shows as changed root IDs.
fn roots_from_bundle(
    path: &Path,
    bytes: &[u8],
    trust_domain: &str,
) -> Result<CaRootList, StaticConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        invalid(
            "trust_bundle",
            format!("{} is not PEM text", path.display()),
        )
    })?;
    let mut roots = Vec::new();
    for (i, pem) in certificate_blocks(text).into_iter().enumerate() {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            invalid(
                "trust_bundle",
                format!("certificate {i} in {} does not parse: {e}", path.display()),
            )
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            invalid(
                "trust_bundle",
                format!("certificate {i} in {} does not parse: {e}", path.display()),
            )
        })?;
        let validity = cert.validity();
        roots.push(CaRoot {
            id: format!("{:016x}", mesh_policy::hash::fnv1a64(&der)),
            name: cert.subject().to_string(),
            serial_number: 0,
            signing_key_id: String::new(),
            external_trust_domain: String::new(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
            root_cert: pem,
            intermediate_certs: Vec::new(),
            active: i == 0,
            private_key_type: String::new(),
            private_key_bits: 0,
            rotated_out_at: 0,
            create_index: 0,
            modify_index: 0,
        });
    }
    if roots.is_empty() {
        return Err(invalid(
            "trust_bundle",
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(CaRootList {
        active_root_id: roots[0].id.clone(),
        trust_domain: trust_domain.to_string(),
        roots,
    })
}

/// The leaf as the agent would serve it, after the X.509-SVID checks: a certificate chain, the
/// first one not a CA and carrying exactly one URI SAN that is a SPIFFE service ID.
fn leaf_from_files(
    cert_path: &Path,
    cert: &[u8],
    key: &[u8],
    generation: u64,
) -> Result<(LeafCert, SpiffeId), StaticConfigError> {
    let bad = |reason: String| invalid("cert", format!("{}: {reason}", cert_path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("PEM does not parse: {e}")))?;
    let first = chain
        .first()
        .ok_or_else(|| bad("holds no PEM certificate".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| bad(format!("leaf certificate does not parse: {e}")))?;
    if parsed.is_ca() {
        return Err(bad(
            "the first certificate is a CA, not an X.509-SVID leaf".into()
        ));
    }
    let id = crate::tls::spiffe_id_of(first).map_err(|e| match e {
        TlsError::UriSanCount { count } => bad(format!(
            "not a SPIFFE X.509-SVID: it must carry exactly one URI SAN, found {count}"
        )),
        TlsError::InvalidSpiffeId { source, .. } => bad(format!("its URI SAN: {source}")),
        e => bad(format!("not a SPIFFE X.509-SVID: {e}")),
    })?;
    let key_text = std::str::from_utf8(key).unwrap_or_default();
    match PrivateKeyDer::from_pem_slice(key) {
        Ok(PrivateKeyDer::Pkcs8(_)) => {}
        Ok(_) => {
            return Err(invalid(
                "key",
                "expected a PKCS#8 key (-----BEGIN PRIVATE KEY-----)",
            ));
        }
        Err(e) => return Err(invalid("key", format!("PEM does not parse: {e}"))),
    }
    let validity = parsed.validity();
    Ok((
        LeafCert {
            serial_number: parsed.raw_serial_as_string(),
            cert_pem: String::from_utf8_lossy(cert).into_owned(),
            private_key_pem: key_text.to_string(),
            service: id.service.clone(),
            service_uri: id.uri(),
            valid_after: validity.not_before.to_string(),
            valid_before: validity.not_after.to_string(),
            modify_index: generation,
            root_id: String::new(),
        },
        id,
    ))
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

/// `(mtime, len)` of each watched file; `None` for a file that cannot be stat'ed.
type Signature = Vec<Option<(SystemTime, u64)>>;

fn signature(paths: &[&Path]) -> Signature {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

fn watched(c: &StaticConfig) -> Signature {
    signature(&[&c.path, &c.cert, &c.key, &c.trust_bundle])
}

/// Publisher of one upstream's instances (what the agent's health loop feeds in agent mode).
pub type EndpointsTx = watch::Sender<Option<Arc<Vec<Endpoint>>>>;

/// The channels the watcher feeds: the same ones the agent loops feed in agent mode.
#[derive(Debug)]
pub struct Outputs {
    pub leaf: watch::Sender<Option<Arc<LeafCert>>>,
    pub roots: watch::Sender<Option<Arc<CaRootList>>>,
    pub policy: watch::Sender<Option<Arc<Policy>>>,
    pub local_app: watch::Sender<Option<Arc<LocalApp>>>,
    /// Per upstream name.
    pub endpoints: Vec<(String, EndpointsTx)>,
}

impl Outputs {
    /// Publishes `l`. Values that did not change are not re-sent, so an unchanged
    /// `allowed_sources` does not trigger a re-check.
    pub fn publish(&self, l: &Loaded, generation: u64) {
        self.leaf.send_replace(Some(Arc::new(l.leaf.clone())));
        self.roots.send_replace(Some(Arc::new(l.roots.clone())));
        let sources = l.config.source_patterns();
        self.policy.send_if_modified(|p| {
            let same = p
                .as_ref()
                .filter(|p| p.protocol == l.config.protocol)
                .and_then(|p| p.allowed_sources())
                .is_some_and(|old| old == sources.as_slice());
            if !same {
                *p = Some(Arc::new(l.policy(generation)));
            }
            !same
        });
        let app = l.config.local_app.clone();
        self.local_app.send_if_modified(|a| {
            let same = a.as_deref() == Some(&app);
            if !same {
                *a = Some(Arc::new(app));
            }
            !same
        });
        for (name, eps) in l.endpoints() {
            if let Some((_, tx)) = self.endpoints.iter().find(|(n, _)| *n == name) {
                tx.send_if_modified(|e| {
                    let same = e.as_deref() == Some(&eps);
                    if !same {
                        *e = Some(Arc::new(eps));
                    }
                    !same
                });
            }
        }
    }
}

/// Polls the files every [`POLL_INTERVAL`] and publishes each successful reload on `out`. Runs
/// until every receiver of the leaf channel is gone (the proxy is shutting down) or the runtime
/// it runs on stops.
pub async fn watch_files(provider: Arc<CryptoProvider>, initial: Loaded, out: Outputs) {
    let path = initial.config.path.clone();
    let start_settings = initial.config.restart_only();
    let mut current = initial.config;
    let mut seen = watched(&current);
    let mut generation = initial.leaf.modify_index;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = out.leaf.closed() => return,
        }
        // Stat before reading: a write after the stat shows up as a change on the next tick.
        let now = watched(&current);
        if now == seen {
            continue;
        }
        seen = now;
        generation += 1;
        match load(&path, &provider, generation) {
            Ok(l) => {
                if l.config.restart_only() != start_settings {
                    tracing::warn!(
                        config = %path.display(),
                        "listeners, upstream names or IDs, admin address or timeouts changed; restart the proxy to apply them (certificates, allowed_sources, local_app and upstream addresses are applied live)"
                    );
                }
                let paths_moved = (&l.config.cert, &l.config.key, &l.config.trust_bundle)
                    != (&current.cert, &current.key, &current.trust_bundle);
                out.publish(&l, generation);
                tracing::info!(config = %path.display(), generation, id = %l.id, "static configuration reloaded");
                current = l.config;
                if paths_moved {
                    // The signature covered the old paths: look at the new ones next tick.
                    seen.clear();
                }
            }
            Err(e) => tracing::warn!(
                config = %path.display(),
                "reload failed; keeping the previous configuration and certificates: {}",
                error_chain(&e)
            ),
        }
    }
}

/// `e` and its sources on one line, separated by ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        next = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<StaticConfig, String> {
        parse_config(Path::new("/etc/mesh/proxy.json"), json.as_bytes())
            .map_err(|e| error_chain(&e))
    }

    const GOOD: &str = r#"{
        "cert": "svid.pem", "key": "/keys/svid_key.pem", "trust_bundle": "bundle.pem",
        "inbound": {"listen": "0.0.0.0:21000", "local_app": "localhost:8080"},
        "allowed_sources": ["spiffe://td/ns/default/dc/dc1/svc/web", "spiffe://td/ns/default/dc/dc2/svc/*"],
        "upstreams": [{"name": "db", "listen": "127.0.0.1:9191",
                       "addresses": ["10.0.0.5:21000", "[::1]:21001", "db.internal:21000"],
                       "spiffe_id": "spiffe://td/ns/default/dc/dc1/svc/db"}],
        "admin": "127.0.0.1:19000",
        "timeouts": {"connect": "2s", "drain": "1m"}
    }"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cert, Path::new("/etc/mesh/svid.pem"));
        assert_eq!(c.key, Path::new("/keys/svid_key.pem"));
        assert_eq!(c.local_app.host, "localhost");
        assert_eq!(c.upstreams[0].addresses[1].host, "::1");
        assert_eq!(c.upstreams[0].addresses[2].port, 21000);
        assert_eq!(c.data_path.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.data_path.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.data_path.drain_timeout, Duration::from_secs(60));
        assert_eq!(c.source_patterns().len(), 2);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("spiffe://td/ns/default/dc/dc1/svc/db"),
            "{json}"
        );
    }

    #[test]
    fn tls_resumption_is_on_unless_switched_off() {
        assert!(parse(GOOD).unwrap().data_path.tls.resumption);
        let with = |tls: &str| GOOD.replace("\"admin\"", &format!("\"tls\": {tls}, \"admin\""));
        assert!(parse(&with("{}")).unwrap().data_path.tls.resumption);
        assert!(
            !parse(&with(r#"{"resumption": false}"#))
                .unwrap()
                .data_path
                .tls
                .resumption
        );
        let e = parse(&with(r#"{"resume": false}"#)).unwrap_err();
        assert!(e.contains("resume"), "{e}");
    }

    #[test]
    fn protocol_defaults_to_tcp_and_is_validated() {
        use mesh_policy::config_entries::Protocol;
        assert_eq!(parse(GOOD).unwrap().protocol, Protocol::Tcp);
        let with = |p: &str| GOOD.replace("\"admin\"", &format!("\"protocol\": {p}, \"admin\""));
        assert_eq!(parse(&with("\"grpc\"")).unwrap().protocol, Protocol::Grpc);
        let e = parse(&with("\"quic\"")).unwrap_err();
        assert!(e.contains("protocol") && e.contains("quic"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("0.0.0.0:21000", "nope"), "inbound.listen"),
            (
                GOOD.replace("localhost:8080", "localhost"),
                "inbound.local_app",
            ),
            (
                GOOD.replace("127.0.0.1:9191", "10.1.1.1:9191"),
                "upstreams[0].listen",
            ),
            (
                GOOD.replace("db.internal:21000", "db internal:1"),
                "upstreams[0].addresses[2]",
            ),
            (GOOD.replace("svc/db\"", "svc/\""), "upstreams[0].spiffe_id"),
            (
                GOOD.replace("dc2/svc/*", "dc2/svc/w*"),
                "allowed_sources[1]",
            ),
            (GOOD.replace("\"1m\"", "\"0s\""), "timeouts.drain"),
            (GOOD.replace("127.0.0.1:19000", "0.0.0.0:19000"), "admin"),
            (GOOD.replace("\"cert\"", "\"certificate\""), "certificate"),
            (GOOD.replace("\"cert\": \"svid.pem\",", ""), "`cert`"),
            ("{".to_string(), "/etc/mesh/proxy.json"),
        ];
        for (json, field) in cases {
            let e = parse(&json).expect_err(field);
            assert!(e.contains(field), "{field}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    mod files {
        use super::*;
        use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, generate_csr};
        use std::os::unix::fs::PermissionsExt;
        use time::OffsetDateTime;

        const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

        fn write(path: &Path, text: &str, mode: u32) {
            std::fs::write(path, text).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }

        /// A directory with db's leaf, key, bundle and a config allowing `allowed`.
        fn setup(allowed: &[&str]) -> tempfile::TempDir {
            let dir = tempfile::tempdir().unwrap();
            let root = BuiltinProvider
                .generate_root(TD, 1, OffsetDateTime::now_utc())
                .unwrap();
            let (csr, key) = generate_csr(&SpiffeId::service(TD, "dc1", "db")).unwrap();
            let leaf = BuiltinProvider
                .sign_leaf(
                    &root,
                    &LeafRequest {
                        csr_pem: &csr,
                        trust_domain: TD,
                        datacenter: "dc1",
                        service: "db",
                        ttl: Duration::from_secs(3600),
                    },
                    OffsetDateTime::now_utc(),
                )
                .unwrap();
            write(&dir.path().join("cert.pem"), &leaf.cert_pem, 0o644);
            write(&dir.path().join("key.pem"), &key, 0o600);
            write(&dir.path().join("bundle.pem"), &root.root.root_cert, 0o644);
            write_config(dir.path(), allowed);
            dir
        }

        fn write_config(dir: &Path, allowed: &[&str]) {
            let c = serde_json::json!({
                "cert": "cert.pem", "key": "key.pem", "trust_bundle": "bundle.pem",
                "inbound": {"listen": "127.0.0.1:0", "local_app": "127.0.0.1:1"},
                "allowed_sources": allowed,
            });
            write(&dir.join("proxy.json"), &c.to_string(), 0o644);
        }

        /// The outputs, the policy receiver and the leaf receiver (the watcher stops once that
        /// one is dropped).
        #[allow(
            clippy::type_complexity,
            reason = "a test helper returning two receivers"
        )]
        fn outputs() -> (
            Outputs,
            watch::Receiver<Option<Arc<Policy>>>,
            watch::Receiver<Option<Arc<LeafCert>>>,
        ) {
            let (policy, rx) = watch::channel(None);
            let (leaf, leaf_rx) = watch::channel(None);
            let out = Outputs {
                leaf,
                roots: watch::channel(None).0,
                policy,
                local_app: watch::channel(None).0,
                endpoints: Vec::new(),
            };
            (out, rx, leaf_rx)
        }

        #[test]
        fn load_checks_the_key_mode() {
            let dir = setup(&[]);
            let provider = crate::app::crypto_provider();
            let config = dir.path().join("proxy.json");
            let l = load(&config, &provider, 1).unwrap();
            assert_eq!(l.id, SpiffeId::service(TD, "dc1", "db"));
            assert_eq!(l.roots.roots.len(), 1);
            let key = dir.path().join("key.pem");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = error_chain(&load(&config, &provider, 1).unwrap_err());
            assert!(e.starts_with("key: ") && e.contains("0640"), "{e}");
        }

        #[tokio::test]
        async fn watcher_applies_good_reloads_and_keeps_the_old_on_bad_ones() {
            let web = SpiffeId::service(TD, "dc1", "web");
            let dir = setup(&[]);
            let provider = crate::app::crypto_provider();
            let config = dir.path().join("proxy.json");
            let initial = load(&config, &provider, 1).unwrap();
            let (out, mut policy, _leaf) = outputs();
            out.publish(&initial, 1);
            assert!(
                !policy
                    .borrow_and_update()
                    .as_ref()
                    .unwrap()
                    .authorize(&web)
                    .allowed
            );
            let task = tokio::spawn(watch_files(provider, initial, out));

            // A broken config: nothing is published (two polls see it).
            write(&config, "{", 0o644);
            let r = tokio::time::timeout(POLL_INTERVAL * 2, policy.changed()).await;
            assert!(r.is_err(), "a broken config was published");

            write_config(dir.path(), &[&web.uri()]);
            tokio::time::timeout(POLL_INTERVAL * 10, policy.changed())
                .await
                .expect("reload within the poll interval")
                .unwrap();
            let p = policy.borrow_and_update().clone().unwrap();
            assert!(p.authorize(&web).allowed);
            assert!(p.index > 1);
            task.abort();
        }
    }
}
