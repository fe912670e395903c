//! `proxy_chain`: the data plane against established TLS proxies, side by side in one run.
//!
//! Acceptance figure: "in one run, side by side, (a) direct loopback TCP, (b) the meshproxy mTLS
//! chain app → proxy → proxy → app, and (c) the same chain with stunnel or HAProxy: single-stream
//! bulk throughput, new connections per second with a full mutual-TLS handshake each, and
//! request/response latency p50/p99 for small messages over a kept-alive connection; plus proxy
//! CPU-seconds per GiB and RSS idle and with 1,000 open connections. Target: at least 1.5× the
//! best peer's throughput and connection rate, and a lower p99 latency, in the same run."
//!
//! Every chain is load generator → client-side proxy (plain TCP on loopback) ⇒ mutual TLS 1.3 ⇒
//! server-side proxy → app, all on 127.0.0.1; the app and the load generator live in this
//! process and are the same for every column (see `proxy_chain/load.rs`). The meshproxy chain is
//! set up through `meshd dev` and the agent API (`proxy_chain/mesh.rs`); stunnel and HAProxy get
//! certificates generated here with the same key type and the same TLS settings
//! (`proxy_chain/peers.rs`). All chains are started first and then measured phase by phase,
//! column after column, so a change in background load hits every column alike.
//!
//! Session resumption: every chain is measured twice, through a client side that never resumes
//! TLS sessions (meshproxy `--no-tls-resumption`, stunnel `sessionResume = no`, HAProxy
//! `no-ssl-reuse`: a full mutual-TLS handshake per connection, the acceptance figure) and
//! through one that resumes (each proxy's default). The server side is the same process in
//! both modes; a client that never offers a session gets a full handshake whatever the server
//! would allow. The loopback bytes per connection show which one happened.

use mesh_benches::proxy_chain::{load, mesh, peers, procs};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use mesh_benches::{
    CommonArgs, Table, load_average, load_average_json, load_average_text, ms, percentile, rate,
    ratio,
};
use serde_json::{Value, json};

use load::{Bulk, ConnRate};
use peers::Kind;

/// Acceptance targets: meshproxy ÷ best peer.
const TARGET_THROUGHPUT: f64 = 1.5;
const TARGET_CONN_RATE: f64 = 1.5;
/// Cap on the bulk phase of one column, whatever `--bulk-mib`/`--gib` says.
const BULK_CAP: Duration = Duration::from_secs(120);
/// Cap on the latency phase of one column, whatever `--rounds` says.
const LATENCY_CAP: Duration = Duration::from_secs(30);
/// The latency phase runs in this many slices (a new connection each), interleaved across the
/// columns: p99 is the tail most sensitive to bursts of other load on a shared machine.
const LATENCY_SLICES: usize = 10;
/// Untimed round trips before each latency slice.
const LATENCY_WARMUP: u64 = 200;
/// Untimed connections (for this long) before each connection-rate phase, so the resuming
/// chains hold tickets and every process has its threads and caches warm.
const CONN_WARMUP: Duration = Duration::from_millis(300);
/// How long opening the held connections of one column may take.
const HOLD_CAP: Duration = Duration::from_secs(60);
/// Threads opening the held connections.
const HOLD_PARALLEL: usize = 16;
/// Settling time before a memory reading.
const SETTLE: Duration = Duration::from_millis(500);

/// Column of `--compare-proxy`.
const COMPARE_COLUMN: &str = "meshproxy-b";

/// Names of the phases, for `--only`.
const PHASES: [&str; 5] = ["integrity", "latency", "bulk", "conn", "rss"];

/// Direct TCP vs meshproxy vs stunnel vs HAProxy: throughput, connections/s, latency, CPU, RSS.
#[derive(Debug, Parser)]
#[command(name = "proxy_chain")]
struct Args {
    /// `--seconds` is the length of each connection-rate phase.
    #[command(flatten)]
    common: CommonArgs,
    /// MiB sent on the single bulk connection of each column.
    #[arg(long, default_value_t = 256)]
    bulk_mib: u64,
    /// GiB for the bulk phase instead of `--bulk-mib` (e.g. `--gib 1`).
    #[arg(long)]
    gib: Option<f64>,
    /// MiB echoed and hashed to check integrity through each chain.
    #[arg(long, default_value_t = 16)]
    verify_mib: u64,
    /// Concurrent connectors in the connection-rate phases.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Timed round trips of the latency phase (capped at 30 s per column).
    #[arg(long, default_value_t = 20_000)]
    rounds: u64,
    /// Message size of the latency phase, in bytes.
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Repetitions of the bulk and connection phases, interleaved across the columns so that a
    /// burst of background load hits every column alike (bulk: median of the repetitions;
    /// connections: pooled). The latency phase always runs in 10 interleaved slices.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Connections held open through each chain for the loaded RSS reading.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Peers to compare against (comma separated: stunnel, haproxy; empty for none).
    #[arg(long, default_value = "stunnel,haproxy", value_delimiter = ',')]
    peers: Vec<String>,
    /// Phases to run (comma separated: integrity, latency, bulk, conn, rss; default all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "integrity,latency,bulk,conn,rss"
    )]
    only: Vec<String>,
    /// Do not run `cargo build --release -p mesh-control -p meshproxy --bins` first.
    #[arg(long)]
    no_build: bool,
    /// Do not apt-get install missing peers (skip them instead).
    #[arg(long)]
    no_install: bool,
    /// Another meshproxy binary (e.g. a release build of the previous commit) measured as an
    /// extra column "meshproxy-b", with its own meshd and sidecars: a before/after comparison
    /// in one run.
    #[arg(long, value_name = "FILE")]
    compare_proxy: Option<PathBuf>,
}

