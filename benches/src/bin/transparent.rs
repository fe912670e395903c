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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mesh_tests::pod::{Pod, PodPair};
use mesh_tests::process::kill_and_reap;
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
    App { port: u16 },
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
        Some(Role::App { port }) => app(port),
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

/// Echo server: one thread per connection, echoes until EOF.
fn app(port: u16) -> anyhow::Result<()> {
    let l = TcpListener::bind(("0.0.0.0", port))?;
    println!("ready");
    std::io::stdout().flush()?;
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = c.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A blocking read that retries a spurious `EAGAIN` (one returned before the socket's read
/// timeout passed), counting it in `spurious`. With `--sockmap` the kernel's `tcp_bpf_recvmsg`
/// returns `EAGAIN` from a blocking read whose wait was woken without data, e.g. by the
/// write-space wakeup of another thread writing to the same socket; an app doing blocking
/// reads sees it as a failed read.
fn read_blocking(
    s: &mut TcpStream,
    buf: &mut [u8],
    timeout: Duration,
    spurious: &mut u64,
) -> std::io::Result<usize> {
    let start = Instant::now();
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < timeout => {
                *spurious += 1;
            }
            r => return r,
        }
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
    let total = mib * 1024 * 1024;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    let timeout = Duration::from_secs(60);
    s.set_read_timeout(Some(timeout))?;
    let mut w = s.try_clone()?;
    let t = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let buf = vec![0x5au8; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut r = s;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < total {
        let n = read_blocking(&mut r, &mut buf, timeout, &mut spurious_eagain)
            .context("stream: reading the echo")?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?
        .context("stream: writing")?;
    if got != total {
        bail!("echoed {got} of {total} bytes");
    }
    Ok(json!({
        "setup_p50_us": percentile(&lat, 0.5),
        "setup_p99_us": percentile(&lat, 0.99),
        "throughput_mib_s": mib as f64 / secs,
        "spurious_eagain": spurious_eagain,
    }))
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The two pods (network namespaces joined by a veth, a cgroup v2 directory each), made by
/// the transparent-mode tests' harness (`mesh_tests::pod`), and the processes started in
/// them, killed before the pods are removed.
struct Pods {
    pair: PodPair,
    children: Vec<Child>,
}

impl Pods {
    fn create() -> anyhow::Result<Self> {
        Ok(Self {
            pair: PodPair::create()?,
            children: Vec::new(),
        })
    }

    /// Pod A (0) or pod B (1).
    fn pod(&self, i: usize) -> &Pod {
        if i == 0 { &self.pair.a } else { &self.pair.b }
    }

    /// A command run inside pod `i` (its cgroup and its network namespace).
    fn command(&self, i: usize, program: &Path, args: &[String]) -> anyhow::Result<Command> {
        let program = program.to_str().context("program path is not UTF-8")?;
        let mut c = self.pod(i).command(program)?;
        c.args(args);
        Ok(c)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill_and_reap(c);
        }
    }
}

/// One HTTP/1.1 request to the agent or a proxy's admin port, with the tests' client (one
/// connection per call): (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let body = body.map(Value::to_string);
    let r = mesh_tests::process::http(method, addr, path, body.as_deref())?;
    Ok((r.status, r.body))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a transparent proxy for `service` in pod `i`; returns it with its admin address.
fn start_proxy(
    bin_dir: &Path,
    agent: SocketAddr,
    service: &str,
    pods: &Pods,
    i: usize,
    object: &Path,
    extra: &[&str],
) -> anyhow::Result<(KillOnDrop, SocketAddr)> {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let child = Command::new(bin_dir.join("meshproxy"))
        .args(["run", "--sidecar-for", service, "--agent-addr"])
        .arg(agent.to_string())
        .arg("--admin-addr")
        .arg(admin.to_string())
        .args(["--transparent", "--cgroup"])
        .arg(&pods.pod(i).cgroup)
        .args(["--netns", &pods.pod(i).name, "--ebpf-object"])
        .arg(object)
        .args(extra)
        .env("MESH_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(
        &format!("{service} proxy ready"),
        Duration::from_secs(30),
        || http(admin, "GET", "/ready", None).is_ok_and(|(s, _)| s == 200),
    )?;
    Ok((KillOnDrop(child), admin))
}

/// One of the eBPF programs' counters from a proxy's `/metrics`.
fn ebpf_event(admin: SocketAddr, event: &str) -> anyhow::Result<u64> {
    let (_, body) = http(admin, "GET", "/metrics", None)?;
    let prefix = format!("meshproxy_transparent_ebpf_events_total{{event=\"{event}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .with_context(|| format!("no {event} counter on {admin}/metrics"))
}

/// A process (meshd, a proxy) killed and reaped when dropped: an early error never leaves one
/// running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

fn measure(pods: &Pods, exe: &Path, cli: &Cli) -> anyhow::Result<Value> {
    let args = vec![
        "client".to_string(),
        format!("{}:{APP_PORT}", pods.pod(1).ip),
        cli.connections.to_string(),
        cli.mib.to_string(),
    ];
    let out = pods.command(0, exe, &args)?.output()?;
    if !out.status.success() {
        bail!("client: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary directory")?.to_path_buf();
    let object = std::env::var_os("MESH_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../ebpf/target/bpfel-unknown-none/release/mesh-ebpf")
        });
    if !object.is_file() {
        bail!(
            "eBPF object {} missing: run `cargo xtask build-ebpf`",
            object.display()
        );
    }
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

    let (http_port, rpc_port) = (free_port()?, free_port()?);
    let agent: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    let meshd = Command::new(bin_dir.join("meshd"))
        .args(["dev", "--http-addr", &agent.to_string(), "--bind"])
        .arg(format!("127.0.0.1:{rpc_port}"))
        .env("MESH_LOG", "warn,openraft=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting meshd dev")?;
    let meshd = KillOnDrop(meshd);
    wait_for("CA roots", Duration::from_secs(30), || {
        http(agent, "GET", "/v1/connect/ca/roots", None)
            .is_ok_and(|(s, b)| s == 200 && b.contains("RootCert"))
    })?;
    for (name, ip) in [("svc-a", pods.pod(0).ip), ("svc-b", pods.pod(1).ip)] {
        let reg = json!({
            "Name": name, "ID": name, "Address": ip.to_string(), "Port": APP_PORT,
            "Connect": {"SidecarService": {"Port": 21000,
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]}}
        });
        let (s, b) = http(agent, "PUT", "/v1/agent/service/register", Some(&reg))?;
        if s != 200 {
            bail!("register {name}: {s} {b}");
        }
    }
    let (s, b) = http(
        agent,
        "PUT",
        "/v1/connect/intentions/exact?source=svc-a&destination=svc-b",
        Some(&json!({"Action": "allow"})),
    )?;
    if s != 200 {
        bail!("intention: {s} {b}");
    }
    let mut app = pods
        .command(1, &exe, &["app".into(), APP_PORT.to_string()])?
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(app.stdout.take().context("app stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("the app in pod B did not start");
    }
    pods.children.push(app);

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
        let direct = measure(&pods, &exe, cli)?;

        // Proxy B stays up through `ebpf` and `iptables` (only pod A's capture differs).
        let (proxy_b, _) = start("svc-b", 1, &[])?;
        let (proxy_a, _) = start("svc-a", 0, &[])?;
        let ebpf = measure(&pods, &exe, cli)?;
        drop(proxy_a);

        sh(&rule)?;
        let (proxy_a, _) = start("svc-a", 0, &["--outbound-capture", "external"])?;
        let iptables = measure(&pods, &exe, cli);
        drop(proxy_a);
        sh(&undo)?;
        let iptables = iptables?;
        drop(proxy_b);

        // Both proxies with --sockmap: each pod's loopback hop bypasses TCP.
        let (proxy_b, admin_b) = start("svc-b", 1, &["--sockmap"])?;
        let (proxy_a, admin_a) = start("svc-a", 0, &["--sockmap"])?;
        let sockmap = measure(&pods, &exe, cli)?;
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

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let median = |col: usize, k: &str| {
        let mut v: Vec<f64> = rounds.iter().map(|r| f(&r[col], k)).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
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
