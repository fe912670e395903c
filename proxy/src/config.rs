//! Command line of `meshproxy` and the validated [`Config`] the proxy runs with in agent mode.
//! Static mode (`--config FILE`) takes its settings from the file instead; see
//! [`crate::static_config`].
//!
//! Parsing (clap) and validation are separate so that every rule lives in
//! [`Config::from_args`] and a `Config` that exists is one the proxy can run with. The config
//! is printable (`Debug`, and `/config` on the admin port) without the ACL token.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Errors in the command line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--upstream {value:?}: {reason} (expected NAME:PORT, e.g. db:9191)")]
    BadUpstream { value: String, reason: &'static str },
    #[error("--upstream {name:?} is given more than once")]
    DuplicateUpstream { name: String },
    #[error("--sidecar-for must name a service ID (or use --config FILE for static mode)")]
    EmptySidecarFor,
    #[error("--{flag} must be greater than zero")]
    ZeroDuration { flag: &'static str },
    #[error("--admin-addr {addr} is not a loopback address; the admin port must stay local")]
    AdminNotLoopback { addr: SocketAddr },
    #[error(
        "the sidecar registration's Proxy.Config.{ADMIN_CONFIG_KEY} {value} {reason} (expected a \
         loopback IP:PORT string such as \"127.0.0.1:19001\"; or pass --admin-addr)"
    )]
    RegisteredAdmin { value: String, reason: &'static str },
    #[error(transparent)]
    Transparent(#[from] crate::transparent::args::ArgsError),
    #[error("invalid duration {value:?}")]
    BadDuration {
        value: String,
        #[source]
        source: mesh_policy::duration::DurationError,
    },
}

/// `meshproxy` command line.
#[derive(Debug, Parser)]
#[command(name = "meshproxy", version, about = "Mesh data plane proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar proxy of a registered service.
    Run(Box<RunArgs>),
    /// Inspect or remove the pinned transparent-mode captures of pods.
    #[command(subcommand)]
    Transparent(crate::transparent::pods::PodsCommand),
}

/// Flags of `meshproxy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// ID of the service this proxy is the sidecar for; its `connect-proxy` registration is
    /// looked up on the agent.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub sidecar_for: Option<String>,
    /// Static mode: run from this JSON config file (certificates on disk, no agent); see the
    /// README. Every other setting comes from the file.
    /// (The agent address and token are ignored there; they may come from the environment.)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "upstreams", "admin_addr", "connect_timeout", "handshake_timeout", "drain_timeout",
            "keep_denied_connections", "no_tls_resumption", "tls_cipher_suites", "protocol",
            // Transparent mode needs the agent (catalog, per-service identities).
            "transparent",
        ]
    )]
    pub config: Option<std::path::PathBuf>,
    /// HTTP address of the local agent.
    #[arg(long, default_value = "127.0.0.1:8500", env = "MESH_HTTP_ADDR")]
    pub agent_addr: SocketAddr,
    /// ACL token sent to the agent (X-Consul-Token).
    #[arg(long, env = "MESH_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra upstream NAME:PORT (loopback listener on PORT for service NAME); repeatable.
    /// Overrides a registered upstream of the same name.
    #[arg(long = "upstream", value_parser = UpstreamArg::from_str)]
    pub upstreams: Vec<UpstreamArg>,
    /// Admin HTTP address (/ready, /config, /metrics); must be loopback. Default: the sidecar
    /// registration's `Proxy.Config.admin_addr` when it sets one, else a port the OS picks on
    /// 127.0.0.1 (so sidecars side by side never collide), announced in the ready line.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// Timeout of a TCP connect to an upstream instance or to the local application.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout of a TLS handshake, inbound or outbound.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// On SIGTERM, how long live connections may take to finish before the proxy exits.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Keep live inbound connections open when a later intention change denies them (by
    /// default they are closed within a second).
    #[arg(long)]
    pub keep_denied_connections: bool,
    /// Never resume TLS sessions, inbound or outbound: every connection is a full mutual-TLS
    /// handshake (by default sessions are resumed, as Envoy and Linkerd do).
    #[arg(long)]
    pub no_tls_resumption: bool,
    /// TLS 1.3 cipher suites offered and accepted, comma-separated in preference order, e.g.
    /// `TLS_AES_128_GCM_SHA256` (what Go and Envoy pick on AES-NI). Default: rustls' order,
    /// AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305. Static mode: `tls.cipher_suites`.
    #[arg(
        long,
        value_name = "LIST",
        value_parser = crate::cipher_suites::CipherSuites::parse_csv
    )]
    pub tls_cipher_suites: Option<crate::cipher_suites::CipherSuites>,
    /// Declared protocol of the local service (tcp, http, http2, grpc), instead of reading it
    /// from the agent's service-defaults config entry.
    #[arg(long, value_parser = mesh_policy::config_entries::Protocol::from_str)]
    pub protocol: Option<mesh_policy::config_entries::Protocol>,
    /// Threads of the data-plane runtime (listeners and byte pumps); 0 means one per CPU.
    /// One is the sidecar default, as Linkerd's proxy has: a connection then never moves
    /// between threads (no cross-core cache traffic on the byte pump) and the proxy leaves the
    /// other cores to its application. A node-wide proxy (transparent host mode) wants more.
    #[arg(
        long,
        default_value_t = 1,
        env = "MESHPROXY_WORKER_THREADS",
        value_name = "N"
    )]
    pub worker_threads: usize,
    /// Transparent mode (eBPF capture): `--transparent` and its options.
    #[command(flatten)]
    pub transparent: crate::transparent::TransparentArgs,
}

fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    mesh_policy::duration::parse_duration(s).map_err(|source| ConfigError::BadDuration {
        value: s.to_string(),
        source,
    })
}

/// An upstream given on the command line: service `name` on loopback port `port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamArg {
    pub name: String,
    pub port: u16,
}

impl FromStr for UpstreamArg {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ConfigError::BadUpstream {
            value: value.to_string(),
            reason,
        };
        let (name, port) = value.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad("NAME must be a service name (letters, digits, - _ .)"));
        }
        let port: u16 = port.parse().map_err(|_| bad("PORT is not a number"))?;
        if port == 0 {
            return Err(bad("PORT must not be 0"));
        }
        Ok(Self {
            name: name.to_string(),
            port,
        })
    }
}

/// The validated configuration of a running proxy.
#[derive(Clone, Serialize)]
pub struct Config {
    pub sidecar_for: String,
    pub agent_addr: SocketAddr,
    /// Never printed or served.
    #[serde(skip)]
    pub token: Option<String>,
    pub upstreams: Vec<UpstreamArg>,
    /// `--admin-addr`; `None`: chosen from the registration ([`admin_addr`]).
    pub admin_addr: Option<SocketAddr>,
    /// Timeouts, denied-connection handling and TLS options (flattened in `/config`).
    #[serde(flatten)]
    pub data_path: DataPathOptions,
    /// `--transparent` and its options, when on.
    pub transparent: Option<crate::transparent::TransparentConfig>,
    /// `--protocol`: overrides the service-defaults entry when set.
    pub protocol: Option<mesh_policy::config_entries::Protocol>,
}

/// The data path's settings that both modes take, from flags (agent mode) or from the config
/// file (static mode, [`crate::static_config`]): one type, so the wiring reads them the same
/// way whichever mode filled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DataPathOptions {
    /// Timeout of a TCP connect to an upstream instance or to the local application.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Timeout of a TLS handshake, inbound or outbound.
    #[serde(with = "secs")]
    pub handshake_timeout: Duration,
    /// On SIGTERM, how long live connections may take to finish.
    #[serde(with = "secs")]
    pub drain_timeout: Duration,
    /// Report live inbound connections a policy change denies instead of closing them.
    pub keep_denied_connections: bool,
    /// TLS settings besides certificates (session resumption).
    pub tls: crate::identity::TlsOptions,
}

