//! `sockmap_hops`: does `--sockmap` speed up the pod-local loopback hops on their own?
//! (issue 14, point 5: keep it only for ≥ 1.2× on those hops without spurious `EAGAIN`s for
//! blocking apps.)
//!
//! `transparent` measures the whole chain (app → proxy A → mTLS over a veth → proxy B → app),
//! where the two loopback hops `--sockmap` short-cuts are a small part next to TLS. Here each
//! hop is measured with as little else on the path as the proxy allows, in two pods of the
//! transparent tests' harness (`mesh_tests::pod`), `meshd dev` on the host's loopback, `svc-a`
//! (app port 8080) in pod A, `svc-b` in pod B, echo apps (this binary) in both pods:
//!
//! - `kernel hop`: a client in pod A connects to `127.0.0.1:8080`, the echo in pod A. Port 8080
//!   is svc-a's app port, so with `--sockmap` both ends go into the sockhash exactly as the two
//!   ends of a real hop do, but no proxy is in the data path: this is the hop's kernel path
//!   alone, the most `--sockmap` can gain on either hop.
//! - `app → outbound`: a client in pod A connects to pod A's own address, port 9000 (no mesh
//!   service there): `connect4` redirects it to the outbound listener (hop 1, the one that
//!   differs between the columns), the proxy passes it through in plain TCP to the echo over
//!   the pod's address (not 127.0.0.0/8, so never in the sockhash). No TLS, no veth.
//! - `proxy → app`: a client in pod A connects to svc-b (pod B:8080): proxy A (never
//!   `--sockmap`) → mTLS over the veth → proxy B → hop 2 (the one that differs) → the echo in
//!   pod B. Every inbound connection is mTLS (there is no plaintext inbound path), so this row
//!   carries TLS and the veth; `kernel hop` is its undiluted bound.
//!
//! Columns: `plain` (pod proxies without `--sockmap`) and `sockmap` (pod A's proxy with it for
//! the first two rows, pod B's for the third). Each figure: many small messages (`--size` B
//! request/response ping-pong on one connection: messages/s, round-trip p50/p99) and bulk (one
//! stream of `--mib` MiB echoed, a writer thread and a reader on one socket: MiB/s). The
//! columns alternate order over `--rounds` rounds (proxies restarted for each); the table
//! shows each figure's median, and the speed-up as the median of the per-round ratios (the
//! two columns of one round run seconds apart, so a slow phase of the shared machine hits
//! both). The spurious `EAGAIN`s of blocking reads (see
//! `transparent_pods::read_blocking`) are summed over the rounds: the client's in the ping-pong
//! (one thread), the client's in the bulk stream (a writer thread on the same socket) and the
//! echo app's (one thread per connection); the sk_msg counters of the proxies prove the
//! `sockmap` column ran with the bypass.
//! Needs root, the eBPF object (`cargo xtask build-ebpf`) and release binaries.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mesh_benches::transparent_pods::{
    Echo, KillOnDrop, Pods, allow, ebpf_event, ebpf_object, echo_app, median_of, read_blocking,
    read_to_eof, register, run_json, start_meshd, start_proxy, stream,
};
use mesh_benches::{Table, ensure_in, percentile_f64, rate, ratio};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "The pod-local loopback hops with and without --sockmap")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Ping-pong messages per figure.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Bytes per ping-pong message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// MiB echoed per bulk figure.
    #[arg(long, default_value_t = 128)]
    mib: u64,
    /// Rounds of both columns, alternating their order; the table shows medians.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) The echo app, run inside a pod.
    Echo { ports: Vec<u16> },
    /// (internal) The load generator, run inside pod A; prints JSON.
    Client {
        addr: SocketAddr,
        messages: usize,
        size: usize,
        mib: u64,
    },
}

const APP_PORT: u16 = 8080;
/// Pod A's echo port that is no mesh destination (passed through by the proxy).
const PLAIN_PORT: u16 = 9000;
const ROWS: [&str; 3] = ["kernel hop", "app → outbound", "proxy → app"];
const COLUMNS: [&str; 2] = ["plain", "sockmap"];
/// Each figure (a client's JSON key); `_us` ones are latencies (lower is better).
const FIGURES: [&str; 4] = ["msgs_per_s", "rtt_p50_us", "rtt_p99_us", "bulk_mib_s"];
/// The spurious `EAGAIN` counts: the client's ping-pong, the client's bulk, the echo app's.
const EAGAINS: [&str; 3] = ["pingpong_eagain", "bulk_eagain", "app_eagain"];
/// Ping-pong messages sent before the timed ones.
const WARMUP: usize = 200;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Echo { ports }) => echo_app(&ports),
        Some(Role::Client {
            addr,
            messages,
            size,
            mib,
        }) => {
            let v = client(addr, messages, size, mib)?;
            println!("{v}");
            Ok(())
        }
        None => run(&cli),
    }
}

