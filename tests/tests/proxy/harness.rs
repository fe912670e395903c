//! Real components for the proxy tests: a control plane (`meshd dev` process, or an in-process
//! server when a test needs the CA's root key), `meshproxy run` processes, a counting TCP echo
//! server as the application, and helpers for the agent API.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

// This file is included by several test targets (`#[path]`); not each uses every helper.
#[allow(unused_imports)]
pub use mesh_tests::dev::{call, meshd_dev, ok, set_intention, wait_ca};
use mesh_tests::process::{eventually, free_port, http};
use serde_json::{Value, json};

/// `meshproxy`, built with the rest of the workspace's binaries once per test process.
pub fn proxy_bin() -> PathBuf {
    mesh_tests::process::bin("meshproxy")
}

pub fn delete_intention(http_addr: SocketAddr, src: &str, dst: &str) {
    ok(
        "DELETE",
        http_addr,
        &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
        None,
    );
}

/// Registers service `name` (application on `app_port`) with a sidecar on `public_port`, whose
/// health is a 1 s TCP check of that port; `upstreams` are (service, local port).
pub fn register(
    http_addr: SocketAddr,
    name: &str,
    app_port: u16,
    public_port: u16,
    upstreams: &[(&str, u16)],
) {
    let ups: Vec<Value> = upstreams
        .iter()
        .map(|(n, p)| json!({"DestinationName": n, "LocalBindPort": p}))
        .collect();
    ok(
        "PUT",
        http_addr,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": name, "ID": name, "Port": app_port,
            "Connect": {"SidecarService": {
                "Port": public_port,
                "Proxy": {"Upstreams": ups},
                "Checks": [{"Name": "listening", "TCP": format!("127.0.0.1:{public_port}"),
                            "Interval": "1s"}]
            }}
        })),
    );
}

/// A TCP echo server that counts what reaches it: the application behind a proxy.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b, s) = (accepted.clone(), bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                b.fetch_add(n as u64, Ordering::SeqCst);
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    // Half-close: the client's EOF is answered with ours after the echo.
                    let _ = c.shutdown(Shutdown::Write);
                });
            }
        });
        Self {
            addr,
            accepted,
            bytes,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> (usize, u64) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A running `meshproxy run` process; killed (by PID) on drop.
pub struct Proxy {
    pub name: String,
    child: Option<Child>,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn start(http_addr: SocketAddr, sidecar_for: &str, extra: &[&str]) -> Self {
        let p = Self::spawn(http_addr, sidecar_for, extra);
        p.wait_ready();
        p
    }

    /// Starts the process without waiting for `/ready` (see [`Proxy::wait_ready`]).
    pub fn spawn(http_addr: SocketAddr, sidecar_for: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(proxy_bin())
            .args([
                "run",
                "--sidecar-for",
                sidecar_for,
                "--agent-addr",
                &http_addr.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .args(extra)
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshproxy");
        Self {
            name: sidecar_for.to_string(),
            child: Some(child),
            admin,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn wait_ready(&self) {
        let r = eventually(
            &format!("{} proxy /ready", self.name),
            Duration::from_secs(30),
            || {
                let r = http("GET", self.admin, "/ready", None).ok()?;
                (r.status == 200).then_some(())
            },
        );
        if let Err(e) = r {
            panic!("{e}\n--- {} log ---\n{}", self.name, self.log());
        }
    }

    pub fn config(&self) -> Value {
        ok("GET", self.admin, "/config", None)
    }

    pub fn metrics(&self) -> String {
        call("GET", self.admin, "/metrics", None).body
    }

    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    /// Sum of the samples of metric `name` whose labels contain every `label`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM and wait (bounded) for the exit; returns whether it exited 0 and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (bool, Duration) {
        let mut c = self.child.take().expect("running");
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let status = eventually("proxy exit", within, || c.try_wait().ok().flatten());
        match status {
            Ok(s) => (s.success(), started.elapsed()),
            Err(e) => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{e}");
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
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

/// Sends `payload`, half-closes, reads until EOF: what came back.
pub fn roundtrip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Deterministic pseudo-random bytes (xorshift), chunk by chunk.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Hash of a byte stream fed in pieces (SipHash with fixed keys: equal streams, equal hashes).
#[derive(Default)]
pub struct StreamHash(std::hash::DefaultHasher, u64);

impl StreamHash {
    pub fn update(&mut self, b: &[u8]) {
        self.0.write(b);
        self.1 += b.len() as u64;
    }

    /// (hash, length)
    pub fn finish(&self) -> (u64, u64) {
        (self.0.finish(), self.1)
    }
}

/// The web → db chain of the tests: echo server as db's application, both proxies running,
/// web's upstream listener for db on `upstream`.
pub struct Chain {
    pub echo: Echo,
    pub db: Proxy,
    pub web: Proxy,
    pub upstream: SocketAddr,
}

impl Chain {
    pub fn start(http_addr: SocketAddr) -> Self {
        Self::start_with(http_addr, &[])
    }

    pub fn start_with(http_addr: SocketAddr, db_flags: &[&str]) -> Self {
        wait_ca(http_addr);
        let echo = Echo::start();
        let db_public = free_port();
        let web_public = free_port();
        let up = free_port();
        register(http_addr, "db", echo.port(), db_public, &[]);
        register(http_addr, "web", free_port(), web_public, &[("db", up)]);
        let db = Proxy::start(http_addr, "db", db_flags);
        let web = Proxy::start(http_addr, "web", &[]);
        // web learns db's instance once db's sidecar check passes.
        eventually(
            "web sees a healthy db instance",
            Duration::from_secs(30),
            || {
                let c = web.config();
                let n = c["Upstreams"][0]["Instances"]
                    .as_array()
                    .map_or(0, Vec::len);
                (n > 0).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n--- web log ---\n{}", web.log()));
        Self {
            echo,
            db,
            web,
            upstream: format!("127.0.0.1:{up}").parse().unwrap(),
        }
    }
}

/// A `meshd agent` process (client agent of a server), killed by PID on drop.
pub struct Agent {
    child: Option<Child>,
    pub http_addr: SocketAddr,
}

impl Agent {
    /// `meshd agent --server RPC --node NODE --http-addr 127.0.0.1:0 <extra>`.
    pub fn spawn(server_rpc: SocketAddr, node: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(mesh_tests::process::bin("meshd"))
            .args(["agent", "--server", &server_rpc.to_string(), "--node", node])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("MESH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meshd agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("agent reports its address");
        let http_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no http= in {line:?}"));
        Self {
            child: Some(child),
            http_addr,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
