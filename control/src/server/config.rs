//! Settings of one server, parsed from `meshd server` flags (or built by tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::intentions::DefaultPolicy;
use crate::seal::SealKey;

/// ACL settings. `meshd server` turns them on unless `--acl-disabled`; `meshd dev` only with
/// `--acl`. Off in `Default` (in-process tests and benches choose). With ACLs off nothing is
/// enforced and the `/v1/acl/*` routes answer Consul's 401 `ACL support disabled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub enabled: bool,
    /// What a token's rules leave undecided (Consul's `acl.default_policy`); deny by default.
    pub default_policy: DefaultPolicy,
}

/// Settings of one `meshd server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Unique server name; the Raft node ID is derived from it.
    pub node: String,
    pub data_dir: PathBuf,
    /// gRPC address for Raft, forwarding and agents (port 0 picks a free port).
    pub bind: SocketAddr,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// Servers that must be known before the cluster bootstraps.
    pub bootstrap_expect: usize,
    /// gRPC addresses of other servers to discover or join through.
    pub join: Vec<String>,
    pub datacenter: String,
    /// Take a snapshot (and compact the log) every this many applied entries.
    pub snapshot_threshold: u64,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a write waits for a leader before failing.
    pub write_timeout: Duration,
    /// Leaf re-issue window of the embedded agent after a root rotation.
    pub leaf_rotation_jitter: Duration,
    pub acl: AclConfig,
    /// TLS on the RPC port (`--tls-*-file`): `None` serves plaintext (loopback-only setups;
    /// `meshd` refuses a non-loopback `--bind` without it unless told otherwise).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Consul's `auto_encrypt.allow_tls`: agents with only the CA file and a token may ask
    /// for a client certificate (`AutoEncrypt.Sign`). Needs `tls`.
    pub auto_encrypt_allow_tls: bool,
    /// The cluster's encryption key (`--encrypt-key-file`): CA private keys are sealed with it
    /// before they enter the Raft log (see `crate::seal`). Every server needs the same one.
    pub encrypt_key: Option<SealKey>,
    /// Timeouts and caps of the HTTP API (`limits { ... }` in a config file).
    pub http_limits: crate::http::HttpLimits,
}

impl ServerConfig {
    /// Defaults for a server named `node` storing its data in `data_dir`, on loopback with
    /// free ports.
    pub fn new(node: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node: node.into(),
            data_dir: data_dir.into(),
            bind: "127.0.0.1:0".parse().expect("valid address"),
            http_addr: "127.0.0.1:0".parse().expect("valid address"),
            bootstrap_expect: 1,
            join: Vec::new(),
            datacenter: "dc1".to_string(),
            snapshot_threshold: 10_000,
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(800),
            election_timeout_max: Duration::from_millis(1600),
            write_timeout: Duration::from_secs(10),
            leaf_rotation_jitter: Duration::from_secs(30),
            acl: AclConfig::default(),
            tls: None,
            auto_encrypt_allow_tls: false,
            encrypt_key: None,
            http_limits: crate::http::HttpLimits::default(),
        }
    }
}
