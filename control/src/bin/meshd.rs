//! `meshd`: the control-plane daemon. `meshd server` runs one Raft server; `meshd dev` runs a
//! single-node server with its data in a temporary directory, for trying the mesh out.
//!
//! Stdout carries machine-readable lines only: `meshd: node N listening rpc=A http=B` and
//! `meshd: node N ready leader=A trust_domain=T` (see `main`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_control::intentions::DefaultPolicy;
use mesh_control::server::{AclConfig, Server, ServerConfig};

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
    /// gRPC address of a server (repeatable; the agent fails over between them).
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    #[arg(long)]
    node: String,
    /// Directory for the agent's state: the services and checks registered through its HTTP
    /// API, with their status, restored when the agent restarts. Required (as Consul's
    /// `-data-dir`): without it a restart would drop every service of the node.
    #[arg(long, required = true)]
    data_dir: PathBuf,
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
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    mesh_control::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Parser)]
struct ServerArgs {
    /// Unique name of this server.
    #[arg(long)]
    node: String,
    /// Directory for the Raft log, vote and snapshots, and (in `agent/`) the embedded agent's
    /// services and checks.
    #[arg(long)]
    data_dir: PathBuf,
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
    /// it: TLS for the RPC port is not available yet). Prints a warning at start.
    #[arg(long)]
    insecure_plaintext_rpc: bool,
    #[command(flatten)]
    acl: AclArgs,
    #[command(flatten)]
    encrypt: EncryptArgs,
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
    /// it: TLS for the RPC port is not available yet). Prints a warning at start.
    #[arg(long)]
    insecure_plaintext_rpc: bool,
    #[command(flatten)]
    acl: AclArgs,
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
        Ok(self
            .encrypt_key_file
            .as_deref()
            .map(mesh_control::seal::key_file::load)
            .transpose()?)
    }
}

/// Refuses a plaintext RPC port reachable from other hosts unless `--insecure-plaintext-rpc`
/// (then warns): anyone who reaches it can join as a server and so receive the CA's key.
fn check_rpc_bind(bind: SocketAddr, insecure: bool) -> anyhow::Result<()> {
    if bind.ip().is_loopback() {
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to serve Raft and the agent API in plaintext on {bind}, which is not a \
             loopback address: any host that reaches it could join as a server and read the CA \
             key. Bind to 127.0.0.1, or pass --insecure-plaintext-rpc to accept the risk (TLS \
             for the RPC port is not available yet)"
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
                "ACLs are DISABLED (--acl-disabled): any process that reaches this server's \
                 HTTP or gRPC port can obtain any service's certificate and key, change \
                 intentions, rotate the CA and remove servers"
            );
        }
    } else if acl.default_policy == DefaultPolicy::Allow {
        tracing::warn!(
            "ACL default policy is ALLOW (--acl-default-policy allow): requests without a \
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

async fn run_agent(a: AgentArgs) -> anyhow::Result<()> {
    use mesh_control::agent::{Agent, AgentConfig};
    let mut c = AgentConfig::new(a.node.clone(), a.servers);
    c.datacenter = a.datacenter;
    c.http_addr = Some(a.http_addr);
    c.address = a.address;
    c.cache_ttl = a.cache_ttl;
    c.leaf_rotation_jitter = a.leaf_rotation_jitter;
    c.data_dir = Some(a.data_dir);
    anyhow::ensure!(
        mesh_control::agent::Credential::token(Some(&a.token)).is_ok(),
        "--token / MESH_AGENT_TOKEN must be visible ASCII"
    );
    c.token = mesh_control::agent::AgentToken(a.token);
    let handle = Agent::start(c)
        .await
        .with_context(|| format!("starting agent {}", a.node))?;
    println!(
        "meshd: agent {} listening http={}",
        a.node,
        handle.http_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let dev = matches!(cli.command, Cmd::Dev(_));
    let (config, _tmp) = match cli.command {
        Cmd::Agent(a) => return run_agent(a).await,
        Cmd::Server(a) => {
            let mut c = ServerConfig::new(a.node, a.data_dir);
            c.bind = a.bind;
            c.http_addr = a.http_addr;
            c.bootstrap_expect = a.bootstrap_expect;
            c.join = a.join;
            c.datacenter = a.datacenter;
            c.snapshot_threshold = a.snapshot_threshold;
            c.leaf_rotation_jitter = a.leaf_rotation_jitter;
            c.acl = a.acl.config(!a.acl_disabled);
            c.encrypt_key = a.encrypt.load()?;
            check_rpc_bind(c.bind, a.insecure_plaintext_rpc)?;
            (c, None)
        }
        Cmd::Dev(a) => {
            let (dir, tmp) = match a.data_dir {
                Some(d) => (d, None),
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("meshd-dev-")
                        .tempdir()
                        .context("creating a temporary data directory")?;
                    (t.path().to_path_buf(), Some(t))
                }
            };
            let mut c = ServerConfig::new(a.node, dir);
            c.bind = a.bind;
            c.http_addr = a.http_addr;
            c.bootstrap_expect = 1;
            c.leaf_rotation_jitter = a.leaf_rotation_jitter;
            c.acl = a.acl.config(a.acl.acl);
            c.encrypt_key = a.encrypt.load()?;
            check_rpc_bind(c.bind, a.insecure_plaintext_rpc)?;
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
            assert!(check_rpc_bind(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for exposed in ["0.0.0.0:8300", "10.0.0.5:8300", "[::]:8300"] {
            let err = check_rpc_bind(exposed.parse().unwrap(), false).unwrap_err();
            assert!(
                err.to_string().contains("--insecure-plaintext-rpc"),
                "{err}"
            );
            assert!(check_rpc_bind(exposed.parse().unwrap(), true).is_ok());
        }
    }
}
