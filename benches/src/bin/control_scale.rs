//! `control_scale`: how per-object costs of the control plane grow with the catalog (issue 17).
//!
//! For each N (1,000 and 10,000; 50,000 with `--big`) a fresh 3-server cluster and one client
//! agent (real `meshd` processes, the binary given by `--meshd`, so old and new builds can be
//! compared) are loaded with N services (one check each) and N intentions through the HTTP API,
//! then the bench measures, in this order:
//!
//! - p50/p99 of single-object reads on the leader: `health/service/<one>` (default, i.e.
//!   linearizable, and `?stale`), `connect/intentions/match` for one destination and
//!   `catalog/service/<one>`, plus the default-mode health read through a follower (its read
//!   index comes from the leader);
//! - intention writes/s with 0, then 100, then 1,000 destinations watched by the agent (it
//!   watches a destination once `POST /v1/agent/connect/authorize` asked for it); the first
//!   authorize per destination (the agent's cache fill) and the steady one on a warm cache;
//! - agent register → visible in the catalog (a `?stale` poll of the leader);
//! - the leader's data-directory size against its latest snapshot, after writing until a
//!   snapshot is built past the load (the size comes from the server's `snapshot built` log).
//!
//! Then it prints the growth 1k → 10k of every latency and one pass/fail line per acceptance
//! target of issue 17. Everything listens on 127.0.0.1; data lives in a temporary directory
//! removed at exit; every process is stopped by PID; every loop is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mesh_benches::proxy_chain::procs::cpu_seconds;
use mesh_benches::{
    CommonArgs, HttpConn, Table, bytes_text, ensure_in, load_average, load_average_json,
    load_average_text, percentile, rate, ratio,
};
use mesh_tests::process::{Meshd, free_port, meshd_command_from, server_args, strip_ansi};

/// How long the cluster may take to elect, seat three voters and create its CA.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any one phase (a load, a write round, a wait for a snapshot) may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts per write while the cluster has no leader.
const WRITE_TRIES: u32 = 100;
/// Services per catalog node.
const SERVICES_PER_NODE: usize = 10;
/// Watched-destination counts of the write rounds, in order.
const WATCHED: [usize; 3] = [0, 100, 1000];
/// The log filter of the servers: quiet, except the store's `snapshot built` line.
const SERVER_LOG: &str = "warn,openraft=off,mesh_control::store=info";
/// The agent's log filter: quiet, except failed anti-entropy passes (reported with the
/// figures, as they explain a register -> visible tail).
const AGENT_LOG: &str = "warn,openraft=off,mesh_control::agent::sync=debug";
/// The targets.
const GROWTH_MAX: f64 = 1.5;
const LINEARIZABLE_P99_MAX_MS: f64 = 5.0;
const REGISTER_P50_MAX_MS: f64 = 5.0;
const WATCHED_WRITES_MIN: f64 = 0.8;
const DISK_RATIO_MAX: f64 = 2.0;

/// Control-plane costs at 1k and 10k (and 50k) services and intentions.
#[derive(Debug, Parser)]
#[command(name = "control_scale")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The `meshd` binary to measure (default: `meshd` in this bench's own target directory).
    #[arg(long)]
    meshd: Option<PathBuf>,
    /// Also measure N = 50,000.
    #[arg(long)]
    big: bool,
    /// Measure only these N (comma-separated, e.g. `--only 1000` to study one size; the growth
    /// lines need 1,000 and 10,000).
    #[arg(long, value_delimiter = ',', conflicts_with = "big")]
    only: Vec<usize>,
    /// Samples per latency figure.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Intention writes per write round.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Concurrent HTTP writers loading the cluster and in the write rounds.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Agent registrations timed for register → visible.
    #[arg(long, default_value_t = 50)]
    registrations: usize,
}

/// Sorted latency samples of one figure.
#[derive(Debug, Default, Clone)]
struct Lat(Vec<Duration>);

