//! `anti_entropy`: how soon a service registered through a client agent is visible in the
//! catalog, against a direct catalog register round trip measured in the same run.
//!
//! Acceptance figure (issue 15, point 6): "register 100 services one by one through the agent
//! and measure until each is visible in `/v1/catalog/service/:name`: p50 ≤ 5 ms, p99 ≤ 20 ms".
//!
//! Setup: one in-process server bootstrapping alone and a separate in-process client agent
//! (its own HTTP API, its anti-entropy over its one gRPC connection). Per round, untimed: read
//! `/v1/catalog/service/svc-N` on the server for its index and park a blocking query on it.
//! Timed: `PUT /v1/agent/service/register` of `svc-N` with a sidecar (`Connect.SidecarService`,
//! so one registration is two catalog services, as a mesh deploys) until the parked query (re-
//! parked if woken by something else) shows `svc-N`, and until `svc-N-sidecar-proxy` shows too.
//! Then one more blocking query on `svc-N` from the index it answered, with a short wait: if it
//! returns early with the same instances, a write trailing the sync woke it for nothing (what
//! one batched write per sync pass is meant to remove); those are counted.
//!
//! Baseline: `PUT /v1/catalog/register` of one service straight to the server, the same
//! number of times, each after the same idle pause.
//!
//! Everything listens on 127.0.0.1 with OS-chosen ports; data lives in one temporary directory
//! removed at exit; every loop is bounded by a count and a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, HttpConn, Samples, Table, ensure_in, load_average, load_average_json,
    load_average_text, percentile_f64, ratio, with_server_and_agent,
};

/// How long the server may take to lead with a CA, and the agent to connect and sync.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The acceptance targets.
const TARGET_P50_MS: f64 = 5.0;
const TARGET_P99_MS: f64 = 20.0;
/// Untimed pause before each timed write (the parked query reaches its handler meanwhile).
const PARK_DELAY: Duration = Duration::from_millis(20);
/// Longest a registration may take to show before the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// `wait` of the query that detects a write trailing the sync.
const TRAILING_WAIT: &str = "150ms";
/// Cap on each phase, whatever `--services` says.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// Anti-entropy latency on a client agent, against the catalog write round trip.
#[derive(Debug, Parser)]
#[command(name = "anti_entropy")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Services to register one by one (at most 1,000).
    #[arg(long, default_value_t = 100)]
    services: usize,
}

#[derive(Debug, Default)]
struct Measured {
    baseline: Samples,
    visible: Samples,
    with_sidecar: Samples,
    agent_rtt: Samples,
    /// Queries on a just-visible service woken early with nothing changed.
    trailing_wakes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_in("services", args.services, 1..=1_000)?;
    let load_start = load_average();
    let m = with_server_and_agent(
        &args.common,
        "mesh-bench-anti-entropy-",
        READY_TIMEOUT,
        |server, agent| measure(server, agent, args.services),
    )
    .await?;
    let load_end = load_average();