/// Everything measured for one column.
#[derive(Debug, Default)]
struct Measured {
    verify: Option<Result<(), String>>,
    rss_idle: Option<Vec<u64>>,
    latency: Option<Result<Vec<Duration>, String>>,
    /// One per repetition.
    bulks: Vec<Bulk>,
    bulk_err: Option<String>,
    /// CPU seconds of each proxy over all bulk repetitions, and the bytes they moved.
    cpu_acc: Option<Vec<f64>>,
    cpu_bytes: u64,
    conn_resume: Option<(ConnRate, Option<f64>)>,
    conn_full: Option<(ConnRate, Option<f64>)>,
    /// Proxy CPU seconds over the timed connection slices.
    conn_cpu_resume: Option<f64>,
    conn_cpu_full: Option<f64>,
    /// Proxy CPU seconds, context switches and round trips (warm-up included) of the latency
    /// slices.
    lat_cpu: f64,
    lat_ctx: u64,
    lat_rounds: u64,
    held: Option<(usize, Option<String>)>,
    rss_held: Option<Vec<u64>>,
    threads_held: Option<Vec<u64>>,
}

/// One column of the table: where its chain starts and which processes are its proxies.
struct Column {
    name: String,
    entry: SocketAddr,
    /// Entry that never resumes TLS sessions (none for direct).
    entry_full: Option<SocketAddr>,
    /// Client-side, then server-side proxy (empty for direct).
    pids: Vec<u32>,
    /// The proxies behind `entry_full`, when they are not `pids` (meshproxy's no-resumption
    /// client side is a sidecar of its own).
    pids_full: Option<Vec<u32>>,
    m: Measured,
}

impl Column {
    fn is_direct(&self) -> bool {
        self.pids.is_empty()
    }

    /// Connection figures of the full-handshake mode (direct TCP has no TLS: its one figure).
    fn conn_full_or_direct(&self) -> &Option<(ConnRate, Option<f64>)> {
        if self.is_direct() {
            &self.m.conn_resume
        } else {
            &self.m.conn_full
        }
    }

    /// The proxies a connection through the full-handshake (or the resuming) entry crosses.
    fn pids_for(&self, full: bool) -> &[u32] {
        match (&self.pids_full, full) {
            (Some(p), true) => p,
            _ => &self.pids,
        }
    }
}

fn cpu_total(pids: &[u32]) -> Option<Vec<f64>> {
    pids.iter().map(|p| procs::cpu_seconds(*p)).collect()
}

/// Summed CPU seconds of `pids` (`None` for no process).
fn cpu_sum(pids: &[u32]) -> Option<f64> {
    (!pids.is_empty()).then(|| cpu_total(pids).map(|v| v.iter().sum()))?
}

/// Summed context switches of `pids` (`None` for no process).
fn ctx_sum(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty()).then(|| pids.iter().map(|p| procs::ctx_switches(*p)).sum())?
}