impl Lat {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self(v)
    }
    fn p50(&self) -> f64 {
        percentile(&self.0, 50.0).as_secs_f64() * 1e3
    }
    fn p99(&self) -> f64 {
        percentile(&self.0, 99.0).as_secs_f64() * 1e3
    }
}

/// The latency figures, by name, in the order printed.
const LATENCIES: [&str; 9] = [
    "health/service (default, leader)",
    "health/service ?stale (leader)",
    "health/service (default, follower)",
    "intentions/match by destination",
    "catalog/service (default, leader)",
    "authorize, first for a destination",
    "authorize, steady (warm cache)",
    "agent register -> catalog visible",
    "intention write (32 writers, 0 watched)",
];
/// Indexes into [`LATENCIES`] of the linearizable reads (target: p99 ≤ 5 ms).
const LINEARIZABLE: [usize; 3] = [0, 2, 4];
/// Index of register → visible (target: p50 ≤ 5 ms).
const REGISTER: usize = 7;
/// The figures whose growth 1k → 10k must stay within 1.5×.
const GROWTH_CHECKED: [usize; 7] = [0, 1, 2, 3, 4, 5, 6];

/// Everything measured at one N.
#[derive(Debug, Default)]
struct AtN {
    n: usize,
    load_s: f64,
    lat: Vec<Lat>,
    /// Intention writes/s with [`WATCHED`] destinations watched.
    writes_per_sec: Vec<f64>,
    /// CPU µs per write of each write round: the leader, both followers, the agent.
    cpu_per_write: Vec<[f64; 3]>,
    data_dir_bytes: u64,
    snapshot_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_in("samples", args.samples, 20..=100_000)?;
    ensure_in("writes", args.writes, 100..=1_000_000)?;
    ensure_in("writers", args.writers, 1..=256)?;
    ensure_in("registrations", args.registrations, 5..=10_000)?;
    let meshd = match &args.meshd {
        Some(p) => p.clone(),
        None => mesh_benches::release::release_dir("control_scale")?.join("meshd"),
    };
    anyhow::ensure!(
        meshd.is_file(),
        "{} does not exist: build it (`cargo build --release -p mesh-control --bin meshd`) or \
         pass --meshd PATH",
        meshd.display()
    );
    let load_start = load_average();
    let mut sizes = vec![1_000, 10_000];
    if args.big {
        sizes.push(50_000);
    }
    if !args.only.is_empty() {
        for &n in &args.only {
            ensure_in("only", n, 100..=200_000)?;
        }
        sizes = args.only.clone();
    }
    let mut results = Vec::new();
    for n in sizes {
        eprintln!("control_scale: N = {n} ...");
        let dir = args.common.tempdir("mesh-bench-scale-")?;
        let mut cluster = Cluster::start(&meshd, dir.path()).await?;
        let measured = measure(&args, &mut cluster, n).await;
        cluster.stop();
        drop(dir);
        let r = measured.with_context(|| format!("measuring N = {n}"))?;
        eprintln!(
            "control_scale: N = {n}: loaded in {:.1} s; p50/p99 ms: {}",
            r.load_s,
            LATENCIES
                .iter()
                .zip(&r.lat)
                .map(|(name, l)| format!("{name} {:.2}/{:.2}", l.p50(), l.p99()))
                .collect::<Vec<_>>()
                .join("; ")
        );
        results.push(r);
    }
    let load_end = load_average();
    report(&args, &meshd, &results, load_start, load_end)
}