    let visible = m.visible.sorted();
    let p50 = percentile_f64(&visible, 50.0);
    let p99 = percentile_f64(&visible, 99.0);
    let base = m.baseline.median();
    let met = visible.len() == args.services && p50 <= TARGET_P50_MS && p99 <= TARGET_P99_MS;
    if args.common.json {
        let json = serde_json::json!({
            "bench": "anti_entropy",
            "services": args.services,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "visible_after_agent_register": m.visible.json(),
            "visible_with_sidecar": m.with_sidecar.json(),
            "agent_register_rtt": m.agent_rtt.json(),
            "baseline_catalog_register_rtt": m.baseline.json(),
            "trailing_wakes": m.trailing_wakes,
            "ratio_p50_to_baseline_p50": ratio(p50, base),
            "ratio_p99_to_baseline_p50": ratio(p99, base),
            "target_p50_ms": TARGET_P50_MS,
            "target_p99_ms": TARGET_P99_MS,
            "target_met": met,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "anti_entropy: 1 server + 1 client agent on 127.0.0.1, {} services registered one by \
         one through the agent, each with a sidecar",
        args.services
    );
    println!("start {}", load_average_text(load_start));
    let mut table = Table::new(["latency", "n", "min", "median", "p90", "p99", "max"]);
    table.row(
        m.visible
            .row("agent register -> in /v1/catalog/service/:name"),
    );
    table.row(
        m.with_sidecar
            .row("agent register -> service and sidecar in catalog"),
    );
    table.row(m.agent_rtt.row("agent register round trip"));
    table.row(
        m.baseline
            .row("baseline: direct catalog register round trip"),
    );
    print!("{}", table.render());
    println!("end   {}", load_average_text(load_end));
    println!(
        "queries on a just-visible service woken by a trailing write: {} of {}",
        m.trailing_wakes,
        visible.len()
    );
    println!(
        "ratio = p50 visible / p50 baseline = {:.2}, p99 visible / p50 baseline = {:.2}",
        ratio(p50, base),
        ratio(p99, base)
    );
    println!(
        "p50 {p50:.3} ms (target ≤ {TARGET_P50_MS} ms), p99 {p99:.3} ms (target ≤ \
         {TARGET_P99_MS} ms) -> {}",
        if met { "target met" } else { "TARGET MISSED" }
    );
    Ok(())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Whether a `/v1/catalog/service/:name` answer lists at least one instance.
fn listed(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// A catalog read of `service` on the server: its index and whether it lists an instance.
async fn catalog(conn: &mut HttpConn, service: &str, query: &str) -> anyhow::Result<(u64, bool)> {
    let r = conn
        .get(&format!("/v1/catalog/service/{service}{query}"))
        .await?;
    anyhow::ensure!(r.status == 200, "catalog read answered {}", r.status);
    Ok((r.index.context("no X-Consul-Index")?, listed(&r.body)))
}

/// Blocks on `service` from `index` until it lists an instance; returns that answer's index.
async fn until_listed(conn: &mut HttpConn, service: &str, mut index: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while Instant::now() < deadline {
        let (i, shown) = catalog(conn, service, &format!("?index={index}&wait=10s")).await?;
        if shown {
            return Ok(i);
        }
        index = i;
    }
    anyhow::bail!("{service} not in the catalog after {ROUND_TIMEOUT:?}")
}

fn body(v: serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&v).expect("JSON value serializes"))
}

async fn measure(server: SocketAddr, agent: SocketAddr, n: usize) -> anyhow::Result<Measured> {
    let mut direct = HttpConn::connect(server).await?;
    let mut agent_conn = HttpConn::connect(agent).await?;
    let mut m = Measured::default();

    let end = Instant::now() + PHASE_LIMIT;
    for i in 0..n {
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(PARK_DELAY).await;
        let b = body(serde_json::json!({
            "Node": "bench-direct", "Address": "127.0.0.1",
            "Service": {"Service": format!("direct-{i}"), "Port": 9000},
        }));
        let t = Instant::now();
        direct
            .expect_ok(
                http::Method::PUT,
                "/v1/catalog/register",
                String::from_utf8(b.to_vec())?,
            )
            .await?;
        m.baseline.0.push(ms_since(t));
    }

    let end = Instant::now() + PHASE_LIMIT;
    for i in 0..n {
        if Instant::now() >= end {
            break;
        }
        let name = format!("svc-{i}");
        let sidecar = format!("{name}-sidecar-proxy");
        let (index, _) = catalog(&mut direct, &name, "").await?;
        let mut watcher = HttpConn::connect(server).await?;
        let watch_name = name.clone();
        let watch = tokio::spawn(async move {
            let r = until_listed(&mut watcher, &watch_name, index).await;
            (r, Instant::now(), watcher)
        });
        tokio::time::sleep(PARK_DELAY).await;
        let reg = serde_json::json!({
            "Name": name, "Port": 10_000 + i,
            "Connect": {"SidecarService": {}},
        });
        let t = Instant::now();
        agent_conn
            .expect_ok(
                http::Method::PUT,
                "/v1/agent/service/register",
                reg.to_string(),
            )
            .await?;
        m.agent_rtt.0.push(ms_since(t));
        let (seen, at, mut watcher) = tokio::time::timeout(ROUND_TIMEOUT, watch)
            .await
            .context("watch timed out")??;
        let seen = seen?;
        m.visible.0.push((at - t).as_secs_f64() * 1e3);
        let (si, sidecar_now) = catalog(&mut direct, &sidecar, "").await?;
        if !sidecar_now {
            until_listed(&mut direct, &sidecar, si).await?;
        }
        m.with_sidecar.0.push(ms_since(t));
        // A query from the index the service answered at: an early return with the service
        // still listed (nothing of it changed) is a wake by a write trailing the sync.
        let q = format!("?index={seen}&wait={TRAILING_WAIT}");
        let (after, shown) = catalog(&mut watcher, &name, &q).await?;
        if after != seen && shown {
            m.trailing_wakes += 1;
        }
    }
    Ok(m)
}
