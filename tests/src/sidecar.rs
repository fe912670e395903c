//! Sidecar processes for the end-to-end tests: `meshproxy run` processes (killed by PID on
//! drop), a counting TCP echo server as the application behind them, and the agent API call
//! that registers a service with its sidecar. Shared by the proxy test targets (through
//! `tests/tests/proxy/harness.rs`) and the agent restart test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::dev::{call, ok};
use crate::process::{OwnedChild, eventually, free_port, http};

/// `meshproxy`, built with the rest of the workspace's binaries once per test process.
pub fn proxy_bin() -> PathBuf {
    crate::process::bin("meshproxy")
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
    ok(
        "PUT",
        http_addr,
        "/v1/agent/service/register",
        Some(&sidecar_registration(
            name,
            app_port,
            public_port,
            upstreams,
        )),
    );
}

/// The `/v1/agent/service/register` body of [`register`] (the benches send it themselves).
pub fn sidecar_registration(
    name: &str,
    app_port: u16,
    public_port: u16,
    upstreams: &[(&str, u16)],
) -> Value {
    let ups: Vec<Value> = upstreams
        .iter()
        .map(|(n, p)| json!({"DestinationName": n, "LocalBindPort": p}))
        .collect();
    json!({
        "Name": name, "ID": name, "Port": app_port,
        "Connect": {"SidecarService": {
            "Port": public_port,
            "Proxy": {"Upstreams": ups},
            "Checks": [{"Name": "listening", "TCP": format!("127.0.0.1:{public_port}"),
                        "Interval": "1s"}]
        }}
    })
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
    child: OwnedChild,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the process and waits for its `/ready`.
    pub fn start(http_addr: SocketAddr, sidecar_for: &str, extra: &[&str]) -> Self {
        let p = Self::spawn(http_addr, sidecar_for, extra);
        p.wait_ready();
        p
    }

    /// Starts the process without waiting for `/ready` (see [`Proxy::wait_ready`]).
    pub fn spawn(http_addr: SocketAddr, sidecar_for: &str, extra: &[&str]) -> Self {
        Self::spawn_with(Command::new(proxy_bin()), http_addr, sidecar_for, extra)
    }

    /// [`Proxy::spawn`] of `command`, a command for the [`proxy_bin`] binary made elsewhere:
    /// e.g. [`crate::pod::Pod::command`], to run it inside a network namespace (whose loopback
    /// `http_addr` and the admin address are then on).
    pub fn spawn_with(
        command: Command,
        http_addr: SocketAddr,
        sidecar_for: &str,
        extra: &[&str],
    ) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::launch(command, http_addr, sidecar_for, Some(admin), extra)
    }

    /// Starts the process with no `--admin-addr` (meshproxy chooses), learns the admin address
    /// from its ready line and waits for its `/ready`.
    pub fn start_default_admin(http_addr: SocketAddr, sidecar_for: &str) -> Self {
        let mut p = Self::launch(Command::new(proxy_bin()), http_addr, sidecar_for, None, &[]);
        let announced = eventually(
            &format!("{sidecar_for} proxy's ready line"),
            Duration::from_secs(30),
            || {
                p.ready_line()?
                    .split(' ')
                    .find_map(|w| w.strip_prefix("admin="))?
                    .parse()
                    .ok()
            },
        );
        p.admin = announced.unwrap_or_else(|e| panic!("{e}\n--- log ---\n{}", p.log()));
        p.wait_ready();
        p
    }

    /// The `meshproxy: ready ...` line on stdout, once printed.
    pub fn ready_line(&self) -> Option<String> {
        let out = std::fs::read_to_string(self._dir.path().join("proxy.out")).ok()?;
        out.lines()
            .find(|l| l.starts_with("meshproxy: ready "))
            .map(str::to_string)
    }

    /// Spawns `command` as `meshproxy run --sidecar-for ...` with `--admin-addr admin` when
    /// given (else `admin` is unknown, 0.0.0.0:0, until the ready line says it); stdout goes to
    /// `proxy.out`, the log to `proxy.log`.
    fn launch(
        mut command: Command,
        http_addr: SocketAddr,
        sidecar_for: &str,
        admin: Option<SocketAddr>,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        command.args([
            "run",
            "--sidecar-for",
            sidecar_for,
            "--agent-addr",
            &http_addr.to_string(),
        ]);
        if let Some(a) = admin {
            command.args(["--admin-addr", &a.to_string()]);
        }
        let child = command
            .args(extra)
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("proxy.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshproxy");
        Self {
            name: sidecar_for.to_string(),
            child: OwnedChild::new(child),
            admin: admin.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        crate::process::strip_ansi(&raw)
    }

    /// Sum of the samples of metric `name` whose labels contain every `label`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits up to `within` for the proxy to exit by itself (a start-up refusal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_exit(within)
    }

    /// SIGTERM and wait (bounded) for the exit; returns whether it exited 0 and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (bool, Duration) {
        let started = std::time::Instant::now();
        match self.child.stop("TERM", within) {
            Ok(s) => (s.success(), started.elapsed()),
            Err(e) => panic!("{} proxy: {e}", self.name),
        }
    }
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
