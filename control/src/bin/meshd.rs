//! `meshd`: the control-plane daemon. `meshd server` runs one Raft server; `meshd dev` runs a
//! single-node server with its data in a temporary directory, for trying the mesh out.
//!
//! Every subcommand also reads configuration files with Consul's key names (`--config-file`,
//! `--config-dir`; `overlay`), under its flags.
//!
//! Stdout carries machine-readable lines only: `meshd: node N listening rpc=A http=B` and
//! `meshd: node N ready leader=A trust_domain=T` (see `main`).

use std::net::SocketAddr;
use std::path::PathBuf;

#[path = "meshd/overlay.rs"]
mod overlay;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mesh_control::intentions::DefaultPolicy;
use mesh_control::server::{AclConfig, Server, ServerConfig};
use mesh_control::tls::TlsFiles;

#[derive(Parser)]
#[command(name = "meshd", version, about = "Mesh control plane daemon")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a control-plane server (a Raft member).
    Server(ServerArgs),
    /// Run a single-node server for development (data in a temporary directory).
    Dev(DevArgs),
    /// Run a client agent: the local HTTP API, cached, with one connection to the servers.
    /// Its services and checks are kept in --data-dir and restored at start.
    Agent(AgentArgs),
}

#[derive(Parser)]
struct AgentArgs {
    /// gRPC address of a server (repeatable; the agent fails over between them). Required,
    /// here or as `retry_join` in a config file.
    #[arg(long = "server")]
    servers: Vec<String>,
    /// This node's name (or `node_name` in a config file).
    #[arg(long)]
    node: Option<String>,
    /// Directory for the agent's state: the services and checks registered through its HTTP
    /// API, with their status, restored when the agent restarts. Required (as Consul's
    /// `-data-dir`; or `data_dir` in a config file): without it a restart would drop every
    /// service of the node.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    #[arg(long, default_value = "127.0.0.1:8500")]
    http_addr: SocketAddr,
    /// This node's address in the catalog.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Evict cache entries unused for this long.
    #[arg(long, default_value = "72h", value_parser = duration)]
    cache_ttl: std::time::Duration,
    /// Re-issue leaves within this window after a CA root rotation.
    #[arg(long, default_value = "30s", value_parser = duration)]
    leaf_rotation_jitter: std::time::Duration,
    /// The agent's ACL token: what its anti-entropy, heartbeats and watches act as (it must
    /// cover this node and its services). Empty is the anonymous token. Change it at runtime
    /// with `PUT /v1/agent/token/agent`.
    #[arg(
        long,
        env = "MESH_AGENT_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    token: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// Get this agent's RPC client certificate from the servers (Consul's
    /// `auto_encrypt.tls`): needs only --tls-ca-file and a --token with `node:write` on
    /// --node; the key is generated here and the certificate renewed before it expires.
    #[arg(long, conflicts_with = "tls_cert_file")]
    auto_encrypt: bool,
    #[command(flatten)]
    config: ConfigArgs,
    /// `limits { ... }` and `cache { ... }` from the config files (no flags).
    #[arg(skip)]
    limits: mesh_control::config_file::Limits,
}

/// Configuration files, read in the order given; flags override them.
#[derive(clap::Args)]
struct ConfigArgs {
    /// A configuration file with Consul's key names, HCL (`.hcl`) or JSON (`.json`).
    /// Repeatable: later files override earlier ones, lists (`retry_join`) add up.
    #[arg(long, value_name = "FILE")]
    config_file: Vec<PathBuf>,
    /// A directory whose `.hcl` and `.json` files are read in lexical order (not its
    /// subdirectories). Repeatable.
    #[arg(long, value_name = "DIR")]
    config_dir: Vec<PathBuf>,
}