/// The verdicts of the acceptance targets: (target, measured, pass).
fn verdicts(results: &[AtN]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    if let [a, b, ..] = results {
        for &i in &GROWTH_CHECKED {
            let g = ratio(b.lat[i].p50(), a.lat[i].p50());
            out.push((
                format!("{}: p50 growth 1k -> 10k <= {GROWTH_MAX}x", LATENCIES[i]),
                format!("{g:.2}x"),
                g <= GROWTH_MAX,
            ));
        }
    }
    for r in results {
        let worst = LINEARIZABLE
            .iter()
            .map(|&i| r.lat[i].p99())
            .fold(0.0, f64::max);
        out.push((
            format!(
                "N={}: linearizable read p99 <= {LINEARIZABLE_P99_MAX_MS} ms",
                r.n
            ),
            format!("{worst:.2} ms"),
            worst <= LINEARIZABLE_P99_MAX_MS,
        ));
        let reg = r.lat[REGISTER].p50();
        out.push((
            format!(
                "N={}: agent register -> visible p50 <= {REGISTER_P50_MAX_MS} ms",
                r.n
            ),
            format!("{reg:.2} ms"),
            reg <= REGISTER_P50_MAX_MS,
        ));
        let w = ratio(r.writes_per_sec[2], r.writes_per_sec[0]);
        out.push((
            format!(
                "N={}: writes/s 1,000 watched / 0 watched >= {WATCHED_WRITES_MIN}",
                r.n
            ),
            format!("{w:.2}"),
            w >= WATCHED_WRITES_MIN,
        ));
        if r.n >= 50_000 {
            let d = ratio(r.data_dir_bytes as f64, r.snapshot_bytes as f64);
            out.push((
                format!("N={}: data dir / snapshot <= {DISK_RATIO_MAX}", r.n),
                format!("{d:.2}"),
                d > 0.0 && d <= DISK_RATIO_MAX,
            ));
        }
    }
    out
}