/// Durations serialized as Go-style strings ("5s") in `/config`.
pub(crate) mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&mesh_policy::duration::format_duration(*d))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("sidecar_for", &self.sidecar_for)
            .field("agent_addr", &self.agent_addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("upstreams", &self.upstreams)
            .field("admin_addr", &self.admin_addr)
            .field("data_path", &self.data_path)
            .field("transparent", &self.transparent)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Config {
    /// Validates the flags of `meshproxy run`.
    pub fn from_args(a: RunArgs) -> Result<Self, ConfigError> {
        let sidecar_for = a.sidecar_for.unwrap_or_default();
        if sidecar_for.trim().is_empty() {
            return Err(ConfigError::EmptySidecarFor);
        }
        for (flag, d) in [
            ("connect-timeout", a.connect_timeout),
            ("handshake-timeout", a.handshake_timeout),
            ("drain-timeout", a.drain_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { flag });
            }
        }
        if let Some(addr) = a.admin_addr.filter(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::AdminNotLoopback { addr });
        }
        let mut seen = std::collections::HashSet::new();
        for u in &a.upstreams {
            if !seen.insert(u.name.as_str()) {
                return Err(ConfigError::DuplicateUpstream {
                    name: u.name.clone(),
                });
            }
        }
        let transparent = a.transparent.validate()?;
        Ok(Self {
            transparent,
            protocol: a.protocol,
            sidecar_for,
            agent_addr: a.agent_addr,
            token: a.token.filter(|t| !t.is_empty()),
            upstreams: a.upstreams,
            admin_addr: a.admin_addr,
            data_path: DataPathOptions {
                connect_timeout: a.connect_timeout,
                handshake_timeout: a.handshake_timeout,
                drain_timeout: a.drain_timeout,
                keep_denied_connections: a.keep_denied_connections,
                tls: crate::identity::TlsOptions {
                    resumption: !a.no_tls_resumption,
                    cipher_suites: a.tls_cipher_suites.unwrap_or_default(),
                },
            },
        })
    }
}

/// The key of a sidecar registration's `Proxy.Config` that sets its admin address.
pub const ADMIN_CONFIG_KEY: &str = "admin_addr";

