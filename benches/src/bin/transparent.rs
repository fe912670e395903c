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
//! - `ebpf+sockmap`: `ebpf` with both proxies started with `--sockmap`: the two loopback hops
//!   (app → proxy A in pod A, proxy B → app in pod B) go socket to socket through a sockhash
//!   and an `sk_msg` program; the mTLS hop between the pods still crosses the veth.
//!
//! Figures: connection setup latency (connect, one byte each way, close; p50/p99 over N
//! sequential connections, every one a mutual-TLS chain) and single-stream throughput. The
//! columns are measured in turn, `--rounds` times (proxies restarted for each), and the table
//! shows each figure's median over the rounds, so a busy phase of the machine hits every
//! column alike. The client counts the spurious `EAGAIN`s its blocking reads get (and retries
//! them): with `--sockmap` the kernel's `tcp_bpf_recvmsg` can fail a blocking read that was
//! woken without data.
//! Needs root, `iptables`, the eBPF object (`cargo xtask build-ebpf`) and release binaries
//! (`cargo build --release -p meshproxy -p mesh-control -p mesh-benches`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mesh_benches::percentile_f64;
use mesh_benches::transparent_pods::{
    Pods, allow, ebpf_event, ebpf_object, echo_app, median_of, read_blocking, register, run_json,
    sh, start_meshd, start_proxy, stream,
};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Transparent mode: eBPF redirect vs iptables REDIRECT vs direct, and --sockmap")]
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
const COLUMNS: [&str; 4] = ["direct", "ebpf", "iptables", "ebpf+sockmap"];

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
    let mut spurious_eagain = 0u64;
    let mut lat = Vec::with_capacity(connections);
    for _ in 0..connections {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        let timeout = Duration::from_secs(10);
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        let n = read_blocking(&mut s, &mut b, timeout, &mut spurious_eagain)
            .context("setup: reading the echoed byte")?;
        if n != 1 {
            bail!("setup: the connection ended before the echo");
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let throughput = stream(addr, mib, &mut spurious_eagain)?;
    Ok(json!({
        "setup_p50_us": percentile_f64(&lat, 50.0),
        "setup_p99_us": percentile_f64(&lat, 99.0),
        "throughput_mib_s": throughput,
        "spurious_eagain": spurious_eagain,
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
    // Its report lines are not needed here: the client counts the EAGAINs it measures.
    let _echo = pods.start_echo(1, &exe, &[APP_PORT])?;

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
    let mut sockmap_redirected = [0u64; 2];
    for _ in 0..cli.rounds.max(1) {
        let direct = measure(&pods, &exe, cli, "direct")?;

        // Proxy B stays up through `ebpf` and `iptables` (only pod A's capture differs).
        let (proxy_b, _) = start("svc-b", 1, &[])?;
        let (proxy_a, _) = start("svc-a", 0, &[])?;
        let ebpf = measure(&pods, &exe, cli, "ebpf")?;
        drop(proxy_a);

        sh(&rule)?;
        let (proxy_a, _) = start("svc-a", 0, &["--outbound-capture", "external"])?;
        let iptables = measure(&pods, &exe, cli, "iptables");
        drop(proxy_a);
        sh(&undo)?;
        let iptables = iptables?;
        drop(proxy_b);

        // Both proxies with --sockmap: each pod's loopback hop bypasses TCP.
        let (proxy_b, admin_b) = start("svc-b", 1, &["--sockmap"])?;
        let (proxy_a, admin_a) = start("svc-a", 0, &["--sockmap"])?;
        let sockmap = measure(&pods, &exe, cli, "ebpf+sockmap")?;
        // Proof the column measured the bypass: messages the sk_msg programs redirected.
        sockmap_redirected[0] += ebpf_event(admin_a, "sockmap_redirected")?;
        sockmap_redirected[1] += ebpf_event(admin_b, "sockmap_redirected")?;
        drop(proxy_a);
        drop(proxy_b);
        rounds.push([direct, ebpf, iptables, sockmap]);
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    drop(meshd);
    drop(pods);

    let median = |col: usize, k: &str| {
        let column: Vec<&Value> = rounds.iter().map(|r| &r[col]).collect();
        median_of(&column, k)
    };
    let eagain = |col: usize| -> u64 {
        rounds
            .iter()
            .map(|r| r[col]["spurious_eagain"].as_u64().unwrap_or(0))
            .sum()
    };
    let mut columns = serde_json::Map::new();
    for (col, name) in COLUMNS.iter().enumerate() {
        columns.insert(
            (*name).to_string(),
            json!({
                "setup_p50_us": median(col, "setup_p50_us"),
                "setup_p99_us": median(col, "setup_p99_us"),
                "throughput_mib_s": median(col, "throughput_mib_s"),
                "spurious_eagain": eagain(col),
                "rounds": rounds.iter().map(|r| r[col].clone()).collect::<Vec<_>>(),
            }),
        );
    }
    let result = json!({
        "connections": cli.connections, "mib": cli.mib, "rounds": rounds.len(),
        "columns": columns, "sockmap_redirected": sockmap_redirected,
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
    let (ebpf, iptables, sockmap) = (1, 2, 3);
    println!(
        "ebpf vs iptables: setup p50 speed-up {:.2}x, stream {:.2}x",
        median(iptables, "setup_p50_us") / median(ebpf, "setup_p50_us"),
        median(ebpf, "throughput_mib_s") / median(iptables, "throughput_mib_s")
    );
    println!(
        "ebpf+sockmap vs ebpf: setup p50 speed-up {:.2}x, stream {:.2}x; messages redirected by sk_msg: pod A {}, pod B {}",
        median(ebpf, "setup_p50_us") / median(sockmap, "setup_p50_us"),
        median(sockmap, "throughput_mib_s") / median(ebpf, "throughput_mib_s"),
        sockmap_redirected[0],
        sockmap_redirected[1]
    );
    println!(
        "spurious EAGAIN on the client's blocking reads (retried): {}",
        COLUMNS
            .iter()
            .enumerate()
            .map(|(col, name)| format!("{name} {}", eagain(col)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("load start {} end {}", load_start.trim(), load_end.trim());
    Ok(())
}
