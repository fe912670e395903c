//! The pieces the transparent-mode benches (`transparent`, `sockmap_hops`) share: simulated
//! pods from the transparent tests' harness (`mesh_tests::pod`) with the processes started in
//! them, `meshd dev` with services registered, `meshproxy run --transparent` per pod, an echo
//! app that counts the spurious `EAGAIN`s of its blocking reads, and the client-side blocking
//! reads and single-stream echo measured the same way by both benches.
//!
//! Why a module and not a copy in each binary: both benches must measure their shared figures
//! (the stream, the `EAGAIN` count) with the same code to be comparable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_tests::pod::{Pod, PodPair};
use mesh_tests::process::kill_and_reap;
use serde_json::{Value, json};

/// A process (meshd, a proxy) killed and reaped when dropped: an early error never leaves one
/// running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// The two pods (network namespaces joined by a veth, a cgroup v2 directory each), made by
/// the transparent-mode tests' harness (`mesh_tests::pod`), and the processes started in
/// them, killed before the pods are removed.
pub struct Pods {
    pub pair: PodPair,
    pub children: Vec<Child>,
}

impl Pods {
    pub fn create() -> anyhow::Result<Self> {
        Ok(Self {
            pair: PodPair::create()?,
            children: Vec::new(),
        })
    }

    /// Pod A (0) or pod B (1).
    pub fn pod(&self, i: usize) -> &Pod {
        if i == 0 { &self.pair.a } else { &self.pair.b }
    }

    /// A command run inside pod `i` (its cgroup and its network namespace).
    pub fn command(&self, i: usize, program: &Path, args: &[String]) -> anyhow::Result<Command> {
        let program = program.to_str().context("program path is not UTF-8")?;
        let mut c = self.pod(i).command(program)?;
        c.args(args);
        Ok(c)
    }

    /// Starts `exe echo <ports>` ([`echo_app`]) in pod `i` and waits until it listens.
    pub fn start_echo(&mut self, i: usize, exe: &Path, ports: &[u16]) -> anyhow::Result<Echo> {
        let mut args = vec!["echo".to_string()];
        args.extend(ports.iter().map(u16::to_string));
        let mut app = self
            .command(i, exe, &args)?
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = app.stdout.take().context("echo app stdout")?;
        self.children.push(app);
        let (tx, lines) = mpsc::channel();
        // Forwards the app's lines until it exits (its stdout closes); bounded by the app.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(10))
            .context("the echo app did not start")?;
        if ready != "ready" {
            bail!("the echo app did not start: {ready}");
        }
        Ok(Echo { lines })
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill_and_reap(c);
        }
    }
}

/// A running [`echo_app`]: the lines it prints after `ready`, one per finished connection.
pub struct Echo {
    lines: mpsc::Receiver<String>,
}