/// Where the admin listener binds: `--admin-addr`, else the registration's
/// `Proxy.Config.admin_addr` (a per-service choice an operator makes in the registration, where
/// anyone reading the catalog finds it), else port 0 on 127.0.0.1: the OS picks a free port, so
/// any number of sidecars start side by side with default flags (the ready line announces it).
/// A registered value must be a loopback `IP:PORT` string: the registration is not trusted to
/// open the admin port beyond the host.
pub fn admin_addr(
    flag: Option<SocketAddr>,
    registered: Option<&serde_json::Value>,
) -> Result<SocketAddr, ConfigError> {
    if let Some(a) = flag {
        return Ok(a);
    }
    let Some(v) = registered else {
        return Ok(SocketAddr::from(([127, 0, 0, 1], 0)));
    };
    let bad = |reason| ConfigError::RegisteredAdmin {
        value: v.to_string(),
        reason,
    };
    let addr: SocketAddr = v
        .as_str()
        .ok_or_else(|| bad("is not a string"))?
        .parse()
        .map_err(|_| bad("is not an IP:PORT address"))?;
    if !addr.ip().is_loopback() {
        return Err(bad(
            "is not a loopback address; the admin port must stay local",
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Run(a) = cli.command else {
            return Err("not run".into());
        };
        Config::from_args(*a).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&[
            "meshproxy",
            "run",
            "--sidecar-for",
            "web",
            "--upstream",
            "db:9191",
            "--upstream",
            "cache:9192",
            "--drain-timeout",
            "2s",
            "--token",
            "secret",
        ])
        .unwrap();
        assert_eq!(c.sidecar_for, "web");
        assert_eq!(c.agent_addr, "127.0.0.1:8500".parse().unwrap());
        assert_eq!(c.admin_addr, None, "chosen from the registration at start");
        assert_eq!(c.data_path.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.data_path.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[1].name, "cache");
        assert!(!c.data_path.keep_denied_connections);
        assert!(
            c.data_path.tls.resumption,
            "TLS resumption is on by default"
        );
        let off = parse(&[
            "meshproxy",
            "run",
            "--sidecar-for",
            "web",
            "--no-tls-resumption",
        ]);
        assert!(!off.unwrap().data_path.tls.resumption);
        assert!(!format!("{c:?}").contains("secret"));
        assert!(!serde_json::to_string(&c).unwrap().contains("secret"));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--upstream",
                "db",
            ][..],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--upstream",
                "db:0",
            ],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--upstream",
                ":80",
            ],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--upstream",
                "d b:80",
            ],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--upstream",
                "db:1",
                "--upstream",
                "db:2",
            ],
            &["meshproxy", "run", "--sidecar-for", " "],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--drain-timeout",
                "0s",
            ],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--drain-timeout",
                "x",
            ],
            &[
                "meshproxy",
                "run",
                "--sidecar-for",
                "web",
                "--admin-addr",
                "0.0.0.0:1",
            ],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn cipher_suites_are_a_flag_in_agent_mode() {
        let c = parse(&[
            "meshproxy",
            "run",
            "--sidecar-for",
            "web",
            "--tls-cipher-suites",
            "TLS_AES_128_GCM_SHA256,TLS_CHACHA20_POLY1305_SHA256",
        ])
        .unwrap();
        assert_eq!(
            format!("{:?}", c.data_path.tls.cipher_suites),
            r#"["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]"#
        );
        let bad = parse(&[
            "meshproxy",
            "run",
            "--sidecar-for",
            "web",
            "--tls-cipher-suites",
            "RC4-MD5",
        ]);
        assert!(bad.is_err());
        assert!(
            parse(&["meshproxy", "run", "--sidecar-for", "web"])
                .unwrap()
                .data_path
                .tls
                .cipher_suites
                .is_default()
        );
    }

    #[test]
    fn the_admin_address_comes_from_the_flag_the_registration_or_the_os() {
        let flag: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let reg = serde_json::json!("127.0.0.2:7001");
        assert_eq!(admin_addr(Some(flag), Some(&reg)).unwrap(), flag);
        assert_eq!(
            admin_addr(None, Some(&reg)).unwrap().to_string(),
            "127.0.0.2:7001"
        );
        assert_eq!(admin_addr(None, None).unwrap().to_string(), "127.0.0.1:0");
        for (bad, why) in [
            (serde_json::json!("0.0.0.0:7001"), "loopback"),
            (serde_json::json!("10.0.0.1:7001"), "loopback"),
            (serde_json::json!(7001), "not a string"),
            (serde_json::json!("localhost"), "IP:PORT"),
        ] {
            let e = admin_addr(None, Some(&bad)).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("--admin-addr"), "{bad}: {e}");
        }
    }

    #[test]
    fn config_and_sidecar_for_are_exclusive() {
        let both = [
            "meshproxy",
            "run",
            "--sidecar-for",
            "web",
            "--config",
            "p.json",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        assert!(Cli::try_parse_from(["meshproxy", "run"]).is_err());
        let with_flag = [
            "meshproxy",
            "run",
            "--config",
            "p.json",
            "--drain-timeout",
            "1s",
        ];
        assert!(Cli::try_parse_from(with_flag).is_err());
        let cli = Cli::try_parse_from(["meshproxy", "run", "--config", "p.json"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("p.json")));
    }
}
