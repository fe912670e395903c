//! The pieces of the `transparent` bench kept out of its binary: simulated pods from the
//! transparent tests' harness (`mesh_tests::pod`) with the processes started in them, `meshd
//! dev` with services registered, `meshproxy run --transparent` per pod, an echo app, and the
//! single-stream echo throughput.

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
    pub fn start_echo(&mut self, i: usize, exe: &Path, ports: &[u16]) -> anyhow::Result<()> {
        let mut args = vec!["echo".to_string()];
        args.extend(ports.iter().map(u16::to_string));
        let mut app = self
            .command(i, exe, &args)?
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = app.stdout.take().context("echo app stdout")?;
        self.children.push(app);
        let (tx, ready) = mpsc::channel();
        // Reads the app's first line; bounded by the app (killed with the pods).
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = ready
            .recv_timeout(Duration::from_secs(10))
            .context("the echo app did not start")?;
        if ready.trim_end() != "ready" {
            bail!("the echo app did not start: {ready}");
        }
        Ok(())
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill_and_reap(c);
        }
    }
}

/// The echo app (run inside a pod, on every port of `ports`): one thread per connection,
/// echoes until EOF, then ends its side.
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
        let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
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

/// Single-stream throughput: `mib` MiB written by one thread and read back (echoed) by
/// another on the same socket; MiB/s.
pub fn stream(addr: SocketAddr, mib: u64) -> anyhow::Result<f64> {
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
        let n = r.read(&mut buf).context("stream: reading the echo")?;
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

/// Starts a transparent proxy for `service` in pod `i`, ready.
pub fn start_proxy(
    bin_dir: &Path,
    agent: SocketAddr,
    service: &str,
    pods: &Pods,
    i: usize,
    object: &Path,
    extra: &[&str],
) -> anyhow::Result<KillOnDrop> {
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
    Ok(child)
}

/// Runs `exe <args>`/// Runs `exe <args>` inside pod `i` and parses the JSON object it prints.
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
