//! `rpc_tls`: what mutual TLS on the servers' RPC port (issue 13) costs an agent, against the
//! same operations over a plaintext RPC port measured in the same run:
//!
//! * **new connection**: dial a server, (complete the TLS 1.3 handshake with a client
//!   certificate, the server verifying it and the client verifying `server.dc1.mesh`), then
//!   the first RPC (`Catalog.ResolveToken`) on it; one connection at a time, each dropped after.
//!   An agent pays this once per server switch, so it bounds failover, not steady state.
//! * **leaf issuance** through a client agent: `GET /v1/agent/connect/ca/leaf/<new service>`,
//!   which generates a key, sends a CSR over the agent's one RPC connection and waits for the
//!   signature; one request at a time, a new service name each time (always a cache miss).
//!
//! Two single-node servers run in this process on 127.0.0.1 (one plaintext, one with TLS), each
//! with a client agent; their data lives in one temporary directory removed at exit. Every
//! phase is bounded by `--seconds` and by a count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, HttpConn, SHUTDOWN_TIMEOUT, Table, client_agent_config, load_average,
    load_average_json, load_average_text, ms, percentile, ratio, shutdown_agent, shutdown_server,
    single_server_config, start_agent, start_server,
};
use mesh_control::proto::ResolveTokenRequest;
use mesh_control::proto::catalog_client::CatalogClient;
use mesh_control::tls::{RpcTls, TlsFiles, transport};
use tonic::transport::Endpoint;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on operations per phase, whatever the duration.
const MAX_OPS: u64 = 100_000;

/// Mutual TLS on the RPC port against plaintext: new connections and leaf issuance.
#[derive(Debug, Parser)]
#[command(name = "rpc_tls")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// Latencies of one phase.
#[derive(Debug, Default)]
struct Phase {
    samples: Vec<Duration>,
}

impl Phase {
    fn p(&self, q: f64) -> Duration {
        percentile(&self.samples, q)
    }

    fn mean(&self) -> Duration {
        let n = self.samples.len().max(1) as u32;
        self.samples.iter().sum::<Duration>() / n
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.samples.len(),
            "mean_ms": self.mean().as_secs_f64() * 1e3,
            "p50_ms": self.p(50.0).as_secs_f64() * 1e3,
            "p99_ms": self.p(99.0).as_secs_f64() * 1e3,
        })
    }
}

/// Runs `op` one at a time until `duration` or [`MAX_OPS`], recording each latency.
async fn timed<F, Fut>(duration: Duration, mut op: F) -> anyhow::Result<Phase>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + duration;
    let mut phase = Phase::default();
    let mut n = 0;
    while n < MAX_OPS && Instant::now() < deadline {
        let t = Instant::now();
        op(n).await?;
        phase.samples.push(t.elapsed());
        n += 1;
    }
    phase.samples.sort_unstable();
    Ok(phase)
}

/// One new connection to `addr` and its first RPC.
async fn connect_once(addr: SocketAddr, tls: Option<&Arc<RpcTls>>) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let channel = transport::channel(&endpoint, tls);
    CatalogClient::new(channel)
        .resolve_token(ResolveTokenRequest {})
        .await
        .context("first RPC on a new connection")?;
    Ok(())
}

/// The figures of one transport (plaintext or TLS).
struct Figures {
    connect: Phase,
    leaf: Phase,
}

async fn measure(
    dir: &std::path::Path,
    server_tls: Option<TlsFiles>,
    client_tls: Option<TlsFiles>,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let mut config = single_server_config("s1", &dir.join("server"));
    config.tls = server_tls;
    let server = start_server(config, READY_TIMEOUT).await?;
    let rpc = server.rpc_addr;
    let tls = client_tls
        .as_ref()
        .map(|f| RpcTls::agent(f, "dc1"))
        .transpose()?;
    let mut agent_config = client_agent_config("bench-agent", rpc);
    agent_config.tls = tls.clone();
    let run = async {
        let agent = start_agent(agent_config, READY_TIMEOUT).await?;
        let http = agent.http_addr.context("agent HTTP address")?;
        let figures = async {
            connect_once(rpc, tls.as_ref()).await?;
            let connect = timed(duration, |_| connect_once(rpc, tls.as_ref())).await?;
            let mut conn = HttpConn::connect(http).await?;
            let mut leaf = Phase::default();
            let deadline = Instant::now() + duration;
            for n in 0..MAX_OPS {
                if Instant::now() >= deadline {
                    break;
                }
                let path = format!("/v1/agent/connect/ca/leaf/svc-{n}");
                let t = Instant::now();
                let reply = conn.request(http::Method::GET, &path, Bytes::new()).await?;
                leaf.samples.push(t.elapsed());
                anyhow::ensure!(reply.status == 200, "leaf: HTTP {}", reply.status);
            }
            leaf.samples.sort_unstable();
            Ok::<_, anyhow::Error>(Figures { connect, leaf })
        }
        .await;
        shutdown_agent(agent, SHUTDOWN_TIMEOUT).await;
        figures
    }
    .await;
    shutdown_server(server, SHUTDOWN_TIMEOUT).await;
    run
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.common.duration()?;
    let load_start = load_average();
    let dir = args.common.tempdir("mesh-bench-rpc-tls-")?;
    let pki = mesh_benches::pki::Pki::create(dir.path())?;
    let plain = measure(&dir.path().join("plain"), None, None, duration).await?;
    let tls = measure(
        &dir.path().join("tls"),
        Some(pki.server.clone()),
        Some(pki.client.clone()),
        duration,
    )
    .await?;
    drop(dir);
    let load_end = load_average();
    let connect_ratio = ratio(
        tls.connect.p(50.0).as_secs_f64(),
        plain.connect.p(50.0).as_secs_f64(),
    );
    let leaf_ratio = ratio(
        tls.leaf.p(50.0).as_secs_f64(),
        plain.leaf.p(50.0).as_secs_f64(),
    );
    if args.common.json {
        let json = serde_json::json!({
            "bench": "rpc_tls",
            "seconds": duration.as_secs_f64(),
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "connect_plaintext": plain.connect.json(),
            "connect_tls": tls.connect.json(),
            "leaf_plaintext": plain.leaf.json(),
            "leaf_tls": tls.leaf.json(),
            "ratio_connect_p50": connect_ratio,
            "ratio_leaf_p50": leaf_ratio,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "rpc_tls: 1 server + 1 client agent on 127.0.0.1 per transport, {:.1} s per phase",
        duration.as_secs_f64()
    );
    println!("start {}", load_average_text(load_start));
    let mut table = Table::new(["phase", "ops", "mean", "p50", "p99"]);
    for (name, p) in [
        ("new connection + first RPC, plaintext", &plain.connect),
        ("new connection + first RPC, mTLS", &tls.connect),
        ("agent leaf issuance, plaintext", &plain.leaf),
        ("agent leaf issuance, mTLS", &tls.leaf),
    ] {
        table.row([
            name.to_string(),
            p.samples.len().to_string(),
            ms(p.mean()),
            ms(p.p(50.0)),
            ms(p.p(99.0)),
        ]);
    }
    print!("{}", table.render());
    println!("end   {}", load_average_text(load_end));
    println!(
        "ratio = mTLS p50 / plaintext p50 = {connect_ratio:.2} (new connection), \
         {leaf_ratio:.2} (leaf issuance)"
    );
    Ok(())
}