impl Echo {
    /// Waits (bounded) for `connections` more finished connections; returns the spurious
    /// `EAGAIN`s the app's blocking reads got on them.
    pub fn closed(&self, connections: usize) -> anyhow::Result<u64> {
        let mut eagain = 0;
        for _ in 0..connections {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .context("the echo app did not report a finished connection")?;
            eagain += line
                .strip_prefix("closed eagain=")
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("unexpected line from the echo app: {line}"))?;
        }
        Ok(eagain)
    }

    /// Forgets the lines of connections nobody waits for (e.g. a proxy's probes).
    pub fn discard(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

/// The echo app (run inside a pod, on every port of `ports`): one thread per connection,
/// echoes with blocking reads until EOF, then prints `closed eagain=N` (the spurious `EAGAIN`s
/// its reads got, see [`read_blocking`]) before ending its side, so a client that read to EOF
/// knows the line is on its way.
pub fn echo_app(ports: &[u16]) -> anyhow::Result<()> {
    let listeners = ports
        .iter()
        .map(|p| TcpListener::bind(("0.0.0.0", *p)).with_context(|| format!("binding port {p}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let accepters: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || l.incoming().flatten().for_each(echo_connection)))
        .collect();
    for a in accepters {
        let _ = a.join();
    }
    Ok(())
}

fn echo_connection(mut c: TcpStream) {
    std::thread::spawn(move || {
        let _ = c.set_nodelay(true);
        let timeout = Duration::from_secs(60);
        let _ = c.set_read_timeout(Some(timeout));
        let mut spurious = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match read_blocking(&mut c, &mut buf, timeout, &mut spurious) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "closed eagain={spurious}");
        let _ = out.flush();
        drop(out);
        let _ = c.shutdown(Shutdown::Write);
    });
}

/// A blocking read that retries a spurious `EAGAIN` (one returned before the socket's read
/// timeout passed), counting it in `spurious`. With `--sockmap` the kernel's `tcp_bpf_recvmsg`
/// returns `EAGAIN` from a blocking read whose wait was woken without data, e.g. by the
/// write-space wakeup of another thread writing to the same socket; an app doing blocking
/// reads sees it as a failed read.
pub fn read_blocking(
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

/// Reads until EOF (bounded by the socket's read timeout), so the echo app's report of the
/// connection was printed before this returns.
pub fn read_to_eof(s: &mut TcpStream, spurious: &mut u64) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    for _ in 0..1024 {
        if read_blocking(s, &mut buf, Duration::from_secs(10), spurious)? == 0 {
            return Ok(());
        }
    }
    bail!("the echo kept sending after the client's end of stream")
}

/// Single-stream throughput: `mib` MiB written by one thread and read back (echoed) by
/// another on the same socket; MiB/s. The reads count their spurious `EAGAIN`s in `spurious`.
pub fn stream(addr: SocketAddr, mib: u64, spurious: &mut u64) -> anyhow::Result<f64> {
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
        let n = read_blocking(&mut r, &mut buf, timeout, spurious)
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
    read_to_eof(&mut r, spurious)?;
    Ok(mib as f64 / secs)
}

/// Runs a command to completion; its stderr is the error.
pub fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One HTTP/1.1 request to the agent or a proxy's admin port, with the tests' client (one
/// connection per call): (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let body = body.map(Value::to_string);
    let r = mesh_tests::process::http(method, addr, path, body.as_deref())?;
    Ok((r.status, r.body))
}

/// Polls `ok` every 50 ms until it holds or `limit` passed.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The eBPF object (`MESH_EBPF_OBJECT`, else the one `cargo xtask build-ebpf` builds).
pub fn ebpf_object() -> anyhow::Result<PathBuf> {
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
    Ok(object)
}

/// `meshd dev` on the host's loopback, up once its CA has roots: the process and its HTTP
/// address.
pub fn start_meshd(bin_dir: &Path) -> anyhow::Result<(KillOnDrop, SocketAddr)> {
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
    Ok((meshd, agent))
}

/// Registers service `name` at `addr` with a sidecar (port 21000, passing TTL check).
pub fn register(agent: SocketAddr, name: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let reg = json!({
        "Name": name, "ID": name, "Address": addr.ip().to_string(), "Port": addr.port(),
        "Connect": {"SidecarService": {"Port": 21000,
            "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]}}
    });
    let (s, b) = http(agent, "PUT", "/v1/agent/service/register", Some(&reg))?;
    if s != 200 {
        bail!("register {name}: {s} {b}");
    }
    Ok(())
}

/// An allow intention `source` → `destination`.
pub fn allow(agent: SocketAddr, source: &str, destination: &str) -> anyhow::Result<()> {
    let path = format!("/v1/connect/intentions/exact?source={source}&destination={destination}");
    let (s, b) = http(agent, "PUT", &path, Some(&json!({"Action": "allow"})))?;
    if s != 200 {
        bail!("intention {source} -> {destination}: {s} {b}");
    }
    Ok(())
}

/// Starts a transparent proxy for `service` in pod `i`; returns it with its admin address.
pub fn start_proxy(
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
    // Killed if it does not get ready.
    let child = KillOnDrop(child);
    wait_for(
        &format!("{service} proxy ready"),
        Duration::from_secs(30),
        || http(admin, "GET", "/ready", None).is_ok_and(|(s, _)| s == 200),
    )?;
    Ok((child, admin))
}

/// One of the eBPF programs' counters from a proxy's `/metrics`.
pub fn ebpf_event(admin: SocketAddr, event: &str) -> anyhow::Result<u64> {
    let (_, body) = http(admin, "GET", "/metrics", None)?;
    let prefix = format!("meshproxy_transparent_ebpf_events_total{{event=\"{event}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .with_context(|| format!("no {event} counter on {admin}/metrics"))
}

/// Runs `exe <args>` inside pod `i` and parses the JSON object it prints.
pub fn run_json(pods: &Pods, i: usize, exe: &Path, args: &[String]) -> anyhow::Result<Value> {
    let out = pods.command(i, exe, args)?.output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Median of each round's `key` (NaN where absent).
pub fn median_of(rounds: &[&Value], key: &str) -> f64 {
    let mut v: Vec<f64> = rounds
        .iter()
        .map(|r| r[key].as_f64().unwrap_or(f64::NAN))
        .collect();
    v.sort_by(f64::total_cmp);
    crate::percentile_f64(&v, 50.0)
}
