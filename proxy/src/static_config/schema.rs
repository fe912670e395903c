//! The static config file's JSON shape (unknown fields refused) and its validation into a
//! [`StaticConfig`]: addresses, SPIFFE IDs, timeouts, paths resolved against the file's
//! directory. Pure: reading the file and the PEM files it names is [`super::pem`]'s job, so
//! every rule here is tested on strings.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_policy::spiffe::SpiffeId;
use serde::{Deserialize, Serialize};

use crate::agent::Endpoint;
use crate::authz::SourcePattern;
use crate::config::DataPathOptions;
use crate::identity::UpstreamTarget;
use crate::inbound::LocalApp;

use super::error::{StaticConfigError, invalid};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cert: PathBuf,
    key: PathBuf,
    trust_bundle: PathBuf,
    /// One object, or a list of named ones (see [`FileInbound`]); read by [`inbound_listeners`]
    /// so each entry's errors name it.
    inbound: serde_json::Value,
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

/// `"tls": {"resumption": false, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}`: TLS settings
/// besides certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default = "default_true")]
    resumption: bool,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
}

impl Default for FileTls {
    fn default() -> Self {
        Self {
            resumption: true,
            cipher_suites: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// `{"name": "http", "listen": "0.0.0.0:21000", "local_app": "127.0.0.1:8080"}`: a public
/// mTLS listener and the application its connections go to. The name is required in the list
/// form (it keys the listener in the ready line, `/config` and reloads), optional otherwise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInbound {
    #[serde(default)]
    name: Option<String>,
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

/// One inbound listener of a static config: every one serves the same identity, trust bundle
/// and `allowed_sources`, each to its own application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticInbound {
    /// `None` only for the single-object form without a name.
    pub name: Option<String>,
    pub listen: SocketAddr,
    pub local_app: LocalApp,
}

/// A validated static config (printable: it holds paths, never key material).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticConfig {
    /// The config file itself.
    pub path: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_bundle: PathBuf,
    /// At least one; the first is the `public=` of the ready line.
    pub inbound: Vec<StaticInbound>,
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
    pub(super) fn restart_only(&self) -> impl PartialEq + fmt::Debug + use<> {
        (
            self.inbound
                .iter()
                .map(|i| (i.name.clone(), i.listen))
                .collect::<Vec<_>>(),
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

/// Whether two listen addresses cannot both be bound: the same port (not 0, which the OS
/// chooses) on the same IP, or on a wildcard address and any IP.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The listen addresses validated so far, each with its field, so a clash names both.
#[derive(Default)]
struct Taken(Vec<(String, SocketAddr)>);

impl Taken {
    fn claim(&mut self, field: String, addr: SocketAddr) -> Result<(), StaticConfigError> {
        if let Some((other, _)) = self.0.iter().find(|(_, a)| clashes(*a, addr)) {
            return Err(invalid(
                field,
                format!("{addr} is already used by {other}; give each listener its own port"),
            ));
        }
        self.0.push((field, addr));
        Ok(())
    }
}

/// A listener's name (upstreams and inbound listeners): letters, digits, `-`, `_`, `.`, and
/// not one given before in the same list.
fn listener_name(field: String, name: &str, before: &[&str]) -> Result<(), StaticConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(
            field,
            format!("{name:?} must be a name of letters, digits, - _ ."),
        ));
    }
    if before.contains(&name) {
        return Err(invalid(field, format!("{name:?} is given more than once")));
    }
    Ok(())
}

/// `inbound`: one object (name optional) or a non-empty list of named ones.
fn inbound_listeners(
    value: serde_json::Value,
    taken: &mut Taken,
) -> Result<Vec<StaticInbound>, StaticConfigError> {
    let (list, entries) = match value {
        serde_json::Value::Array(a) if a.is_empty() => {
            return Err(invalid(
                "inbound",
                "the list is empty; give at least one {\"name\", \"listen\", \"local_app\"}",
            ));
        }
        serde_json::Value::Array(a) => (true, a),
        v @ serde_json::Value::Object(_) => (false, vec![v]),
        _ => {
            return Err(invalid(
                "inbound",
                "must be an object {\"listen\", \"local_app\"} or a list of {\"name\", \"listen\", \"local_app\"}",
            ));
        }
    };
    let mut out: Vec<StaticInbound> = Vec::new();
    for (i, v) in entries.into_iter().enumerate() {
        let at = if list {
            format!("inbound[{i}]")
        } else {
            "inbound".to_string()
        };
        let field = |name: &str| format!("{at}.{name}");
        let f: FileInbound =
            serde_json::from_value(v).map_err(|e| invalid(at.clone(), e.to_string()))?;
        match &f.name {
            Some(n) => {
                let before: Vec<&str> = out.iter().filter_map(|o| o.name.as_deref()).collect();
                listener_name(field("name"), n, &before)?;
            }
            None if list => {
                return Err(invalid(
                    field("name"),
                    "missing; every listener of the list needs a unique name (letters, digits, - _ .)",
                ));
            }
            None => {}
        }
        let listen = socket_addr(&field("listen"), &f.listen)?;
        taken.claim(field("listen"), listen)?;
        let (host, port) = host_port(&field("local_app"), &f.local_app)?;
        out.push(StaticInbound {
            name: f.name,
            listen,
            local_app: LocalApp { host, port },
        });
    }
    Ok(out)
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

pub(super) fn timeout(
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
    let mut taken = Taken::default();
    let inbound = inbound_listeners(f.inbound, &mut taken)?;
    let mut allowed_sources = Vec::new();
    for (i, s) in f.allowed_sources.iter().enumerate() {
        let p = SourcePattern::parse(s)
            .map_err(|e| invalid(format!("allowed_sources[{i}]"), e.to_string()))?;
        allowed_sources.push(p.to_string());
    }
    let mut upstreams: Vec<StaticUpstream> = Vec::new();
    for (i, u) in f.upstreams.iter().enumerate() {
        let field = |name: &str| format!("upstreams[{i}].{name}");
        let before: Vec<&str> = upstreams.iter().map(|o| o.name.as_str()).collect();
        listener_name(field("name"), &u.name, &before)?;
        let bind = socket_addr(&field("listen"), &u.listen)?;
        if !bind.ip().is_loopback() {
            return Err(invalid(
                field("listen"),
                format!("{bind} is not a loopback address; upstream listeners must stay local"),
            ));
        }
        // Port 0 lets the OS choose (the ready line on stdout and `/config` say which).
        taken.claim(field("listen"), bind)?;
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
            taken.claim("admin".to_string(), a)?;
            Some(a)
        }
    };
    Ok(StaticConfig {
        path: path.to_path_buf(),
        cert: resolve(base, &f.cert),
        key: resolve(base, &f.key),
        trust_bundle: resolve(base, &f.trust_bundle),
        inbound,
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
                cipher_suites: f
                    .tls
                    .cipher_suites
                    .as_deref()
                    .map(crate::cipher_suites::CipherSuites::parse)
                    .transpose()
                    .map_err(|e| invalid("tls.cipher_suites", e.to_string()))?
                    .unwrap_or_default(),
            },
        },
        protocol: f.protocol.as_deref().unwrap_or_default().parse().map_err(
            |e: mesh_policy::config_entries::ConfigEntryError| invalid("protocol", e.to_string()),
        )?,
    })
}