/// Ping-pong then the bulk stream against `addr`.
fn client(addr: SocketAddr, messages: usize, size: usize, mib: u64) -> anyhow::Result<Value> {
    let mut spurious = 0u64;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_nodelay(true)?;
    let timeout = Duration::from_secs(10);
    s.set_read_timeout(Some(timeout))?;
    let msg = vec![0x42u8; size];
    let mut back = vec![0u8; size];
    let mut rtt = Vec::with_capacity(messages);
    let start = Instant::now();
    let mut timed_from = start;
    for i in 0..WARMUP + messages {
        if i == WARMUP {
            timed_from = Instant::now();
        }
        let t = Instant::now();
        s.write_all(&msg)?;
        let mut got = 0;
        while got < size {
            let n = read_blocking(&mut s, &mut back[got..], timeout, &mut spurious)
                .context("ping-pong: reading the echo")?;
            if n == 0 {
                bail!("ping-pong: the connection ended before the echo");
            }
            got += n;
        }
        if i >= WARMUP {
            rtt.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let secs = timed_from.elapsed().as_secs_f64();
    s.shutdown(Shutdown::Write)?;
    read_to_eof(&mut s, &mut spurious)?;
    rtt.sort_by(f64::total_cmp);
    let mut bulk_spurious = 0u64;
    let bulk = stream(addr, mib, &mut bulk_spurious)?;
    Ok(json!({
        "msgs_per_s": messages as f64 / secs,
        "rtt_p50_us": percentile_f64(&rtt, 50.0),
        "rtt_p99_us": percentile_f64(&rtt, 99.0),
        "bulk_mib_s": bulk,
        "pingpong_eagain": spurious,
        "bulk_eagain": bulk_spurious,
    }))
}

/// What one run shares: the pods, the agent, the binaries.
struct Bench<'a> {
    cli: &'a Cli,
    pods: &'a Pods,
    exe: &'a Path,
    agent: SocketAddr,
    object: &'a Path,
    /// The echo apps of pod A and pod B.
    echo: [&'a Echo; 2],
}

impl Bench<'_> {
    fn proxy(&self, i: usize, sockmap: bool) -> anyhow::Result<(KillOnDrop, SocketAddr)> {
        let bin_dir = self.exe.parent().context("binary directory")?;
        let service = ["svc-a", "svc-b"][i];
        let extra: &[&str] = if sockmap { &["--sockmap"] } else { &[] };
        start_proxy(
            bin_dir,
            self.agent,
            service,
            self.pods,
            i,
            self.object,
            extra,
        )
    }

    /// One row's figures: the client in pod A against `addr`, echoed by pod `echo`'s app
    /// (whose spurious `EAGAIN`s on the two connections are added as `app_eagain`).
    fn measure(&self, addr: SocketAddr, echo: usize) -> anyhow::Result<Value> {
        let args = [
            "client".to_string(),
            addr.to_string(),
            self.cli.messages.to_string(),
            self.cli.size.to_string(),
            self.cli.mib.to_string(),
        ];
        self.echo[echo].discard();
        let mut v = run_json(self.pods, 0, self.exe, &args)?;
        v["app_eagain"] = json!(self.echo[echo].closed(2)?);
        Ok(v)
    }

    /// The three rows of one column, and the sk_msg counters of its proxies (A, B).
    fn column(&self, sockmap: bool) -> anyhow::Result<([Value; 3], Value)> {
        let (a, b) = (self.pods.pod(0), self.pods.pod(1));
        let (_proxy_b, admin_b) = self.proxy(1, sockmap)?;
        let (proxy_a, _) = self.proxy(0, false)?;
        let inbound = self.measure(b.addr(APP_PORT), 1)?;
        drop(proxy_a);
        let (_proxy_a, admin_a) = self.proxy(0, sockmap)?;
        let kernel = self.measure(SocketAddr::from(([127, 0, 0, 1], APP_PORT)), 0)?;
        let outbound = self.measure(a.addr(PLAIN_PORT), 0)?;
        let counters = |admin| -> anyhow::Result<Value> {
            Ok(json!({
                "inserted": ebpf_event(admin, "sockmap_inserted")?,
                "redirected": ebpf_event(admin, "sockmap_redirected")?,
            }))
        };
        let proof = if sockmap {
            json!({"pod_a": counters(admin_a)?, "pod_b": counters(admin_b)?})
        } else {
            Value::Null
        };
        Ok(([kernel, outbound, inbound], proof))
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    ensure_in("messages", cli.messages, 100..=1_000_000)?;
    ensure_in("size", cli.size, 1..=65_536)?;
    ensure_in("mib", cli.mib, 1..=4096)?;
    ensure_in("rounds", cli.rounds, 1..=20)?;
    mesh_tests::pod::require_root()?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary directory")?.to_path_buf();
    let object = ebpf_object()?;
    let load_start = mesh_benches::load_average();
    let mut pods = Pods::create()?;
    let (meshd, agent) = start_meshd(&bin_dir)?;
    register(agent, "svc-a", pods.pod(0).addr(APP_PORT))?;
    register(agent, "svc-b", pods.pod(1).addr(APP_PORT))?;
    allow(agent, "svc-a", "svc-b")?;
    let echo_a = pods.start_echo(0, &exe, &[APP_PORT, PLAIN_PORT])?;
    let echo_b = pods.start_echo(1, &exe, &[APP_PORT])?;
    let bench = Bench {
        cli,
        pods: &pods,
        exe: &exe,
        agent,
        object: &object,
        echo: [&echo_a, &echo_b],
    };

    // rounds[r][column][row]
    let mut rounds: Vec<[[Value; 3]; 2]> = Vec::new();
    let mut proofs = Vec::new();
    let started = Instant::now();
    for r in 0..cli.rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut cols: [[Value; 3]; 2] = Default::default();
        for sockmap in order {
            let (rows, proof) = bench.column(sockmap)?;
            cols[usize::from(sockmap)] = rows;
            if sockmap {
                proofs.push(proof);
            }
        }
        rounds.push(cols);
    }
    let seconds = started.elapsed().as_secs_f64();
    let load_end = mesh_benches::load_average();
    drop(meshd);
    drop(pods);

    let median = |col: usize, row: usize, k: &str| {
        let v: Vec<&Value> = rounds.iter().map(|r| &r[col][row]).collect();
        median_of(&v, k)
    };
    // Speed-up of sockmap over plain (latencies: plain / sockmap), paired within each round
    // (the two columns of a round run seconds apart), then the median over the rounds.
    let speedup = |row: usize, k: &str| {
        let mut v: Vec<f64> = rounds
            .iter()
            .map(|r| {
                let (plain, sockmap) = (r[0][row][k].as_f64(), r[1][row][k].as_f64());
                let (plain, sockmap) = (plain.unwrap_or(f64::NAN), sockmap.unwrap_or(f64::NAN));
                if k.ends_with("_us") {
                    ratio(plain, sockmap)
                } else {
                    ratio(sockmap, plain)
                }
            })
            .collect();
        v.sort_by(f64::total_cmp);
        percentile_f64(&v, 50.0)
    };
    let eagain = |col: usize, row: usize, k: &str| -> u64 {
        rounds
            .iter()
            .map(|r| r[col][row][k].as_u64().unwrap_or(0))
            .sum()
    };
    let mut rows_json = serde_json::Map::new();
    for (row, name) in ROWS.iter().enumerate() {
        let mut cols = serde_json::Map::new();
        for (col, cname) in COLUMNS.iter().enumerate() {
            let mut c: serde_json::Map<String, Value> = FIGURES
                .iter()
                .map(|k| ((*k).to_string(), json!(median(col, row, k))))
                .collect();
            if col == 1 {
                for k in FIGURES {
                    c.insert(format!("speedup_{k}"), json!(speedup(row, k)));
                }
            }
            for k in EAGAINS {
                c.insert(k.to_string(), json!(eagain(col, row, k)));
            }
            c.insert(
                "rounds".into(),
                json!(rounds.iter().map(|r| &r[col][row]).collect::<Vec<_>>()),
            );
            cols.insert((*cname).to_string(), Value::Object(c));
        }
        rows_json.insert((*name).to_string(), Value::Object(cols));
    }
    let result = json!({
        "messages": cli.messages, "size": cli.size, "mib": cli.mib, "rounds": rounds.len(),
        "seconds": seconds, "rows": rows_json, "sockmap_counters": proofs,
        "load_start": mesh_benches::load_average_json(load_start),
        "load_end": mesh_benches::load_average_json(load_end),
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!(
        "medians of {} rounds ({} ping-pongs of {} B, {} MiB bulk per figure; {seconds:.0} s); \
         sockmap/plain: median of the per-round speed-ups (latencies: plain/sockmap)",
        rounds.len(),
        cli.messages,
        cli.size,
        cli.mib
    );
    let mut t = Table::new([
        "hop",
        "column",
        "msgs",
        "rtt p50 µs",
        "rtt p99 µs",
        "bulk MiB/s",
        "EAGAIN ping/bulk/app",
    ]);
    for (row, name) in ROWS.iter().enumerate() {
        for (col, cname) in COLUMNS.iter().enumerate() {
            t.row([
                (*name).to_string(),
                (*cname).to_string(),
                rate(median(col, row, "msgs_per_s")),
                format!("{:.1}", median(col, row, "rtt_p50_us")),
                format!("{:.1}", median(col, row, "rtt_p99_us")),
                format!("{:.0}", median(col, row, "bulk_mib_s")),
                EAGAINS.map(|k| eagain(col, row, k).to_string()).join("/"),
            ]);
        }
        t.row(
            [(*name).to_string(), "sockmap/plain".to_string()]
                .into_iter()
                .chain(FIGURES.map(|k| format!("{:.2}x", speedup(row, k))))
                .chain([String::new()]),
        );
    }
    print!("{}", t.render());
    println!(
        "sk_msg counters of the sockmap column, per round (A: kernel hop + app → outbound; B: proxy → app):"
    );
    for p in &proofs {
        println!("  {p}");
    }
    println!(
        "load start {} / end {}",
        mesh_benches::load_average_text(load_start),
        mesh_benches::load_average_text(load_end)
    );
    std::io::stdout().flush()?;
    Ok(())
}