/// Mutual TLS on the RPC port (Consul's `tls.defaults`); verification of the peer's chain and
/// of the server name `server.<dc>.mesh` is always on once a CA file is given.
#[derive(clap::Args)]
struct TlsArgs {
    /// The CA that issued the servers' and agents' RPC certificates (PEM; `meshctl tls ca
    /// create`). Turns on mutual TLS for the RPC port.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// This process's RPC certificate (PEM; `meshctl tls cert create -server|-client`).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM, mode 0600).
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, once flags and config files are merged (so checked here, not by clap):
    /// a certificate, a key or auto-encrypt without a CA file is refused.
    fn files(&self, auto_encrypt: bool) -> anyhow::Result<Option<TlsFiles>> {
        let Some(ca_file) = self.tls_ca_file.clone() else {
            anyhow::ensure!(
                self.tls_cert_file.is_none() && self.tls_key_file.is_none() && !auto_encrypt,
                "--tls-cert-file, --tls-key-file and auto-encrypt need --tls-ca-file (the CA \
                 that verifies the servers)"
            );
            return Ok(None);
        };
        Ok(Some(TlsFiles {
            ca_file,
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }))
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    mesh_control::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Parser)]
struct ServerArgs {
    /// Unique name of this server (or `node_name` in a config file).
    #[arg(long)]
    node: Option<String>,
    /// Directory for the Raft log, vote and snapshots, and (in `agent/`) the embedded agent's
    /// services and checks (or `data_dir` in a config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC address for Raft and agents.
    #[arg(long, default_value = "127.0.0.1:8300")]
    bind: SocketAddr,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8500")]
    http_addr: SocketAddr,
    /// Number of servers to wait for before bootstrapping the cluster.
    #[arg(long, default_value_t = 1)]
    bootstrap_expect: usize,
    /// gRPC address of another server (repeatable).
    #[arg(long)]
    join: Vec<String>,
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Snapshot and compact the log every this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_threshold: u64,
    /// Re-issue the embedded agent's leaves within this window after a CA root rotation.
    #[arg(long, default_value = "30s", value_parser = duration)]
    leaf_rotation_jitter: std::time::Duration,
    /// Run without ACLs: any process that reaches the HTTP or gRPC port may then mint any
    /// service's certificate and change any intention. Prints a warning at start.
    #[arg(long, conflicts_with = "acl")]
    acl_disabled: bool,
    /// Serve Raft and the agent API in plaintext on a non-loopback `--bind` (refused without
    /// it unless --tls-ca-file is given). Prints a warning at start.
    #[arg(long, conflicts_with = "tls_ca_file")]
    insecure_plaintext_rpc: bool,
    /// File holding the key that seals CA private keys (see issue 13; Consul's `encrypt`
    /// gives the key itself in a config file).
    #[arg(long)]
    encrypt_key_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Let agents that have only the CA file and an ACL token get a client certificate from
    /// this server (Consul's `auto_encrypt.allow_tls`).
    #[arg(long)]
    auto_encrypt_allow_tls: bool,
    #[command(flatten)]
    acl: AclArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// `limits { ... }` and `cache { ... }` from the config files (no flags).
    #[arg(skip)]
    limits: mesh_control::config_file::Limits,
}

#[derive(Parser)]
struct DevArgs {
    /// Keep data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8500")]
    http_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8300")]
    bind: SocketAddr,
    #[arg(long, default_value = "dev")]
    node: String,
    /// Re-issue the agent's leaves within this window after a CA root rotation.
    #[arg(long, default_value = "30s", value_parser = duration)]
    leaf_rotation_jitter: std::time::Duration,
    /// Serve Raft and the agent API in plaintext on a non-loopback `--bind` (refused without
    /// it unless --tls-ca-file is given). Prints a warning at start.
    #[arg(long, conflicts_with = "tls_ca_file")]
    insecure_plaintext_rpc: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// Let agents that have only the CA file and an ACL token get a client certificate from
    /// this server (Consul's `auto_encrypt.allow_tls`).
    #[arg(long, requires = "tls_ca_file")]
    auto_encrypt_allow_tls: bool,
    #[command(flatten)]
    acl: AclArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// `limits { ... }` and `cache { ... }` from the config files (no flags).
    #[arg(skip)]
    limits: mesh_control::config_file::Limits,
    #[command(flatten)]
    encrypt: EncryptArgs,
}

/// ACL flags of `meshd server` and `meshd dev`. A server enforces ACLs unless told
/// `--acl-disabled`; `meshd dev` only with `--acl` (as Consul's dev agent), so the demo stays
/// two commands.
#[derive(clap::Args)]
struct AclArgs {
    /// Enforce ACLs (the default for `meshd server`; opt-in for `meshd dev`).
    #[arg(long)]
    acl: bool,
    /// What a token's rules leave undecided: allow or deny. `allow` prints a warning at start.
    #[arg(long, default_value = "deny", value_parser = default_policy)]
    acl_default_policy: DefaultPolicy,
}

