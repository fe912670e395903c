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
//! sequential connections, every one a full mutual-TLS chain) and single-stream throughput.
//! Needs root, `iptables`, the eBPF object (`cargo xtask build-ebpf`) and release binaries
//! (`cargo build --release -p meshproxy -p mesh-control -p mesh-benches`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
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
const POD_A: &str = "10.77.0.1";
const POD_B: &str = "10.77.0.2";

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
        s.read_exact(&mut b)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let total = mib * 1024 * 1024;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
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
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if got != total {
        bail!("echoed {got} of {total} bytes");
    }
    Ok(json!({
        "setup_p50_us": percentile(&lat, 0.5),
        "setup_p99_us": percentile(&lat, 0.99),
        "throughput_mib_s": mib as f64 / secs,
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

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    mi.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .context("no cgroup v2 hierarchy mounted")
}

/// Namespaces, veth and cgroups; removed on drop along with every process started in a pod.
struct Pods {
    ns: [String; 2],
    cg: [PathBuf; 2],
    veth: [String; 2],
    children: Vec<Child>,
}

impl Pods {
    fn create() -> anyhow::Result<Self> {
        let tag = std::process::id() % 100_000;
        let root = cgroup2_root()?;
        let p = Self {
            ns: [format!("mbpa{tag}"), format!("mbpb{tag}")],
            cg: [
                root.join(format!("mesh-bench-poda{tag}")),
                root.join(format!("mesh-bench-podb{tag}")),
            ],
            veth: [format!("mba{tag}"), format!("mbb{tag}")],
            children: Vec::new(),
        };
        for i in 0..2 {
            sh(&["ip", "netns", "add", &p.ns[i]])?;
            sh(&["ip", "-n", &p.ns[i], "link", "set", "lo", "up"])?;
            std::fs::create_dir_all(&p.cg[i])?;
        }
        sh(&[
            "ip", "link", "add", &p.veth[0], "netns", &p.ns[0], "type", "veth", "peer", "name",
            &p.veth[1], "netns", &p.ns[1],
        ])?;
        for (i, ip) in [POD_A, POD_B].into_iter().enumerate() {
            let cidr = format!("{ip}/24");
            sh(&[
                "ip", "-n", &p.ns[i], "addr", "add", &cidr, "dev", &p.veth[i],
            ])?;
            sh(&["ip", "-n", &p.ns[i], "link", "set", &p.veth[i], "up"])?;
        }
        Ok(p)
    }

    /// A command run inside pod `i` (its cgroup first: `ip netns exec` remounts /sys).
    fn command(&self, i: usize, program: &Path, args: &[String]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec ip netns exec {} \"$@\"",
                self.cg[i].display(),
                self.ns[i]
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..2 {
            if let Ok(procs) = std::fs::read_to_string(self.cg[i].join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&self.cg[i]).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns[i]])
                .status();
        }
    }
}

/// Minimal HTTP/1.1 request to the agent (one connection per call).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
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

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        // Newest first: the proxies before the control plane they talk to.
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_proxy(
    bin_dir: &Path,
    agent: SocketAddr,
    service: &str,
    pods: &Pods,
    i: usize,
    object: &Path,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let child = Command::new(bin_dir.join("meshproxy"))
        .args(["run", "--sidecar-for", service, "--agent-addr"])
        .arg(agent.to_string())
        .arg("--admin-addr")
        .arg(admin.to_string())
        .args(["--transparent", "--cgroup"])
        .arg(&pods.cg[i])
        .args(["--netns", &pods.ns[i], "--ebpf-object"])
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
    Ok(child)
}

fn measure(pods: &Pods, exe: &Path, cli: &Cli) -> anyhow::Result<Value> {
    let args = vec![
        "client".to_string(),
        format!("{POD_B}:{APP_PORT}"),
        cli.connections.to_string(),
        cli.mib.to_string(),
    ];
    let out = pods.command(0, exe, &args).output()?;
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
    if Command::new("iptables").arg("--version").output().is_err() {
        bail!(
            "iptables is not installed (apt-get install iptables) and the iptables column needs it"
        );
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
    let mut procs = Procs(vec![meshd]);
    wait_for("CA roots", Duration::from_secs(30), || {
        http(agent, "GET", "/v1/connect/ca/roots", None)
            .is_ok_and(|(s, b)| s == 200 && b.contains("RootCert"))
    })?;
    for (name, ip) in [("svc-a", POD_A), ("svc-b", POD_B)] {
        let reg = json!({
            "Name": name, "ID": name, "Address": ip, "Port": APP_PORT,
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
        .command(1, &exe, &["app".into(), APP_PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(app.stdout.take().context("app stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("the app in pod B did not start");
    }
    pods.children.push(app);

    let direct = measure(&pods, &exe, cli)?;

    let proxy_b = start_proxy(&bin_dir, agent, "svc-b", &pods, 1, &object, &[])?;
    procs.0.push(proxy_b);
    let proxy_a = start_proxy(&bin_dir, agent, "svc-a", &pods, 0, &object, &[])?;
    let ebpf = measure(&pods, &exe, cli)?;
    let mut proxy_a = proxy_a;
    let _ = proxy_a.kill();
    let _ = proxy_a.wait();

    let rule = [
        "ip",
        "netns",
        "exec",
        &pods.ns[0],
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        POD_B,
        "--dport",
        "8080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ];
    sh(&rule)?;
    let proxy_a = start_proxy(
        &bin_dir,
        agent,
        "svc-a",
        &pods,
        0,
        &object,
        &["--outbound-capture", "external"],
    )?;
    let iptables = measure(&pods, &exe, cli)?;
    let mut proxy_a = proxy_a;
    let _ = proxy_a.kill();
    let _ = proxy_a.wait();

    // eBPF again, last: shows how much of a difference is the order of the columns.
    let mut undo = rule.to_vec();
    undo[7] = "-D";
    sh(&undo)?;
    let proxy_a = start_proxy(&bin_dir, agent, "svc-a", &pods, 0, &object, &[])?;
    procs.0.push(proxy_a);
    let ebpf_again = measure(&pods, &exe, cli)?;
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    drop(procs);
    drop(pods);

    let result = json!({
        "connections": cli.connections, "mib": cli.mib,
        "direct": direct, "ebpf": ebpf, "iptables": iptables, "ebpf_again": ebpf_again,
        "loadavg_start": load_start.trim(), "loadavg_end": load_end.trim(),
    });
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{:<10} {:>14} {:>14} {:>16}",
        "column", "setup p50 µs", "setup p99 µs", "stream MiB/s"
    );
    for (name, v) in [
        ("direct", &direct),
        ("ebpf", &ebpf),
        ("iptables", &iptables),
        ("ebpf again", &ebpf_again),
    ] {
        println!(
            "{name:<10} {:>14.0} {:>14.0} {:>16.0}",
            f(v, "setup_p50_us"),
            f(v, "setup_p99_us"),
            f(v, "throughput_mib_s")
        );
    }
    println!(
        "ebpf (again) vs iptables: setup p50 speed-up {:.2}x, stream {:.2}x",
        f(&iptables, "setup_p50_us") / f(&ebpf_again, "setup_p50_us"),
        f(&ebpf_again, "throughput_mib_s") / f(&iptables, "throughput_mib_s")
    );
    println!("load start {} end {}", load_start.trim(), load_end.trim());
    Ok(())
}
