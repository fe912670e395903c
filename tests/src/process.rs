//! Real `meshd` / `meshctl` processes for the multi-process tests: spawn, read the addresses a
//! server reports, kill (SIGKILL) or stop (SIGTERM) by PID, and clean up on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Path of a workspace binary next to the running one. From a test binary
/// (`target/<profile>/deps/<test>`) the workspace binaries are built once per test process,
/// so they are never stale; from a workspace binary such as the demo (`target/<profile>/`)
/// they are its siblings, built by whoever built it.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe has a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--bins"])
                .status()
                .expect("running cargo build for the binaries");
            assert!(status.success(), "building meshd/meshctl failed");
        });
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A free TCP port for a process the test starts, to be bound a moment later.
///
/// Not from the kernel's ephemeral range: a port bound to `:0` and released there is handed out
/// again as the local port of any outgoing connection, and under parallel tests one of them
/// took a sidecar's port between this call and the proxy's bind (`Address already in use`). So
/// ports come from the range just below `ip_local_port_range` (never used for outgoing
/// connections nor for `:0` binds), from a per-process counter starting at a PID-derived
/// offset, each checked free on every address before it is returned.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let base = ephemeral_low.saturating_sub(SPAN).max(1024);
    let span = ephemeral_low.saturating_sub(base).max(1);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    // Bounded: one pass over the range, then the kernel's choice.
    for _ in 0..span {
        let port = (base + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// SIGKILL `child` and reap it, ignoring errors (it may have exited already): the cleanup
/// every test-owned process gets on drop or on a failed start.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `meshd <args>` with quiet logs, its stdout piped (where it reports its addresses and
/// readiness) and its stderr inherited.
pub fn meshd_command(args: &[String]) -> Command {
    meshd_command_from(Command::new(bin("meshd")), args)
}

/// [`meshd_command`] on `c`, a command for the [`bin`]`("meshd")` binary made elsewhere: e.g.
/// [`crate::pod::Pod::command`], to run it inside a network namespace.
pub fn meshd_command_from(mut c: Command, args: &[String]) -> Command {
    c.args(args)
        .env("MESH_LOG", "warn,openraft=off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// A child process the test owns: killed and reaped when dropped, unless stopped first.
pub struct OwnedChild(Option<Child>);

impl OwnedChild {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Its PID; panics once it has been stopped.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits up to `within` for the process to exit on its own; its status, or `None` if it is
    /// still running (it is then left running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let c = self.0.as_mut().expect("running");
        eventually("the process to exit", within, || {
            c.try_wait().ok().flatten()
        })
        .ok()
    }

    /// What the process wrote to a piped stderr (after it exited); empty when not piped.
    pub fn stderr_text(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(err) = self.0.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = err.read_to_string(&mut text);
        }
        text
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) by PID and waits up to `within` for the exit. On
    /// a timeout the process is killed and reaped, and the error says what was awaited.
    pub fn stop(&mut self, signal: &str, within: Duration) -> anyhow::Result<ExitStatus> {
        let mut c = self.0.take().expect("running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
            .status();
        eventually("the process to exit", within, || {
            c.try_wait().ok().flatten()
        })
        .inspect_err(|_| kill_and_reap(&mut c))
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            kill_and_reap(&mut c);
        }
    }
}

/// A running `meshd` process.
pub struct Meshd {
    pub name: String,
    pub child: Option<Child>,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub args: Vec<String>,
}

impl Meshd {
    /// Spawns `meshd <args>` and waits (bounded) for its "listening" line.
    pub fn spawn(name: &str, args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_command(name, args, meshd_command(args))
    }

    /// [`Meshd::spawn`] with stderr (its log, at `MESH_LOG=warn`) written to `log`.
    pub fn spawn_logged(name: &str, args: &[String], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_logged_with(name, args, log, meshd_command(args))
    }

    /// [`Meshd::spawn_logged`] with the log filter `filter` (`MESH_LOG`).
    pub fn spawn_logged_at(
        name: &str,
        args: &[String],
        log: &Path,
        filter: &str,
    ) -> anyhow::Result<Self> {
        let mut command = meshd_command(args);
        command.env("MESH_LOG", filter);
        Self::spawn_logged_with(name, args, log, command)
    }

    /// [`Meshd::spawn_logged`] of `command`, made by [`meshd_command_from`] with `args`.
    pub fn spawn_logged_with(
        name: &str,
        args: &[String],
        log: &Path,
        mut command: Command,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log).context("creating the log file")?;
        command.stderr(file);
        Self::spawn_command(name, args, command)
    }

    fn spawn_command(name: &str, args: &[String], mut command: Command) -> anyhow::Result<Self> {
        let mut child = command.spawn().context("spawning meshd")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                kill_and_reap(&mut child);
                bail!("meshd {name} did not report its addresses within 30s");
            }
        };
        let field = |key: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?
                .parse()
                .with_context(|| format!("bad {key} in {line:?}"))
        };
        let addrs = field("http=").and_then(|http| {
            // Agents have no gRPC listener; servers report both.
            let rpc = if line.contains("rpc=") {
                field("rpc=")?
            } else {
                SocketAddr::from(([0, 0, 0, 0], 0))
            };
            Ok((rpc, http))
        });
        let (rpc_addr, http_addr) = match addrs {
            Ok(a) => a,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(e);
            }
        };
        Ok(Self {
            name: name.to_string(),
            rpc_addr,
            http_addr,
            child: Some(child),
            args: args.to_vec(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_and_reap(&mut c);
        false
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `meshd agent --node NAME --server ... --http-addr 127.0.0.1:<free> --data-dir DIR
/// EXTRA...` and waits (bounded) for its "listening" line. The HTTP port is fixed up front, so
/// `Meshd::spawn(&agent.name, &agent.args)` restarts it on the same address with the same data
/// directory. Its `rpc_addr` is `0.0.0.0:0`: an agent has no RPC listener.
pub fn spawn_agent(name: &str, servers: &[SocketAddr], data_dir: &Path, extra: &[&str]) -> Meshd {
    let mut args = vec![
        "agent".to_string(),
        "--node".into(),
        name.into(),
        "--http-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    for s in servers {
        args.push("--server".into());
        args.push(s.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Meshd::spawn(name, &args).unwrap_or_else(|e| panic!("meshd agent {name}: {e:#}"))
}

/// Runs `meshd <args>`, which must refuse to start: waits (bounded) for it to exit non-zero
/// by itself and returns what it wrote to stderr.
pub fn meshd_refused(args: &[String]) -> String {
    let child = meshd_command(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshd");
    let mut child = OwnedChild::new(child);
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("meshd exits by itself");
    assert!(!status.success(), "meshd {args:?} started: {status:?}");
    child.stderr_text()
}

/// Arguments of `meshd server` for one member of a cluster on fixed loopback ports.
///
/// With `--acl-disabled`: these clusters test replication, failover and the agents, not ACLs
/// (the `acl` suite tests a server with ACLs on, as `meshd server` runs by default).
pub fn server_args(
    name: &str,
    data_dir: &Path,
    rpc: u16,
    http: u16,
    expect: usize,
    join: &[u16],
) -> Vec<String> {
    let mut a = vec![
        "server".to_string(),
        "--node".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--bind".into(),
        format!("127.0.0.1:{rpc}"),
        "--http-addr".into(),
        format!("127.0.0.1:{http}"),
        "--bootstrap-expect".into(),
        expect.to_string(),
        "--acl-disabled".into(),
    ];
    for p in join {
        a.push("--join".into());
        a.push(format!("127.0.0.1:{p}"));
    }
    a
}

/// Runs `meshctl --http-addr ADDR <args>` to completion, without a token.
pub fn meshctl(http_addr: &str, args: &[&str]) -> Output {
    meshctl_as(http_addr, None, args)
}

/// [`meshctl`] with `MESH_HTTP_TOKEN` set to `token` (or unset, whatever the test's own
/// environment holds).
pub fn meshctl_as(http_addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("meshctl"));
    cmd.arg("--http-addr")
        .arg(http_addr)
        .args(args)
        .env_remove("MESH_HTTP_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("MESH_HTTP_TOKEN", t);
    }
    cmd.output().expect("running meshctl")
}

/// The stdout of a command that must have succeeded; else a panic naming `what` with both
/// outputs.
pub fn stdout_ok(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `s` without terminal colour sequences (`ESC [ ... letter`), which a process's log may carry.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response read by `http`.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// A blocking HTTP/1.1 request (one connection per request, 15 s timeouts).
pub fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed response {text:?}"))?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    // Bounded by the input length: every iteration consumes at least the size line.
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