impl AclArgs {
    fn config(&self, enabled: bool) -> AclConfig {
        AclConfig {
            enabled,
            default_policy: self.acl_default_policy,
        }
    }
}

/// The encryption key of `meshd server` and `meshd dev`.
#[derive(clap::Args)]
struct EncryptArgs {
    /// File holding the cluster's encryption key (base64 of 32 random bytes, from `meshctl
    /// keygen`; mode 0600): CA private keys are sealed with it (AES-256-GCM) before they enter
    /// the Raft log and snapshots. Every server of a cluster needs the same key.
    #[arg(long, value_name = "FILE")]
    encrypt_key_file: Option<PathBuf>,
}

impl EncryptArgs {
    fn load(&self) -> anyhow::Result<Option<mesh_control::seal::SealKey>> {
        load_encrypt_key(self.encrypt_key_file.as_deref(), None)
    }
}

/// The sealing key from `--encrypt-key-file` (or a config file's `encrypt_key_file`), or
/// given inline by a config file's `encrypt` (at most one of them is set, see `overlay`).
fn load_encrypt_key(
    file: Option<&std::path::Path>,
    inline: Option<mesh_control::config_file::Secret>,
) -> anyhow::Result<Option<mesh_control::seal::SealKey>> {
    if let Some(path) = file {
        return Ok(Some(mesh_control::seal::key_file::load(path)?));
    }
    Ok(inline
        .map(|s| mesh_control::seal::key_file::parse_inline(s.expose()))
        .transpose()?)
}

/// Refuses a plaintext RPC port reachable from other hosts unless `--insecure-plaintext-rpc`
/// (then warns): anyone who reaches it can join as a server and so receive the CA's key.
fn check_rpc_bind(bind: SocketAddr, tls: bool, insecure: bool) -> anyhow::Result<()> {
    if bind.ip().is_loopback() || tls {
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to serve Raft and the agent API in plaintext on {bind}, which is not a \
             loopback address: any host that reaches it could join as a server and read the CA \
             key. Give the RPC port TLS (--tls-ca-file, --tls-cert-file, --tls-key-file; \
             `meshctl tls` makes them), bind to 127.0.0.1, or pass --insecure-plaintext-rpc to \
             accept the risk"
        );
    }
    tracing::warn!(
        %bind,
        "PLAINTEXT RPC on a non-loopback address (--insecure-plaintext-rpc): Raft, joins and the \
         agent API are unauthenticated and unencrypted on the network"
    );
    Ok(())
}

/// Says loudly, at start, when this server protects less than its default would.
fn warn_weak_acl(acl: &AclConfig, dev: bool) {
    if !acl.enabled {
        if !dev {
            tracing::warn!(
                "ACLs are DISABLED (--acl-disabled or acl.enabled = false): any process that reaches this server's \
                 HTTP or gRPC port can obtain any service's certificate and key, change \
                 intentions, rotate the CA and remove servers"
            );
        }
    } else if acl.default_policy == DefaultPolicy::Allow {
        tracing::warn!(
            "ACL default policy is ALLOW (--acl-default-policy allow or acl.default_policy): requests without a \
             token, and anything a token's rules do not mention, are allowed"
        );
    }
}