fn rss_all(pids: &[u32]) -> Option<Vec<u64>> {
    pids.iter().map(|p| procs::rss_of(*p)).collect()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn rss_text(v: &Option<Vec<u64>>) -> String {
    match v {
        Some(v) if !v.is_empty() => {
            let parts: Vec<String> = v.iter().map(|b| format!("{:.1}", mib(*b))).collect();
            format!("{:.1} MiB ({})", mib(v.iter().sum()), parts.join("+"))
        }
        _ => "n/a".into(),
    }
}

/// Runs a blocking load-generator function on its own thread (so the app's runtime keeps both
/// workers) and waits for it.
fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .expect("load generator thread panicked")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conn_phase = args.common.duration()?;
    let bulk_bytes = match args.gib {
        Some(g) => {
            anyhow::ensure!(
                g.is_finite() && g > 0.0 && g <= 64.0,
                "--gib must be in (0, 64]"
            );
            (g * 1024.0 * 1024.0 * 1024.0) as u64
        }
        None => args.bulk_mib.max(1) * 1024 * 1024,
    };
    let kinds: Vec<Kind> = args
        .peers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim() {
            "stunnel" => Ok(Kind::Stunnel),
            "haproxy" => Ok(Kind::Haproxy),
            other => anyhow::bail!("unknown peer {other:?} (stunnel, haproxy)"),
        })
        .collect::<anyhow::Result<_>>()?;
    for ph in &args.only {
        anyhow::ensure!(
            PHASES.contains(&ph.trim()),
            "unknown phase {ph:?} (one of {})",
            PHASES.join(", ")
        );
    }
    let run = |phase: &str| args.only.iter().any(|p| p.trim() == phase);
    let load_start = load_average();
    eprintln!("{}", load_average_text(load_start));

    let mut notes: Vec<String> = Vec::new();
    let install = peers::ensure_installed(&kinds, !args.no_install);
    for l in &install {
        eprintln!("{l}");
    }
    if !args.no_build {
        mesh_benches::release::build_binaries()?;
    }
    let bin_dir = mesh_benches::release::release_dir("proxy_chain")?;
    for b in ["meshd", "meshproxy"] {
        anyhow::ensure!(
            bin_dir.join(b).exists(),
            "{} missing: build with `cargo build --release -p mesh-control -p meshproxy --bins`",
            bin_dir.join(b).display()
        );
    }
    let tmp = args.common.tempdir("proxy-chain-")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-app")
        .enable_all()
        .build()?;
    let app_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let app = app_listener.local_addr()?;
    rt.spawn(load::serve_app(app_listener));

    // ---- start every chain -----------------------------------------------------------------
    eprintln!("starting meshd dev and the meshproxy chain ...");
    let mesh_chain = rt.block_on(mesh::start(
        &bin_dir,
        &bin_dir.join("meshproxy"),
        &tmp.path().join("mesh"),
        app,
    ))?;
    let compare_chain = match &args.compare_proxy {
        Some(bin) => {
            anyhow::ensure!(
                bin.exists(),
                "--compare-proxy {} does not exist",
                bin.display()
            );
            eprintln!(
                "starting the second meshproxy chain ({}) ...",
                bin.display()
            );
            Some(rt.block_on(mesh::start(&bin_dir, bin, &tmp.path().join("mesh-b"), app))?)
        }
        None => None,
    };
    let mut negotiated: Vec<(String, String)> = Vec::new();
    if let Ok((cert, key, ca)) = rt.block_on(mesh::leaf_for(mesh_chain.http, "web")) {
        let d = tmp.path();
        let (c, k, a) = (
            d.join("mesh-web.pem"),
            d.join("mesh-web.key"),
            d.join("mesh-ca.pem"),
        );
        if std::fs::write(&c, cert).is_ok()
            && std::fs::write(&k, key).is_ok()
            && std::fs::write(&a, ca).is_ok()
            && let Some(n) = peers::negotiated(mesh_chain.server_public, &c, &k, &a)
        {
            negotiated.push(("meshproxy".into(), n));
        }
    }
    let certs = peers::generate_certs(tmp.path())?;
    let mut peer_chains = Vec::new();
    for k in &kinds {
        if k.binary().is_none() {
            continue;
        }
        eprintln!("starting the {} chain ...", k.name());
        match peers::start(*k, tmp.path(), &certs, app) {
            Ok(c) => {
                match blocking({
                    let e = c.entry;
                    move || load::verify(e, 1024)
                }) {
                    Ok(()) => {
                        if let Some(n) = peers::negotiated(
                            c.server_public,
                            &certs.client_cert,
                            &certs.client_key,
                            &certs.ca,
                        ) {
                            negotiated.push((k.name().into(), n));
                        }
                        peer_chains.push(c);
                    }
                    Err(e) => {
                        let msg = format!("{}: chain does not pass data, skipped: {e:#}", k.name());
                        eprintln!("{msg}\n{}", c.client.log_tail(10));
                        notes.push(msg);
                    }
                }
            }
            Err(e) => {
                let msg = format!("{}: could not start, skipped: {e:#}", k.name());
                eprintln!("{msg}");
                notes.push(msg);
            }
        }
    }

    let mut cols = vec![
        Column {
            name: "direct".into(),
            entry: app,
            entry_full: None,
            pids: vec![],
            pids_full: None,
            m: Measured::default(),
        },
        Column {
            name: "meshproxy".into(),
            entry: mesh_chain.entry,
            entry_full: Some(mesh_chain.entry_full),
            pids: mesh_chain.pids(),
            pids_full: Some(mesh_chain.pids_full()),
            m: Measured::default(),
        },
    ];
    if let Some(b) = &compare_chain {
        cols.push(Column {
            name: COMPARE_COLUMN.into(),
            entry: b.entry,
            entry_full: Some(b.entry_full),
            pids: b.pids(),
            pids_full: Some(b.pids_full()),
            m: Measured::default(),
        });
    }
    for c in &peer_chains {
        cols.push(Column {
            name: c.kind.name().into(),
            entry: c.entry,
            entry_full: Some(c.entry_full),
            pids: c.pids(),
            pids_full: None,
            m: Measured::default(),
        });
    }

    // ---- phases, each across every column ----------------------------------------------------
    eprintln!(
        "integrity ({} MiB echoed and hashed) + idle RSS ...",
        args.verify_mib
    );
    for c in cols.iter_mut().filter(|_| run("integrity")) {
        let (e, n) = (c.entry, args.verify_mib * 1024 * 1024);
        c.m.verify = Some(blocking(move || load::verify(e, n)).map_err(|e| format!("{e:#}")));
        std::thread::sleep(SETTLE);
        c.m.rss_idle = rss_all(&c.pids);
    }

    let reps = args.reps.clamp(1, 20);
    eprintln!(
        "latency ({} x {} B ping-pong, in {LATENCY_SLICES} slices) ...",
        args.rounds, args.msg_size
    );
    let per_slice = args.rounds.max(1).div_ceil(LATENCY_SLICES as u64);
    for _ in 0..LATENCY_SLICES * usize::from(run("latency")) {
        for c in &mut cols {
            if matches!(c.m.latency, Some(Err(_))) {
                continue;
            }
            let (e, size) = (c.entry, args.msg_size.max(1));
            let (cpu0, ctx0) = (cpu_sum(&c.pids), ctx_sum(&c.pids));
            let r = blocking(move || {
                load::latency(
                    e,
                    size,
                    LATENCY_WARMUP,
                    per_slice,
                    LATENCY_CAP / LATENCY_SLICES as u32,
                )
            });
            if let (Ok(v), Some(a), Some(b), Some(x), Some(y)) =
                (&r, cpu0, cpu_sum(&c.pids), ctx0, ctx_sum(&c.pids))
            {
                c.m.lat_cpu += b - a;
                c.m.lat_ctx += y.saturating_sub(x);
                c.m.lat_rounds += v.0.len() as u64 + LATENCY_WARMUP;
            }
            // The slice's connection closes only after the counters were read.
            let r = r.map(|(samples, _conn)| samples);
            c.m.latency = Some(match (c.m.latency.take(), r) {
                (Some(Ok(mut all)), Ok(v)) => {
                    all.extend(v);
                    Ok(all)
                }
                (None, Ok(v)) => Ok(v),
                (_, Err(e)) => Err(format!("{e:#}")),
                (Some(Err(e)), _) => Err(e),
            });
        }
    }
    for c in &mut cols {
        if let Some(Ok(v)) = &mut c.m.latency {
            v.sort();
        }
    }

    eprintln!(
        "bulk ({:.0} MiB on one connection, {reps} times) ...",
        mib(bulk_bytes)
    );
    for _ in 0..reps * usize::from(run("bulk")) {
        for c in &mut cols {
            if c.m.bulk_err.is_some() {
                continue;
            }
            let e = c.entry;
            let before = cpu_total(&c.pids);
            let r = blocking(move || load::bulk(e, bulk_bytes, Instant::now() + BULK_CAP));
            let after = cpu_total(&c.pids);
            match r {
                Ok(b) => {
                    if let (Some(before), Some(after)) = (before, after) {
                        let acc = c.m.cpu_acc.get_or_insert_with(|| vec![0.0; after.len()]);
                        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
                            acc[i] += a - b;
                        }
                        c.m.cpu_bytes += b.bytes;
                    }
                    c.m.bulks.push(b);
                }
                Err(e) => c.m.bulk_err = Some(format!("{e:#}")),
            }
        }
    }

    eprintln!(
        "new connections ({} connectors, {:.1} s per column and mode in {reps} slices) ...",
        args.concurrency,
        conn_phase.as_secs_f64()
    );
    let conc = args.concurrency.max(1);
    let slice = conn_phase / reps as u32;
    let timed_conns = |addr: SocketAddr, acc: &mut Option<(ConnRate, Option<f64>)>| {
        let lo0 = procs::loopback_tx_bytes();
        let r = blocking(move || load::conn_rate(addr, conc, slice));
        let lo1 = procs::loopback_tx_bytes();
        let lo = match (lo0, lo1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let (mut total, bytes) = acc.take().unwrap_or_default();
        total.ok += r.ok;
        total.errors += r.errors;
        total.elapsed += r.elapsed;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        // Summed bytes while accumulating; divided by the connections at the end.
        let bytes = match (bytes, lo) {
            (Some(b), Some(l)) => Some(b + l as f64),
            (None, Some(l)) if total.ok == r.ok => Some(l as f64),
            _ => None,
        };
        *acc = Some((total, bytes));
    };
    for rep in 0..reps * usize::from(run("conn")) {
        for c in &mut cols {
            for (addr, full) in [(c.entry_full, true), (Some(c.entry), false)] {
                let Some(addr) = addr else { continue };
                if rep == 0 {
                    blocking(move || load::conn_rate(addr, conc, CONN_WARMUP));
                }
                let pids = c.pids_for(full).to_vec();
                let cpu0 = cpu_sum(&pids);
                let (acc, cpu) = if full {
                    (&mut c.m.conn_full, &mut c.m.conn_cpu_full)
                } else {
                    (&mut c.m.conn_resume, &mut c.m.conn_cpu_resume)
                };
                timed_conns(addr, acc);
                if let (Some(a), Some(b)) = (cpu0, cpu_sum(&pids)) {
                    *cpu.get_or_insert(0.0) += b - a;
                }
            }
        }
    }
    for c in &mut cols {
        for (r, b) in [&mut c.m.conn_resume, &mut c.m.conn_full]
            .into_iter()
            .flatten()
        {
            *b = b.filter(|_| r.ok > 0).map(|b| b / r.ok as f64);
        }
    }
    eprintln!("{} held connections per chain + RSS ...", args.conns);
    for c in cols.iter_mut().filter(|_| run("rss")) {
        if c.is_direct() {
            continue;
        }
        let (e, n) = (c.entry, args.conns);
        let (held, err) = blocking(move || {
            let (v, err) = load::hold(e, n, HOLD_PARALLEL, Instant::now() + HOLD_CAP);
            // Keep them open while the parent reads memory: hand them back.
            (v, err)
        });
        std::thread::sleep(SETTLE);
        c.m.rss_held = rss_all(&c.pids);
        c.m.threads_held = c.pids.iter().map(|p| procs::threads_of(*p)).collect();
        c.m.held = Some((held.len(), err));
        drop(held);
        // Let the proxies tear those connections down before the next column.
        std::thread::sleep(Duration::from_secs(1));
    }

    // ---- stop everything -------------------------------------------------------------------
    let pids_alive: Vec<(String, bool)> = cols
        .iter()
        .flat_map(|c| {
            c.pids
                .iter()
                .map(|p| (c.name.clone(), Path::new(&format!("/proc/{p}")).exists()))
        })
        .collect();
    for (name, alive) in &pids_alive {
        if !alive {
            notes.push(format!(
                "{name}: a proxy process exited during the run (figures suspect)"
            ));
        }
    }
    for c in peer_chains {
        c.stop();
    }
    mesh_chain.stop();
    if let Some(b) = compare_chain {
        b.stop();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let load_end = load_average();

    // ---- report ----------------------------------------------------------------------------
    let report = Report {
        args: &args,
        cols: &cols,
        bulk_bytes,
        conn_phase,
        install: &install,
        negotiated: &negotiated,
        notes: &notes,
        load: (load_start, load_end),
    };
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// One figure of a column, for the `meshproxy / meshproxy-b` lines.
type Figure = dyn Fn(&Column) -> Option<f64>;

struct Report<'a> {
    args: &'a Args,
    cols: &'a [Column],
    bulk_bytes: u64,
    conn_phase: Duration,
    install: &'a [String],
    negotiated: &'a [(String, String)],
    notes: &'a [String],
    load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// Best peer by `value` (higher is better unless `lower`): (name, value).
fn best_peer(
    cols: &[Column],
    lower: bool,
    value: impl Fn(&Column) -> Option<f64>,
) -> Option<(String, f64)> {
    cols.iter()
        .filter(|c| !c.is_direct() && c.name != "meshproxy" && c.name != COMPARE_COLUMN)
        .filter_map(|c| value(c).filter(|v| *v > 0.0).map(|v| (c.name.clone(), v)))
        .reduce(|a, b| {
            if (b.1 < a.1) == lower && b.1 != a.1 {
                b
            } else {
                a
            }
        })
}

fn meshproxy(cols: &[Column]) -> Option<&Column> {
    cols.iter().find(|c| c.name == "meshproxy")
}

/// Median bulk throughput of the repetitions, MiB/s.
fn throughput(c: &Column) -> Option<f64> {
    if c.m.bulk_err.is_some() || c.m.bulks.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = c.m.bulks.iter().map(Bulk::mib_per_sec).collect();
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

/// Proxy CPU seconds per GiB over all bulk repetitions: (total, per process).
fn cpu_per_gib(c: &Column) -> Option<(f64, Vec<f64>)> {
    let acc =
        c.m.cpu_acc
            .as_ref()
            .filter(|_| !c.is_direct() && c.m.cpu_bytes > 0)?;
    let gib = c.m.cpu_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    Some((
        acc.iter().sum::<f64>() / gib,
        acc.iter().map(|s| s / gib).collect(),
    ))
}

fn p(c: &Column, q: f64) -> Option<Duration> {
    c.m.latency
        .as_ref()?
        .as_ref()
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| percentile(v, q))
}

fn conn(c: &Column, full: bool) -> Option<f64> {
    let r = if full {
        &c.m.conn_full
    } else {
        &c.m.conn_resume
    };
    r.as_ref().map(|(r, _)| r.per_sec()).filter(|v| *v > 0.0)
}

impl Report<'_> {
    fn ratio_lines(&self) -> Vec<(String, Option<f64>, Option<bool>)> {
        let mut out = Vec::new();
        let Some(m) = meshproxy(self.cols) else {
            return out;
        };
        let mut push =
            |label: String, r: Option<f64>, pass: Option<bool>| out.push((label, r, pass));
        match (throughput(m), best_peer(self.cols, false, throughput)) {
            (Some(v), Some((name, b))) => {
                let r = ratio(v, b);
                push(
                    format!(
                        "bulk throughput: meshproxy / best peer ({name}) = {r:.2}x (target >= {TARGET_THROUGHPUT}x)"
                    ),
                    Some(r),
                    Some(r >= TARGET_THROUGHPUT),
                );
            }
            _ => push(
                "bulk throughput: no peer to compare with".into(),
                None,
                None,
            ),
        }
        match (
            conn(m, true),
            best_peer(self.cols, false, |c| conn(c, true)),
        ) {
            (Some(v), Some((name, b))) => {
                let r = ratio(v, b);
                push(
                    format!(
                        "new conn/s, full mutual-TLS handshake each: meshproxy / best peer ({name}) = {r:.2}x (target >= {TARGET_CONN_RATE}x)"
                    ),
                    Some(r),
                    Some(r >= TARGET_CONN_RATE),
                );
            }
            _ => push(
                "new conn/s (full handshake): no peer to compare with".into(),
                None,
                None,
            ),
        }
        if let (Some(v), Some((name, b))) = (
            conn(m, false),
            best_peer(self.cols, false, |c| conn(c, false)),
        ) {
            let r = ratio(v, b);
            push(
                format!(
                    "new conn/s, resumption on everywhere: meshproxy / best peer ({name}) = {r:.2}x (extra figure)"
                ),
                Some(r),
                None,
            );
        }
        let p99 = |c: &Column| p(c, 99.0).map(|d| d.as_secs_f64());
        match (p99(m), best_peer(self.cols, true, p99)) {
            (Some(v), Some((name, b))) => {
                let r = ratio(v, b);
                push(
                    format!(
                        "latency p99: meshproxy / best peer ({name}) = {r:.2}x (target < 1.00x)"
                    ),
                    Some(r),
                    Some(r < 1.0),
                );
            }
            _ => push("latency p99: no peer to compare with".into(), None, None),
        }
        if let Some(b) = self.cols.iter().find(|c| c.name == COMPARE_COLUMN) {
            let p50 = |c: &Column| p(c, 50.0).map(|d| d.as_secs_f64());
            let figures: [(&str, &Figure); 5] = [
                ("bulk throughput", &throughput),
                ("new conn/s, full handshake", &|c| conn(c, true)),
                ("new conn/s, resuming", &|c| conn(c, false)),
                ("latency p50", &p50),
                ("latency p99", &p99),
            ];
            for (what, f) in figures {
                if let (Some(x), Some(y)) = (f(m), f(b)) {
                    let r = ratio(x, y);
                    push(
                        format!("{what}: meshproxy / {COMPARE_COLUMN} = {r:.2}x"),
                        Some(r),
                        None,
                    );
                }
            }
        }
        out
    }

    fn text(&self) -> String {
        let a = self.args;
        let mut header = vec!["metric".to_string()];
        header.extend(self.cols.iter().map(|c| c.name.clone()));
        let mut t = Table::new(header);
        let row = |t: &mut Table, label: &str, f: &dyn Fn(&Column) -> String| {
            let mut cells = vec![label.to_string()];
            cells.extend(self.cols.iter().map(f));
            t.row(cells);
        };
        let err = |e: &String| format!("error ({})", e.chars().take(40).collect::<String>());
        row(
            &mut t,
            &format!("bulk, 1 stream, {:.0} MiB", mib(self.bulk_bytes)),
            &|c| match (throughput(c), &c.m.bulk_err) {
                (_, Some(e)) => err(e),
                (Some(v), None) => format!(
                    "{} MiB/s{}",
                    rate(v).trim_end_matches("/s"),
                    if c.m.bulks.iter().all(|b| b.complete) {
                        ""
                    } else {
                        " (partial)"
                    }
                ),
                (None, None) => "n/a".into(),
            },
        );
        row(
            &mut t,
            "proxy CPU-s per GiB (client+server)",
            &|c| match cpu_per_gib(c) {
                Some((v, s)) => format!(
                    "{v:.2} ({})",
                    s.iter()
                        .map(|x| format!("{x:.2}"))
                        .collect::<Vec<_>>()
                        .join("+")
                ),
                None => "n/a".into(),
            },
        );
        row(
            &mut t,
            &format!("integrity, {} MiB echo + hash", a.verify_mib),
            &|c| match &c.m.verify {
                Some(Ok(())) => "ok".into(),
                Some(Err(e)) => err(e),
                None => "n/a".into(),
            },
        );
        let conn_cell = |r: &Option<(ConnRate, Option<f64>)>| match r {
            Some((r, _)) if r.errors > 0 => format!("{} ({} err)", rate(r.per_sec()), r.errors),
            Some((r, _)) => rate(r.per_sec()),
            None => "n/a".into(),
        };
        row(
            &mut t,
            &format!("new conn/s, full handshake (C={})", a.concurrency),
            &|c| conn_cell(c.conn_full_or_direct()),
        );
        row(
            &mut t,
            &format!("new conn/s, resumption on (C={})", a.concurrency),
            &|c| conn_cell(&c.m.conn_resume),
        );
        let bytes_cell = |r: &Option<(ConnRate, Option<f64>)>| match r {
            Some((_, Some(b))) => format!("{b:.0} B"),
            _ => "n/a".into(),
        };
        row(&mut t, "loopback bytes/conn, full handshake", &|c| {
            bytes_cell(c.conn_full_or_direct())
        });
        row(&mut t, "loopback bytes/conn, resumption on", &|c| {
            bytes_cell(&c.m.conn_resume)
        });
        row(
            &mut t,
            &format!("latency p50, {} B ping-pong", a.msg_size),
            &|c| {
                p(c, 50.0).map(ms).unwrap_or_else(|| match &c.m.latency {
                    Some(Err(e)) => err(e),
                    _ => "n/a".into(),
                })
            },
        );
        row(
            &mut t,
            &format!("latency p99, {} B ping-pong", a.msg_size),
            &|c| p(c, 99.0).map(ms).unwrap_or_else(|| "n/a".into()),
        );
        let per_conn_cpu = |cpu: Option<f64>, r: &Option<(ConnRate, Option<f64>)>| match (cpu, r) {
            (Some(cpu), Some((r, _))) if r.ok > 0 => format!("{:.0} us", cpu / r.ok as f64 * 1e6),
            _ => "n/a".into(),
        };
        row(&mut t, "proxy CPU per new conn, full handshake", &|c| {
            per_conn_cpu(c.m.conn_cpu_full, &c.m.conn_full)
        });
        row(&mut t, "proxy CPU per new conn, resumption on", &|c| {
            per_conn_cpu(c.m.conn_cpu_resume, &c.m.conn_resume)
        });
        row(&mut t, "proxy CPU per round trip", &|c| {
            if c.m.lat_rounds > 0 {
                format!("{:.1} us", c.m.lat_cpu / c.m.lat_rounds as f64 * 1e6)
            } else {
                "n/a".into()
            }
        });
        row(&mut t, "proxy context switches per round trip", &|c| {
            if c.m.lat_rounds > 0 {
                format!("{:.2}", c.m.lat_ctx as f64 / c.m.lat_rounds as f64)
            } else {
                "n/a".into()
            }
        });
        row(&mut t, "RSS idle (client+server)", &|c| {
            rss_text(&c.m.rss_idle)
        });
        row(&mut t, &format!("RSS with {} open conns", a.conns), &|c| {
            let mut s = rss_text(&c.m.rss_held);
            if let Some((n, _)) = c.m.held
                && n < a.conns
            {
                s.push_str(&format!(" [only {n} opened]"));
            }
            s
        });
        row(
            &mut t,
            "threads with those conns",
            &|c| match &c.m.threads_held {
                Some(v) if !v.is_empty() => {
                    v.iter().map(u64::to_string).collect::<Vec<_>>().join("+")
                }
                _ => "n/a".into(),
            },
        );

        let mut out = String::new();
        out.push_str(&format!(
            "proxy_chain: load generator -> client-side proxy => mutual TLS 1.3 => server-side proxy -> app, all on 127.0.0.1 ({} CPUs)\n",
            mesh_benches::parallelism()
        ));
        out.push_str(&format!("start {}\n", load_average_text(self.load.0)));
        for l in self.install {
            out.push_str(&format!("peer {l}\n"));
        }
        for (name, n) in self.negotiated {
            out.push_str(&format!(
                "negotiated with {name}'s server side (openssl s_client probe): {n}\n"
            ));
        }
        out.push('\n');
        out.push_str(&t.render());
        out.push('\n');
        for (line, _, pass) in self.ratio_lines() {
            let verdict = match pass {
                Some(true) => "  [met]",
                Some(false) => "  [MISSED]",
                None => "",
            };
            out.push_str(&format!("{line}{verdict}\n"));
        }
        out.push_str(
            "\nresumption: every chain was measured through a client side that never resumes TLS \
             sessions (meshproxy --no-tls-resumption, stunnel sessionResume = no, HAProxy \
             no-ssl-reuse: a full mutual-TLS handshake per connection) and through one that resumes \
             (each proxy's default: rustls stateful TLS 1.3 tickets, OpenSSL tickets).\n",
        );
        out.push_str(&format!(
            "connection phases: {:.1} s each after {:.1} s warm-up; loopback bytes/conn = lo tx bytes over the phase / connections (all three hops, both directions, plus any other loopback traffic)\n",
            self.conn_phase.as_secs_f64(),
            CONN_WARMUP.as_secs_f64()
        ));
        for c in self.cols {
            for (label, r) in [("resuming", &c.m.conn_resume), ("full", &c.m.conn_full)] {
                if let Some((r, _)) = r
                    && let Some(e) = &r.first_error
                {
                    out.push_str(&format!(
                        "{} ({label}): {} connection errors, first: {e}\n",
                        c.name, r.errors
                    ));
                }
            }
            if let Some((n, Some(e))) = &c.m.held {
                out.push_str(&format!("{}: held {n} connections, then: {e}\n", c.name));
            }
            for (what, r) in [
                (
                    "integrity",
                    c.m.verify.as_ref().and_then(|r| r.as_ref().err()),
                ),
                ("bulk", c.m.bulk_err.as_ref()),
                (
                    "latency",
                    c.m.latency.as_ref().and_then(|r| r.as_ref().err()),
                ),
            ] {
                if let Some(e) = r {
                    out.push_str(&format!("{} {what}: {e}\n", c.name));
                }
            }
        }
        for n in self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!("end   {}\n", load_average_text(self.load.1)));
        out
    }

    fn json(&self) -> Value {
        let cols: Vec<Value> = self
            .cols
            .iter()
            .map(|c| {
                let conn = |r: &Option<(ConnRate, Option<f64>)>| {
                    r.as_ref().map(|(r, b)| {
                        json!({
                            "per_sec": r.per_sec(), "ok": r.ok, "errors": r.errors,
                            "first_error": r.first_error, "seconds": r.elapsed.as_secs_f64(),
                            "loopback_bytes_per_conn": b,
                        })
                    })
                };
                json!({
                    "name": c.name,
                    "pids": c.pids,
                    "integrity_ok": c.m.verify.as_ref().map(Result::is_ok),
                    "bulk_mib_per_sec_median": throughput(c),
                    "bulk_runs": c.m.bulks.iter().map(|b| json!({"mib_per_sec": b.mib_per_sec(),
                        "bytes": b.bytes, "seconds": b.elapsed.as_secs_f64(), "complete": b.complete}))
                        .collect::<Vec<_>>(),
                    "bulk_error": c.m.bulk_err,
                    "cpu_seconds_per_gib": cpu_per_gib(c).map(|x| x.0),
                    "cpu_seconds_per_gib_per_process": cpu_per_gib(c).map(|x| x.1),
                    "conn_resuming": conn(&c.m.conn_resume),
                    "conn_full_handshake": conn(&c.m.conn_full),
                    "conn_cpu_seconds_resuming": c.m.conn_cpu_resume,
                    "conn_cpu_seconds_full": c.m.conn_cpu_full,
                    "latency_proxy_cpu_seconds": c.m.lat_cpu,
                    "latency_proxy_context_switches": c.m.lat_ctx,
                    "latency_round_trips_incl_warmup": c.m.lat_rounds,
                    "latency_ms": {
                        "p50": p(c, 50.0).map(|d| d.as_secs_f64() * 1e3),
                        "p99": p(c, 99.0).map(|d| d.as_secs_f64() * 1e3),
                        "samples": c.m.latency.as_ref().and_then(|r| r.as_ref().ok()).map(Vec::len),
                    },
                    "rss_idle_bytes": c.m.rss_idle,
                    "rss_held_bytes": c.m.rss_held,
                    "held_connections": c.m.held.as_ref().map(|h| h.0),
                    "threads_held": c.m.threads_held,
                })
            })
            .collect();
        let ratios: Vec<Value> = self
            .ratio_lines()
            .into_iter()
            .map(|(l, r, pass)| json!({"what": l, "ratio": r, "met": pass}))
            .collect();
        json!({
            "bench": "proxy_chain",
            "settings": {
                "bulk_bytes": self.bulk_bytes, "verify_mib": self.args.verify_mib,
                "concurrency": self.args.concurrency, "conn_phase_seconds": self.conn_phase.as_secs_f64(),
                "latency_rounds": self.args.rounds, "reps": self.args.reps, "msg_size": self.args.msg_size,
                "held_connections": self.args.conns,
            },
            "peers_install": self.install,
            "negotiated": self.negotiated.iter().map(|(n, v)| json!({"name": n, "tls": v})).collect::<Vec<_>>(),
            "columns": cols,
            "ratios": ratios,
            "notes": self.notes,
            "load_average_start": load_average_json(self.load.0),
            "load_average_end": load_average_json(self.load.1),
        })
    }
}
