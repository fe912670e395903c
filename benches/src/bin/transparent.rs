//! `transparent`: transparent mode's cost, side by side in one run (issue 5, acceptance 6).
//!
//! Two simulated pods (network namespaces joined by a veth pair, a cgroup v2 directory each),
//! `meshd dev` on the host's loopback, service `svc-a` in pod A and `svc-b` in pod B. A client
//! in pod A (this binary re-executed inside the pod's cgroup and namespace) connects to B's
//! real address; an echo app in pod B (also this binary) answers. Columns:
//!
//! - `direct`: no proxy at all (the floor).
//! - `ebpf`: `meshproxy run --transparent` in both pods; pod A's connects are redirected by the
//!   cgroup `connect4` program, the original destination comes back through the eBPF map.
//! - `iptables`: the same chain, but pod A's proxy runs with `--outbound-capture external` and
//!   an iptables `REDIRECT` rule in pod A (installed by this bench) sends the connects to it;
//!   the original destination comes from conntrack (`SO_ORIGINAL_DST`). Inbound steering in
//!   pod B is the same `sk_lookup` program in both proxied columns.
//!
//! Figures: connection setup latency (connect, one byte each way, close; p50/p99 over N
//! sequential connections, every one a mutual-TLS chain) and single-stream throughput. The
//! columns are measured in turn, `--rounds` times (proxies restarted for each), and the table
//! shows each figure's median over the rounds, so a busy phase of the machine hits every
//! column alike.
//! Needs root, `iptables`, the eBPF object (`cargo xtask build-ebpf`) and release binaries
//! (`cargo build --release -p meshproxy -p mesh-control -p mesh-benches`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mesh_benches::percentile_f64;
use mesh_benches::transparent_pods::{
    Pods, allow, ebpf_object, echo_app, median_of, register, run_json, sh, start_meshd,
    start_proxy, stream,
};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Transparent mode: eBPF redirect vs iptables REDIRECT vs direct")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Sequential connections per column for the setup latency.
    #[arg(long, default_value_t = 300)]
    connections: usize,
    /// MiB per column for the throughput.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Rounds of all columns, interleaved; the table shows each figure's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) The echo app, run inside pod B.
    Echo { ports: Vec<u16> },
    /// (internal) The load generator, run inside pod A; prints JSON.
    Client {
        addr: SocketAddr,
        connections: usize,
        mib: u64,
    },
}

const APP_PORT: u16 = 8080;
/// The columns, in the order each round measures them.
const COLUMNS: [&str; 3] = ["direct", "ebpf", "iptables"];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Echo { ports }) => echo_app(&ports),
        Some(Role::Client {
            addr,
            connections,
            mib,
        }) => {
            let v = client(addr, connections, mib)?;
            println!("{v}");
            Ok(())
        }
        None => run(&cli),
    }
}