fn default_policy(s: &str) -> Result<DefaultPolicy, String> {
    match s {
        "allow" => Ok(DefaultPolicy::Allow),
        "deny" => Ok(DefaultPolicy::Deny),
        other => Err(format!("expected allow or deny, got {other:?}")),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run_agent(mut a: AgentArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    use mesh_control::agent::{Agent, AgentConfig, TokenKind};
    let default_token = overlay::agent(&mut a, matches)?;
    let node = overlay::required(a.node, "--node", "node_name")?;
    anyhow::ensure!(
        !a.servers.is_empty(),
        "missing --server: pass it (repeatable), or set retry_join in a config file"
    );
    let mut c = AgentConfig::new(node.clone(), a.servers);
    c.datacenter = a.datacenter;
    c.http_addr = Some(a.http_addr);
    c.address = a.address;
    c.cache_ttl = a.cache_ttl;
    c.leaf_rotation_jitter = a.leaf_rotation_jitter;
    a.limits.apply_to_agent(&mut c);
    c.data_dir = Some(overlay::required(a.data_dir, "--data-dir", "data_dir")?);
    anyhow::ensure!(
        mesh_control::agent::Credential::token(Some(&a.token)).is_ok(),
        "--token / MESH_AGENT_TOKEN must be visible ASCII"
    );
    let tls = match a.tls.files(a.auto_encrypt)? {
        None => None,
        Some(files) => Some(
            mesh_control::tls::RpcTls::agent(&files, &c.datacenter)
                .context("loading the RPC TLS files")?,
        ),
    };
    c.token = mesh_control::agent::AgentToken(a.token.clone());
    let mut renewal = None;
    if let Some(tls) = &tls {
        anyhow::ensure!(
            a.auto_encrypt || a.tls.tls_cert_file.is_some(),
            "with --tls-ca-file the agent needs its certificate: --tls-cert-file and \
             --tls-key-file (`meshctl tls cert create -client`), or --auto-encrypt"
        );
        if a.auto_encrypt {
            renewal = Some(auto_encrypt_first(tls, &c.servers, &a.token, &node).await?);
        }
    }
    c.tls = tls.clone();
    let handle = Agent::start(c)
        .await
        .with_context(|| format!("starting agent {node}"))?;
    if let (Some(tls), Some(expiry)) = (tls, renewal) {
        let agent = handle.agent.clone();
        mesh_control::agent::auto_encrypt::spawn_renewal(
            tls,
            agent.config.servers.clone(),
            move || agent.conn.identity().credential(),
            node.clone(),
            expiry,
        );
    }
    if let Some(t) = default_token {
        handle
            .agent
            .set_token(TokenKind::Default, t.expose().to_string());
    }
    println!(
        "meshd: agent {} listening http={}",
        node,
        handle.http_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Gets the agent's first certificate through auto-encrypt, retrying while no server
/// answers (they may still be starting); a refusal ends the agent with the server's reason.
async fn auto_encrypt_first(
    tls: &std::sync::Arc<mesh_control::tls::RpcTls>,
    servers: &[String],
    token: &str,
    node: &str,
) -> anyhow::Result<time::OffsetDateTime> {
    use mesh_control::agent::auto_encrypt::{AutoEncryptError, RETRY, obtain};
    let credential = mesh_control::agent::Credential::token(Some(token))
        .map_err(|_| anyhow::anyhow!("--token / MESH_AGENT_TOKEN must be visible ASCII"))?;
    loop {
        let attempt = obtain(tls, servers, credential.clone(), node);
        tokio::select! {
            r = attempt => match r {
                Ok(expiry) => return Ok(expiry),
                Err(e @ AutoEncryptError::Unreachable(_)) => {
                    tracing::warn!(error = %e, "auto-encrypt: retrying");
                }
                Err(e) => return Err(e).context("auto-encrypt"),
            },
            r = wait_for_signal() => {
                r?;
                anyhow::bail!("stopped before auto-encrypt got a certificate");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Set once SIGTERM or SIGINT arrives; the handlers are installed first thing in `main`, so
/// a signal sent right after a `listening` line stops the process cleanly rather than killing
/// it by the default disposition.
static STOP: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();

fn install_signal_handlers() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing SIGINT handler")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    let _ = STOP.set(rx);
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut stop = STOP.get().context("signal handlers not installed")?.clone();
    // An error means the sender is gone, which happens only once a signal was delivered.
    let _ = stop.wait_for(|s| *s).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    install_signal_handlers()?;
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches
        .subcommand()
        .map(|(_, m)| m)
        .context("a subcommand")?;
    let dev = matches!(cli.command, Cmd::Dev(_));
    let (config, _tmp) = match cli.command {
        Cmd::Agent(a) => return run_agent(a, sub).await,
        Cmd::Server(mut a) => {
            let encrypt = overlay::server(&mut a, sub)?;
            let mut c = ServerConfig::new(
                overlay::required(a.node, "--node", "node_name")?,
                overlay::required(a.data_dir, "--data-dir", "data_dir")?,
            );
            c.encrypt_key = load_encrypt_key(a.encrypt_key_file.as_deref(), encrypt)?;
            c.bind = a.bind;
            c.http_addr = a.http_addr;
            c.bootstrap_expect = a.bootstrap_expect;
            c.join = a.join;
            c.datacenter = a.datacenter;
            c.snapshot_threshold = a.snapshot_threshold;
            c.leaf_rotation_jitter = a.leaf_rotation_jitter;
            c.acl = a.acl.config(!a.acl_disabled);
            c.tls = a.tls.files(false)?;
            c.auto_encrypt_allow_tls = a.auto_encrypt_allow_tls;
            c.http_limits = a.limits.http();
            check_rpc_bind(c.bind, c.tls.is_some(), a.insecure_plaintext_rpc)?;
            (c, None)
        }
        Cmd::Dev(mut a) => {
            let datacenter = overlay::dev(&mut a, sub)?;
            let (dir, tmp) = match a.data_dir {
                Some(d) => (d, None),
                None => {
                    let t = mesh_control::data_dir::tempdir("meshd-dev-", None)
                        .context("creating a temporary data directory")?;
                    (t.path().to_path_buf(), Some(t))
                }
            };
            let mut c = ServerConfig::new(a.node, dir);
            if let Some(dc) = datacenter {
                c.datacenter = dc;
            }
            c.bind = a.bind;
            c.http_addr = a.http_addr;
            c.bootstrap_expect = 1;
            c.leaf_rotation_jitter = a.leaf_rotation_jitter;
            c.acl = a.acl.config(a.acl.acl);
            c.encrypt_key = a.encrypt.load()?;
            c.tls = a.tls.files(false)?;
            c.auto_encrypt_allow_tls = a.auto_encrypt_allow_tls;
            c.http_limits = a.limits.http();
            check_rpc_bind(c.bind, c.tls.is_some(), a.insecure_plaintext_rpc)?;
            // A single node has nobody to wait for: elect at once.
            c.election_timeout_min = std::time::Duration::from_millis(150);
            c.election_timeout_max = std::time::Duration::from_millis(300);
            c.heartbeat = std::time::Duration::from_millis(50);
            (c, tmp)
        }
    };
    warn_weak_acl(&config.acl, dev);
    let name = config.node.clone();
    let handle = Server::start(config)
        .await
        .with_context(|| format!("starting server {name}"))?;
    // Machine-readable lines for scripts and tests. `listening` carries the ports (maybe chosen
    // by the OS); `ready` comes once a leader is known and the CA is initialized, so leaves
    // and intentions (with the trust domain) can be served (issue 10 point 2). A server of a
    // cluster says `listening` at once, since its peers may need its ports to form the cluster
    // that makes it ready; `meshd dev` has no peers and says both when ready, so whoever took
    // `listening` as "ready" is right.
    let listening = format!(
        "meshd: node {name} listening rpc={} http={}",
        handle.rpc_addr, handle.http_addr
    );
    if !dev {
        println!("{listening}");
    }
    // The server may also stop by itself (`Server::fail`, e.g. a peer with another key).
    let stopped = handle.server.shutdown_signal();
    tokio::select! {
        r = handle.server.wait_ready() => {
            if dev {
                println!("{listening}");
            }
            println!(
                "meshd: node {name} ready leader={} trust_domain={}",
                r.leader_rpc_addr, r.trust_domain
            );
            tokio::select! {
                r = wait_for_signal() => r?,
                _ = stopped => {}
            }
        }
        r = wait_for_signal() => r?,
        _ = handle.server.shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    let fatal = handle.server.fatal_error();
    handle.shutdown().await;
    match fatal {
        Some(reason) => anyhow::bail!("server {name} stopped: {reason}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_rpc_bind;

    #[test]
    fn plaintext_rpc_only_on_loopback_unless_asked() {
        for ok in ["127.0.0.1:8300", "127.0.0.2:0", "[::1]:8300"] {
            assert!(
                check_rpc_bind(ok.parse().unwrap(), false, false).is_ok(),
                "{ok}"
            );
        }
        for exposed in ["0.0.0.0:8300", "10.0.0.5:8300", "[::]:8300"] {
            let err = check_rpc_bind(exposed.parse().unwrap(), false, false).unwrap_err();
            assert!(
                err.to_string().contains("--insecure-plaintext-rpc"),
                "{err}"
            );
            assert!(check_rpc_bind(exposed.parse().unwrap(), false, true).is_ok());
            assert!(check_rpc_bind(exposed.parse().unwrap(), true, false).is_ok());
        }
    }
}