fn report(
    args: &Args,
    meshd: &Path,
    results: &[AtN],
    load_start: Option<[f64; 3]>,
    load_end: Option<[f64; 3]>,
) -> anyhow::Result<()> {
    let verdicts = verdicts(results);
    if args.common.json {
        let json = serde_json::json!({
            "bench": "control_scale",
            "meshd": meshd.display().to_string(),
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "sizes": results.iter().map(|r| serde_json::json!({
                "n": r.n,
                "load_s": r.load_s,
                "latency_ms": LATENCIES.iter().zip(&r.lat).map(|(name, l)| serde_json::json!({
                    "name": name, "samples": l.0.len(), "p50": l.p50(), "p99": l.p99(),
                })).collect::<Vec<_>>(),
                "intention_writes_per_sec": WATCHED.iter().zip(&r.writes_per_sec)
                    .zip(&r.cpu_per_write)
                    .map(|((w, r), c)| serde_json::json!({
                        "watched": w, "per_sec": r, "cpu_us_per_write": {
                            "leader": c[0], "followers": c[1], "agent": c[2],
                        },
                    }))
                    .collect::<Vec<_>>(),
                "data_dir_bytes": r.data_dir_bytes,
                "snapshot_bytes": r.snapshot_bytes,
            })).collect::<Vec<_>>(),
            "acceptance": verdicts.iter().map(|(t, m, ok)| serde_json::json!({
                "target": t, "measured": m, "pass": ok,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "control_scale: 3 servers + 1 agent on 127.0.0.1 ({}), N services (one check each) + \
         N intentions, {} samples per latency",
        meshd.display(),
        args.samples
    );
    println!("start {}", load_average_text(load_start));
    let mut header = vec!["latency (ms)".to_string()];
    for r in results {
        header.push(format!("p50 N={}", r.n));
        header.push(format!("p99 N={}", r.n));
    }
    if results.len() >= 2 {
        header.push("p50 growth 1k->10k".into());
        header.push("p99 growth 1k->10k".into());
    }
    let mut table = Table::new(header);
    for (i, name) in LATENCIES.iter().enumerate() {
        let mut row = vec![name.to_string()];
        for r in results {
            row.push(format!("{:.3}", r.lat[i].p50()));
            row.push(format!("{:.3}", r.lat[i].p99()));
        }
        if let [a, b, ..] = results {
            row.push(format!("{:.2}x", ratio(b.lat[i].p50(), a.lat[i].p50())));
            row.push(format!("{:.2}x", ratio(b.lat[i].p99(), a.lat[i].p99())));
        }
        table.row(row);
    }
    print!("{}", table.render());
    let mut other = Table::new(
        std::iter::once("N".to_string())
            .chain(["load"].iter().map(|s| s.to_string()))
            .chain(WATCHED.iter().map(|w| format!("writes/s {w} watched")))
            .chain(
                WATCHED
                    .iter()
                    .map(|w| format!("CPU µs/write {w} watched (leader/followers/agent)")),
            )
            .chain(["data dir", "snapshot", "dir/snap"].map(String::from)),
    );
    for r in results {
        let mut row = vec![r.n.to_string(), format!("{:.1} s", r.load_s)];
        row.extend(r.writes_per_sec.iter().map(|w| rate(*w)));
        row.extend(
            r.cpu_per_write
                .iter()
                .map(|[l, f, a]| format!("{l:.0}/{f:.0}/{a:.0}")),
        );
        row.push(bytes_text(r.data_dir_bytes as f64));
        row.push(bytes_text(r.snapshot_bytes as f64));
        row.push(format!(
            "{:.2}",
            ratio(r.data_dir_bytes as f64, r.snapshot_bytes as f64)
        ));
        other.row(row);
    }
    print!("{}", other.render());
    println!("end   {}", load_average_text(load_end));
    for (target, measured, ok) in &verdicts {
        println!("{} {target}: {measured}", if *ok { "PASS" } else { "FAIL" });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// Three servers and one client agent, real processes.
struct Cluster {
    servers: Vec<Meshd>,
    agent: Meshd,
    /// Each server's data directory and log file, by position in `servers`.
    dirs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    agent_log: PathBuf,
}

impl Cluster {
    /// CPU seconds so far of the leader (`li`), both followers together, and the agent (0 for
    /// a process whose `/proc` entry cannot be read).
    fn cpu_seconds(&self, li: usize) -> [f64; 3] {
        let of = |m: &Meshd| m.pid().and_then(cpu_seconds).unwrap_or(0.0);
        let all: f64 = self.servers.iter().map(of).sum();
        let leader = of(&self.servers[li]);
        [leader, all - leader, of(&self.agent)]
    }

    async fn start(meshd: &Path, dir: &Path) -> anyhow::Result<Self> {
        let rpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        let (mut dirs, mut logs) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let name = format!("s{}", i + 1);
            let data = dir.join(&name);
            let log = dir.join(format!("{name}.log"));
            let join: Vec<u16> = if i == 0 { vec![] } else { vec![rpc[0]] };
            let a = server_args(&name, &data, rpc[i], free_port(), 3, &join);
            let mut c = meshd_command_from(std::process::Command::new(meshd), &a);
            c.env("MESH_LOG", SERVER_LOG);
            servers.push(Meshd::spawn_logged_with(&name, &a, &log, c)?);
            dirs.push(data);
            logs.push(log);
        }
        let mut probe = HttpConn::connect(servers[0].http_addr).await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let peers = probe.get("/v1/status/peers").await?;
            let roots = probe.get("/v1/connect/ca/roots").await?;
            let three =
                serde_json::from_slice::<Vec<String>>(&peers.body).is_ok_and(|p| p.len() == 3);
            if three && roots.status == 200 && trust_domain(&roots.body).is_some() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "cluster not ready in {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let agent_dir = dir.join("agent");
        let mut a = vec![
            "agent".to_string(),
            "--node".into(),
            "bench-agent".into(),
            "--http-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--data-dir".into(),
            agent_dir.display().to_string(),
        ];
        for s in &servers {
            a.push("--server".into());
            a.push(s.rpc_addr.to_string());
        }
        let mut c = meshd_command_from(std::process::Command::new(meshd), &a);
        c.env("MESH_LOG", AGENT_LOG);
        let agent_log = dir.join("agent.log");
        let agent = Meshd::spawn_logged_with("agent", &a, &agent_log, c)?;
        Ok(Self {
            servers,
            agent,
            dirs,
            logs,
            agent_log,
        })
    }

    /// Position of the leader in `servers` (from `/v1/status/leader`, its RPC address).
    async fn leader(&self) -> anyhow::Result<usize> {
        let mut c = HttpConn::connect(self.servers[0].http_addr).await?;
        let r = c.get("/v1/status/leader").await?;
        let addr: String = serde_json::from_slice(&r.body).context("leader address")?;
        self.servers
            .iter()
            .position(|s| s.rpc_addr.to_string() == addr)
            .with_context(|| format!("leader {addr:?} is none of the servers"))
    }

    fn stop(&mut self) {
        self.agent.stop();
        for s in &mut self.servers {
            s.stop();
        }
    }
}

/// The trust domain in a `/v1/connect/ca/roots` answer, when there is one.
fn trust_domain(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let td = v.get("TrustDomain")?.as_str()?;
    (!td.is_empty()).then(|| td.to_string())
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// `PUT /v1/catalog/register` of service `svc-{i}` with its check.
fn service_write(i: usize) -> (http::Method, String, String) {
    let node = format!("node-{}", i / SERVICES_PER_NODE);
    let body = serde_json::json!({
        "Node": node,
        "Address": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "Service": { "ID": format!("svc-{i}"), "Service": format!("svc-{i}"), "Port": 8080 },
        "Check": {
            "Node": node, "CheckID": format!("chk-{i}"), "Name": "alive",
            "Status": "passing", "ServiceID": format!("svc-{i}"),
        },
    });
    (
        http::Method::PUT,
        "/v1/catalog/register".into(),
        body.to_string(),
    )
}

/// Upsert of intention `src-{i} -> svc-{i}` (allow), `tag` in its description.
fn intention_write(i: usize, tag: &str) -> (http::Method, String, String) {
    let body = serde_json::json!({ "Action": "allow", "Description": tag });
    (
        http::Method::PUT,
        format!("/v1/connect/intentions/exact?source=src-{i}&destination=svc-{i}"),
        body.to_string(),
    )
}

/// Sends `count` requests made by `make(i)` through `writers` concurrent connections to
/// `addr`; every answer must be 200. Returns how long it took.
async fn write_all(
    addr: SocketAddr,
    writers: usize,
    count: usize,
    make: Arc<dyn Fn(usize) -> (http::Method, String, String) + Send + Sync>,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + PHASE_TIMEOUT;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (next, make) = (next.clone(), make.clone());
        let mut conn = HttpConn::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "writes took over {PHASE_TIMEOUT:?}"
                );
                let (method, path, body) = make(i);
                // A leader change on a loaded machine answers 500 "No cluster leader" for a
                // moment: retried (bounded); anything else fails the run.
                let mut tries = 0;
                while let Err(e) = conn.expect_ok(method.clone(), &path, body.clone()).await {
                    tries += 1;
                    anyhow::ensure!(
                        tries < WRITE_TRIES && e.to_string().contains("leader"),
                        "{e:#}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("writer task")??;
    }
    Ok(start.elapsed())
}

/// `samples` sequential `GET path` on `conn` (after one untimed), each checked by `ok`.
async fn time_gets(
    conn: &mut HttpConn,
    path: &str,
    samples: usize,
    ok: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Lat> {
    let mut v = Vec::with_capacity(samples);
    for i in 0..=samples {
        let t = Instant::now();
        let r = conn.get(path).await?;
        let took = t.elapsed();
        anyhow::ensure!(
            r.status == 200 && ok(&r.body),
            "GET {path}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if i > 0 {
            v.push(took);
        }
    }
    Ok(Lat::new(v))
}

/// Times one `POST /v1/agent/connect/authorize` of `src-{j} -> svc-{j}`, which must be allowed.
async fn authorize(conn: &mut HttpConn, td: &str, j: usize) -> anyhow::Result<Duration> {
    let body = serde_json::json!({
        "Target": format!("svc-{j}"),
        "ClientCertURI": format!("spiffe://{td}/ns/default/dc/dc1/svc/src-{j}"),
    });
    let t = Instant::now();
    let v = conn
        .expect_ok(
            http::Method::POST,
            "/v1/agent/connect/authorize",
            body.to_string(),
        )
        .await?;
    let took = t.elapsed();
    anyhow::ensure!(
        v.get("Authorized") == Some(&serde_json::Value::Bool(true)),
        "authorize src-{j} -> svc-{j}: {v}"
    );
    Ok(took)
}

/// Loads N services and N intentions, then takes every figure.
async fn measure(args: &Args, cluster: &mut Cluster, n: usize) -> anyhow::Result<AtN> {
    let li = cluster.leader().await?;
    let leader = cluster.servers[li].http_addr;
    let follower = cluster.servers[(li + 1) % 3].http_addr;
    let start = Instant::now();
    write_all(leader, args.writers, n, Arc::new(service_write)).await?;
    write_all(
        leader,
        args.writers,
        n,
        Arc::new(|i| intention_write(i, "load")),
    )
    .await?;
    let load_s = start.elapsed().as_secs_f64();
    let mut lat = vec![Lat::default(); LATENCIES.len()];

    // Single-object reads of one service in the middle.
    let one = n / 2;
    let non_empty = |b: &[u8]| b.len() > 2;
    let mut lc = HttpConn::connect(leader).await?;
    let mut fc = HttpConn::connect(follower).await?;
    let s = args.samples;
    lat[0] = time_gets(
        &mut lc,
        &format!("/v1/health/service/svc-{one}"),
        s,
        non_empty,
    )
    .await?;
    lat[1] = time_gets(
        &mut lc,
        &format!("/v1/health/service/svc-{one}?stale"),
        s,
        non_empty,
    )
    .await?;
    lat[2] = time_gets(
        &mut fc,
        &format!("/v1/health/service/svc-{one}"),
        s,
        non_empty,
    )
    .await?;
    lat[3] = time_gets(
        &mut lc,
        &format!("/v1/connect/intentions/match?by=destination&name=svc-{one}"),
        s,
        |b| String::from_utf8_lossy(b).contains(&format!("src-{one}")),
    )
    .await?;
    lat[4] = time_gets(
        &mut lc,
        &format!("/v1/catalog/service/svc-{one}"),
        s,
        non_empty,
    )
    .await?;

    // The disk right after the load (printed at once: at 50k the watch phases below are slow).
    let (data_dir_bytes, snapshot_bytes) =
        disk_after_snapshot(args, cluster, li, leader, n).await?;
    eprintln!(
        "control_scale: N = {n}: data dir {data_dir_bytes} B, snapshot {snapshot_bytes} B, \
         ratio {:.2}",
        ratio(data_dir_bytes as f64, snapshot_bytes as f64)
    );

    // Intention writes with 0, 100, 1,000 watched destinations; the agent starts watching a
    // destination at its first authorize for it.
    let roots = lc.get("/v1/connect/ca/roots").await?;
    let td = trust_domain(&roots.body).context("no trust domain")?;
    let agent_http = cluster.agent.http_addr;
    let mut first = Vec::new();
    let mut writes_per_sec = Vec::new();
    let mut cpu_per_write = Vec::new();
    let mut write_lat = Vec::new();
    let mut watched = 0;
    for (round, &w) in WATCHED.iter().enumerate() {
        let w = w.min(n);
        // Fresh connections each phase: the servers close keep-alive connections idle for
        // their read-header timeout (30 s), which a long write round can exceed.
        let mut ac = HttpConn::connect(agent_http).await?;
        while watched < w {
            first.push(authorize(&mut ac, &td, watched).await?);
            watched += 1;
        }
        let tag = format!("round-{round}");
        let writes = args.writes;
        let cpu_before = cluster.cpu_seconds(li);
        let took = write_all(
            leader,
            args.writers,
            writes,
            Arc::new(move |i| intention_write(i % n, &tag)),
        )
        .await?;
        writes_per_sec.push(ratio(writes as f64, took.as_secs_f64()));
        let cpu_after = cluster.cpu_seconds(li);
        let per_write: [f64; 3] =
            std::array::from_fn(|k| (cpu_after[k] - cpu_before[k]) * 1e6 / writes as f64);
        eprintln!(
            "control_scale: N = {n}: {w} watched: {:.0} writes/s, CPU µs per write: leader \
             {:.0}, followers {:.0}, agent {:.0}",
            writes_per_sec[round], per_write[0], per_write[1], per_write[2]
        );
        cpu_per_write.push(per_write);
        if round == 0 {
            // The per-write latency of the unwatched round, one writer at a time.
            let mut lc = HttpConn::connect(leader).await?;
            for i in 0..s.min(200) {
                let (m, p, b) = intention_write(i, "latency");
                let t = Instant::now();
                lc.expect_ok(m, &p, b).await?;
                write_lat.push(t.elapsed());
            }
        }
    }
    lat[5] = Lat::new(first);
    let mut ac = HttpConn::connect(agent_http).await?;
    let mut steady = Vec::with_capacity(s);
    for i in 0..s {
        steady.push(authorize(&mut ac, &td, i % watched.max(1)).await?);
    }
    lat[6] = Lat::new(steady);
    lat[8] = Lat::new(write_lat);

    // Agent register -> visible in the catalog (polled on the leader, `?stale`).
    let mut lc = HttpConn::connect(leader).await?;
    let mut visible = Vec::new();
    for k in 0..args.registrations {
        let name = format!("reg-{k}");
        let body = serde_json::json!({ "Name": name, "Port": 9000 });
        let t = Instant::now();
        ac.expect_ok(
            http::Method::PUT,
            "/v1/agent/service/register",
            body.to_string(),
        )
        .await?;
        let deadline = t + PHASE_TIMEOUT;
        loop {
            let r = lc.get(&format!("/v1/catalog/service/{name}?stale")).await?;
            if r.status == 200 && r.body.len() > 2 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} never became visible");
        }
        visible.push(t.elapsed());
    }
    lat[REGISTER] = Lat::new(visible);
    let failed = log_lines(&cluster.agent_log, "anti-entropy failed")?;
    if let Some(first) = failed.first() {
        eprintln!(
            "control_scale: N = {n}: {} failed anti-entropy passes, the first: {first}",
            failed.len()
        );
    }

    Ok(AtN {
        n,
        load_s,
        lat,
        writes_per_sec,
        cpu_per_write,
        data_dir_bytes,
        snapshot_bytes,
    })
}

/// Writes until the leader logs a snapshot built after this call (bounded), then a few more
/// writes (so the log purge that follows a snapshot has run), and returns the leader's
/// data-directory size and the size of that snapshot.
async fn disk_after_snapshot(
    args: &Args,
    cluster: &Cluster,
    li: usize,
    leader: SocketAddr,
    n: usize,
) -> anyhow::Result<(u64, u64)> {
    let log = &cluster.logs[li];
    let before = snapshot_sizes(log)?.len();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut round = 0;
    let size = loop {
        if let Some(&s) = snapshot_sizes(log)?.get(before) {
            break s;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot within {PHASE_TIMEOUT:?}"
        );
        round += 1;
        let tag = format!("fill-{round}");
        write_all(
            leader,
            args.writers,
            500,
            Arc::new(move |i| intention_write(i % n, &tag)),
        )
        .await?;
    };
    // The purge follows the snapshot; these writes queue behind it on the leader.
    write_all(
        leader,
        args.writers,
        100,
        Arc::new(move |i| intention_write(i % n, "after")),
    )
    .await?;
    Ok((dir_size(&cluster.dirs[li])?, size))
}

/// The lines of a log holding `needle`, without colour sequences.
fn log_lines(log: &Path, needle: &str) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(text
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(needle))
        .collect())
}

/// The `bytes=` of every `snapshot built` line of a server's log, in order.
fn snapshot_sizes(log: &Path) -> anyhow::Result<Vec<u64>> {
    Ok(log_lines(log, "snapshot built")?
        .into_iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("bytes="))
                .and_then(|b| b.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        })
        .collect())
}

/// Bytes of every file under `dir` (bounded depth: the store and the agent's directory).
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    fn walk(dir: &Path, depth: u32) -> anyhow::Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() && depth < 4 {
                total += walk(&e.path(), depth + 1)?;
            } else if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }
    walk(dir, 0)
}