/// Setup latency and throughput against `addr`.
fn client(addr: SocketAddr, connections: usize, mib: u64) -> anyhow::Result<Value> {
    let mut lat = Vec::with_capacity(connections);
    for _ in 0..connections {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        let n = s.read(&mut b).context("setup: reading the echoed byte")?;
        if n != 1 {
            bail!("setup: the connection ended before the echo");
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let throughput = stream(addr, mib)?;
    Ok(json!({
        "setup_p50_us": percentile_f64(&lat, 50.0),
        "setup_p99_us": percentile_f64(&lat, 99.0),
        "throughput_mib_s": throughput,
    }))
}

/// The client's figures for `column` (named in the error).
fn measure(pods: &Pods, exe: &Path, cli: &Cli, column: &str) -> anyhow::Result<Value> {
    let args = vec![
        "client".to_string(),
        format!("{}:{APP_PORT}", pods.pod(1).ip),
        cli.connections.to_string(),
        cli.mib.to_string(),
    ];
    run_json(pods, 0, exe, &args).with_context(|| format!("column {column}"))
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary directory")?.to_path_buf();
    let object = ebpf_object()?;
    let has_iptables = || Command::new("iptables").arg("--version").output().is_ok();
    if !has_iptables() {
        if let Some(why) = mesh_benches::apt::cannot_install() {
            bail!("iptables is not installed and {why}: the iptables column needs it");
        }
        if !mesh_benches::apt::install(&["iptables"]) || !has_iptables() {
            bail!("apt-get install iptables failed: the iptables column needs it");
        }
    }
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut pods = Pods::create()?;

    let (meshd, agent) = start_meshd(&bin_dir)?;
    register(agent, "svc-a", pods.pod(0).addr(APP_PORT))?;
    register(agent, "svc-b", pods.pod(1).addr(APP_PORT))?;
    allow(agent, "svc-a", "svc-b")?;
    pods.start_echo(1, &exe, &[APP_PORT])?;

    let start = |service: &str, i: usize, extra: &[&str]| {
        start_proxy(&bin_dir, agent, service, &pods, i, &object, extra)
    };
    let b_ip = pods.pod(1).ip.to_string();
    let rule = [
        "ip",
        "netns",
        "exec",
        &pods.pod(0).name,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        &b_ip,
        "--dport",
        "8080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ];
    let mut undo = rule.to_vec();
    undo[7] = "-D";

    // Rounds of every column in turn, so a slow phase of the (shared) machine hits all
    // columns alike; each figure is the median over the rounds.
    let mut rounds: Vec<[Value; COLUMNS.len()]> = Vec::new();
    for _ in 0..cli.rounds.max(1) {
        let direct = measure(&pods, &exe, cli, "direct")?;

        // Proxy B stays up through `ebpf` and `iptables` (only pod A's capture differs).
        let proxy_b = start("svc-b", 1, &[])?;
        let proxy_a = start("svc-a", 0, &[])?;
        let ebpf = measure(&pods, &exe, cli, "ebpf")?;
        drop(proxy_a);

        sh(&rule)?;
        let proxy_a = start("svc-a", 0, &["--outbound-capture", "external"])?;
        let iptables = measure(&pods, &exe, cli, "iptables");
        drop(proxy_a);
        sh(&undo)?;
        let iptables = iptables?;
        drop(proxy_b);
        rounds.push([direct, ebpf, iptables]);
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    drop(meshd);
    drop(pods);

    let median = |col: usize, k: &str| {
        let column: Vec<&Value> = rounds.iter().map(|r| &r[col]).collect();
        median_of(&column, k)
    };
    let mut columns = serde_json::Map::new();
    for (col, name) in COLUMNS.iter().enumerate() {
        columns.insert(
            (*name).to_string(),
            json!({
                "setup_p50_us": median(col, "setup_p50_us"),
                "setup_p99_us": median(col, "setup_p99_us"),
                "throughput_mib_s": median(col, "throughput_mib_s"),
                "rounds": rounds.iter().map(|r| r[col].clone()).collect::<Vec<_>>(),
            }),
        );
    }
    let result = json!({
        "connections": cli.connections, "mib": cli.mib, "rounds": rounds.len(),
        "columns": columns,
        "loadavg_start": load_start.trim(), "loadavg_end": load_end.trim(),
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!(
        "medians of {} interleaved rounds ({} connections, {} MiB each)",
        rounds.len(),
        cli.connections,
        cli.mib
    );
    println!(
        "{:<12} {:>14} {:>14} {:>16}",
        "column", "setup p50 µs", "setup p99 µs", "stream MiB/s"
    );
    for (col, name) in COLUMNS.iter().enumerate() {
        println!(
            "{name:<12} {:>14.0} {:>14.0} {:>16.0}",
            median(col, "setup_p50_us"),
            median(col, "setup_p99_us"),
            median(col, "throughput_mib_s")
        );
    }
    let (ebpf, iptables) = (1, 2);
    println!(
        "ebpf vs iptables: setup p50 speed-up {:.2}x, stream {:.2}x",
        median(iptables, "setup_p50_us") / median(ebpf, "setup_p50_us"),
        median(ebpf, "throughput_mib_s") / median(iptables, "throughput_mib_s")
    );
    println!("load start {} end {}", load_start.trim(), load_end.trim());
    Ok(())
}
