//! Transparent-mode mesh pieces shared by the tests (`tests/tests/transparent/`) and the demo
//! (`cargo xtask demo`): `meshd dev` in the host namespace, simulated pods
//! ([`crate::pod`]), a counting echo server whose socket lives in a pod, unmodified Python
//! clients run inside a pod, a veth capture, and `meshproxy run --transparent` processes.
//! Everything is removed on drop (processes by PID, then namespaces and cgroups).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::dev::{call, meshd_dev, ok, set_intention, wait_ca};
pub use crate::pod::{Pod, PodPair as Pods};
use crate::process::{Meshd, OwnedChild, eventually, free_port, http};
use crate::python::run_bounded;
use serde_json::{Value, json};

/// The eBPF object (`$MESH_EBPF_OBJECT`, else the repository's build); a missing one fails
/// with the command that builds it.
pub fn ebpf_object() -> PathBuf {
    let p = std::env::var_os("MESH_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../ebpf/target/bpfel-unknown-none/release/mesh-ebpf")
        });
    assert!(
        p.is_file(),
        "the eBPF object {} is missing: run `cargo xtask build-ebpf` first",
        p.display()
    );
    p
}

/// These tests need root (BPF, namespaces, cgroups): fail loudly, never skip.
pub fn require_root() {
    crate::pod::require_root().expect("root");
}

/// Two fresh pods (see [`crate::pod::PodPair`]).
pub fn pods() -> Pods {
    Pods::create().expect("create the pods")
}

/// One test at a time in this target: the tests count loaded `mesh_*` programs system-wide.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every transparent test checks first: root (fails loudly otherwise), then the
/// [`serial`] lock, then the eBPF object. Hold the guard for the whole test.
pub fn exclusive() -> MutexGuard<'static, ()> {
    require_root();
    let serial = serial();
    let _ = ebpf_object();
    serial
}

/// What an [`Echo`] saw of one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A TCP echo server whose listening socket lives in a pod's network namespace (created on a
/// thread that entered it), recording every connection's peer and bytes.
pub struct Echo {
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    /// Listens on `0.0.0.0:port` in the pod.
    pub fn start(pod: &Pod, port: u16) -> Self {
        Self::start_on(pod, SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// Listens on `addr` in the pod (an IPv6 address, say).
    pub fn start_on(pod: &Pod, addr: SocketAddr) -> Self {
        let listener = pod
            .in_netns(move || TcpListener::bind(addr))
            .expect("enter the pod netns")
            .expect("bind the echo server in the pod");
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, a, st) = (seen.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let (mut c, peer) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling the stop flag; not a synchronization sleep.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                a.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                    let mut all = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                all.extend_from_slice(&buf[..n]);
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c.shutdown(Shutdown::Write);
                    s.lock().unwrap().push(Seen { peer, bytes: all });
                });
            }
        });
        Self {
            seen,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections finished so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until at least `n` connections have finished; returns them all.
    pub fn wait_seen(&self, n: usize) -> Vec<Seen> {
        eventually(
            &format!("the echo server saw {n} connection(s)"),
            Duration::from_secs(10),
            || {
                let s = self.seen();
                (s.len() >= n).then_some(s)
            },
        )
        .unwrap()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const CLIENT_PY: &str = r#"
import json, socket, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
out = {}
try:
    s = socket.create_connection((host, port), timeout=10)
    p = s.getpeername()
    v6 = s.family == socket.AF_INET6
    # Written the way Rust's SocketAddr displays it, so tests compare with `to_string()`.
    out["peername"] = ("[%s]:%d" if v6 else "%s:%d") % (p[0], p[1])
    out["family"] = "inet6" if v6 else "inet"
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    out["echo"] = data.decode(errors="replace")
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"#;

/// An unmodified client in `pod`: connects to `dst`, sends `msg`, half-closes and reads the
/// answer, over IPv4 or IPv6 as `dst` says. Returns the JSON it prints (`peername`, `family`,
/// `echo` or `error`).
pub fn client(pod: &Pod, dst: SocketAddr, msg: &str) -> Value {
    client_in(pod.command("python3").expect("command in pod"), dst, msg)
}

/// [`client`] run on the host: in the host's network namespace and the test's own cgroup.
pub fn client_host(dst: SocketAddr, msg: &str) -> Value {
    client_in(Command::new("python3"), dst, msg)
}

/// Runs [`CLIENT_PY`] with `cmd` (`python3`, already placed in its namespace and cgroup).
fn client_in(mut cmd: Command, dst: SocketAddr, msg: &str) -> Value {
    cmd.args([
        "-c",
        CLIENT_PY,
        &dst.ip().to_string(),
        &dst.port().to_string(),
        msg,
    ]);
    run_client(&mut cmd)
}

/// [`client`] run as `uid` (the system interpreter: root's pyenv is not readable by others).
pub fn client_as(pod: &Pod, uid: u32, dst: SocketAddr, msg: &str) -> Value {
    let uid = uid.to_string();
    let mut cmd = pod.command("setpriv").expect("command in pod");
    cmd.args([
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "/usr/bin/python3",
    ]);
    client_in(cmd, dst, msg)
}

/// The logs of `proxies`, each under a header naming its service: the context of a failed
/// assertion.
pub fn logs(proxies: &[&Proxy]) -> String {
    proxies
        .iter()
        .map(|p| format!("\n--- {} proxy ---\n{}", p.service, p.log()))
        .collect()
}

/// Asserts that the answer of a [`client`] is the echo of `msg`; a failure shows the answer
/// and the logs of `proxies`.
pub fn assert_echoed(out: &Value, msg: &str, proxies: &[&Proxy]) {
    assert_eq!(
        out["echo"].as_str(),
        Some(msg),
        "client: {out}{}",
        logs(proxies)
    );
}

fn run_client(cmd: &mut Command) -> Value {
    let r = run_bounded(cmd, Duration::from_secs(30)).expect("run the client");
    assert!(r.success(), "client in pod failed: {}", r.text());
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A capture on a pod's veth that counts frames carrying a plaintext marker and frames carrying
/// TLS records (handshake or application data, TLS 1.2/1.3 wire versions).
pub struct Capture {
    inner: crate::pod::Capture,
    marker: Vec<u8>,
}

impl Capture {
    pub fn start(pod: &Pod, marker: &str) -> Self {
        Self {
            inner: crate::pod::Capture::start(pod).expect("start the capture"),
            marker: marker.as_bytes().to_vec(),
        }
    }

    /// Stops the capture and returns its counts: `packets`, `marker`, `tls_records`.
    pub fn finish(self) -> Value {
        let frames = self.inner.finish();
        let has = |f: &Vec<u8>, n: &[u8]| f.windows(n.len()).any(|w| w == n);
        let marker = frames.iter().filter(|f| has(f, &self.marker)).count();
        let tls = frames
            .iter()
            .filter(|f| {
                [&b"\x16\x03\x01"[..], b"\x16\x03\x03", b"\x17\x03\x03"]
                    .iter()
                    .any(|n| has(f, n))
            })
            .count();
        json!({ "packets": frames.len(), "marker": marker, "tls_records": tls })
    }
}

/// Sidecar port of every pod's proxy (inside the pod's namespace, so no clash).
pub const SIDECAR_PORT: u16 = 21000;

/// Registers service `name` at `pod.ip:port` with a sidecar at `pod.ip:21000`. The sidecar's
/// health is a passing TTL check: the agent, in the host namespace, cannot dial into the pod.
pub fn register(http_addr: SocketAddr, name: &str, pod: &Pod, port: u16) {
    ok(
        "PUT",
        http_addr,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": name, "ID": name, "Address": pod.ip.to_string(), "Port": port,
            "Connect": {"SidecarService": {
                "Port": SIDECAR_PORT,
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]
            }}
        })),
    );
}

/// The start every transparent-mode test with pods shares: [`exclusive`], two pods,
/// `meshd dev` with its CA, and `svc-a` registered in pod A at `app_port` with a sidecar.
pub struct Mesh {
    // Dropped in this order: the control plane, the pods, then the serial lock.
    pub meshd: Meshd,
    pub pods: Pods,
    pub http: SocketAddr,
    _serial: MutexGuard<'static, ()>,
}

impl Mesh {
    pub fn start(app_port: u16) -> Self {
        let serial = exclusive();
        let pods = pods();
        let meshd = meshd_dev();
        let http = meshd.http_addr;
        wait_ca(http);
        register(http, "svc-a", &pods.a, app_port);
        Self {
            meshd,
            pods,
            http,
            _serial: serial,
        }
    }
}

/// The scene most transparent-mode tests start from: a [`Mesh`], plus `svc-b` (pod B)
/// registered at `app_port` with a sidecar, an `svc-a -> svc-b` intention with `action`, and
/// an echo app in pod B. The test starts the proxies itself (their flags differ), or with
/// [`Scene::proxies`].
pub struct Scene {
    // Dropped in this order: the app, the control plane, the pods, then the serial lock.
    pub app_b: Echo,
    pub meshd: Meshd,
    pub pods: Pods,
    pub http: SocketAddr,
    _serial: MutexGuard<'static, ()>,
}

impl Scene {
    pub fn start(action: &str, app_port: u16) -> Self {
        let Mesh {
            meshd,
            pods,
            http,
            _serial,
        } = Mesh::start(app_port);
        register(http, "svc-b", &pods.b, app_port);
        set_intention(http, "svc-a", "svc-b", action);
        let app_b = Echo::start(&pods.b, app_port);
        Self {
            app_b,
            meshd,
            pods,
            http,
            _serial,
        }
    }

    /// `svc-a`'s proxy in pod A and `svc-b`'s in pod B, both with the `extra` flags.
    pub fn proxies(&self, extra: &[&str]) -> (Proxy, Proxy) {
        (
            Proxy::start(self.http, "svc-a", &self.pods.a, extra),
            Proxy::start(self.http, "svc-b", &self.pods.b, extra),
        )
    }
}

/// A running `meshproxy run --transparent` process; killed (by PID) on drop. A host-mode
/// proxy's capture (the whole host, pinned fail-closed) is removed on drop as well, so a
/// failing test never leaves the machine refusing connects; a pod's goes with the pod.
pub struct Proxy {
    host_mode: bool,
    child: OwnedChild,
    pub service: String,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `meshproxy run --transparent` for `service` in `pod`, with extra flags.
pub fn proxy_command(
    http_addr: SocketAddr,
    service: &str,
    pod: &Pod,
    admin: SocketAddr,
    extra: &[&str],
) -> Command {
    proxy_command_with_object(http_addr, service, pod, admin, extra, &ebpf_object())
}

/// [`proxy_command`] with another eBPF object path.
pub fn proxy_command_with_object(
    http_addr: SocketAddr,
    service: &str,
    pod: &Pod,
    admin: SocketAddr,
    extra: &[&str],
    object: &Path,
) -> Command {
    transparent_command(http_addr, service, Some(pod), admin, extra, object)
}

/// `meshproxy run --transparent` capturing `pod` (its cgroup and netns), or the whole host
/// (no `--cgroup`, no `--netns`) when `pod` is `None`.
fn transparent_command(
    http_addr: SocketAddr,
    service: &str,
    pod: Option<&Pod>,
    admin: SocketAddr,
    extra: &[&str],
    object: &Path,
) -> Command {
    let mut c = Command::new(crate::process::bin("meshproxy"));
    c.args([
        "run",
        "--sidecar-for",
        service,
        "--agent-addr",
        &http_addr.to_string(),
        "--admin-addr",
        &admin.to_string(),
        "--transparent",
    ]);
    if let Some(pod) = pod {
        c.arg("--cgroup")
            .arg(&pod.cgroup)
            .arg("--netns")
            .arg(pod.netns_path());
    }
    c.arg("--ebpf-object")
        .arg(object)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

impl Proxy {
    pub fn start(http_addr: SocketAddr, service: &str, pod: &Pod, extra: &[&str]) -> Self {
        Self::spawn(http_addr, service, Some(pod), extra, None)
    }

    /// A host-mode proxy (no `--cgroup`: it captures the whole host minus its own cgroup),
    /// run in `cgroup` so that the test process and its clients are not in the proxy's cgroup.
    pub fn start_host(
        http_addr: SocketAddr,
        service: &str,
        extra: &[&str],
        cgroup: &crate::pod::Cgroup,
    ) -> Self {
        Self::spawn(http_addr, service, None, extra, Some(cgroup))
    }

    fn spawn(
        http_addr: SocketAddr,
        service: &str,
        pod: Option<&Pod>,
        extra: &[&str],
        cgroup: Option<&crate::pod::Cgroup>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = transparent_command(http_addr, service, pod, admin, extra, &ebpf_object());
        if let Some(cg) = cgroup {
            cg.join_on_exec(&mut cmd).expect("join the proxy's cgroup");
        }
        let child = cmd
            .env("MESH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshproxy");
        let p = Self {
            host_mode: pod.is_none(),
            child: OwnedChild::new(child),
            service: service.to_string(),
            admin,
            log,
            _dir: dir,
        };
        let r = eventually(
            &format!("{service} proxy /ready"),
            Duration::from_secs(30),
            || {
                let r = http("GET", p.admin, "/ready", None).ok()?;
                (r.status == 200).then_some(())
            },
        );
        if let Err(e) = r {
            panic!("{e}\n--- {service} log ---\n{}", p.log());
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sum of the samples of metric `name` whose labels contain every `label`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        call("GET", self.admin, "/metrics", None)
            .body
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (at most 10 s) until the proxy counted at least one `direction` connection with
    /// `result` (`ok`, `denied`, ...) in `meshproxy_connections_total`; returns the count.
    pub fn wait_connections(&self, direction: &str, result: &str) -> f64 {
        let result = format!("result=\"{result}\"");
        eventually(
            &format!(
                "{} proxy to count a {direction} connection ({result})",
                self.service
            ),
            Duration::from_secs(10),
            || {
                let n = self.metric("meshproxy_connections_total", &[direction, &result]);
                (n >= 1.0).then_some(n)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    /// A counter of the proxy's eBPF programs (`redirected`, `inbound_steered`, ...), from
    /// `meshproxy_transparent_ebpf_events_total` on `/metrics`.
    pub fn ebpf_event(&self, event: &str) -> f64 {
        self.metric(
            "meshproxy_transparent_ebpf_events_total",
            &[&format!("event=\"{event}\"")],
        )
    }

    /// SIGTERM (or SIGKILL) and wait (bounded) for the exit.
    pub fn stop(&mut self, signal: &str) {
        if let Err(e) = self.child.stop(signal, Duration::from_secs(20)) {
            panic!("{} proxy did not exit on {signal}: {e}", self.service);
        }
    }
}

/// The cgroup v2 root: what a host-mode proxy captures.
pub fn cgroup_root() -> PathBuf {
    PathBuf::from(crate::pod::CGROUP2_ROOT)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.host_mode {
            crate::pod::unpin_capture(&cgroup_root());
        }
    }
}

impl Proxy {
    /// Waits (bounded) for the process to exit by itself, e.g. after it handed over and
    /// drained.
    pub fn wait_exit(&mut self, within: Duration) {
        let status = self.child.wait_exit(within);
        assert!(
            status.is_some(),
            "{} proxy still runs after {within:?}\n{}",
            self.service,
            self.log()
        );
    }

    /// The proxy process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `meshproxy transparent status --json`: the pinned pods.
pub fn transparent_status() -> Vec<Value> {
    let out = Command::new(crate::process::bin("meshproxy"))
        .args(["transparent", "status", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run meshproxy transparent status");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The status entry of the capture pinned for `pod`, if any.
pub fn pinned(pod: &Pod) -> Option<Value> {
    let cgroup = std::fs::canonicalize(&pod.cgroup).ok()?;
    transparent_status()
        .into_iter()
        .find(|p| p["cgroup"].as_str() == Some(&*cgroup.to_string_lossy()))
}

/// `meshproxy transparent remove` with `args`: its exit success and its output (both streams).
pub fn transparent_remove(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(crate::process::bin("meshproxy"))
        .args(["transparent", "remove"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run meshproxy transparent remove");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `transparent remove --cgroup <pod's> --netns <pod's>`, which must succeed.
pub fn remove_capture(pod: &Pod) {
    let (ok, text) = transparent_remove(&[
        "--cgroup".as_ref(),
        pod.cgroup.as_os_str(),
        "--netns".as_ref(),
        pod.netns_path().as_os_str(),
    ]);
    assert!(ok, "transparent remove failed: {text}");
}

/// Names of loaded eBPF programs that are ours (the kernel keeps 15 characters of a name).
pub fn loaded_mesh_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| n.starts_with("mesh_"))
        .collect()
}

/// Waits until none of our programs is loaded any more.
pub fn assert_no_programs_left() {
    let r = eventually(
        "no mesh_* eBPF program loaded",
        Duration::from_secs(10),
        || loaded_mesh_programs().is_empty().then_some(()),
    );
    assert!(r.is_ok(), "still loaded: {:?}", loaded_mesh_programs());
}

/// After the proxies of `pods` have exited: pod A's connects go straight out again, to a plain
/// port of pod B (`to_plain`, not redirected to the gone outbound listener) and to B's app port
/// (`to_app`, no longer steered to B's proxy: the app sees pod A as the peer).
pub fn assert_direct_both_ways(
    pods: &Pods,
    app_b: &Echo,
    to_plain: SocketAddr,
    to_app: SocketAddr,
    after: &str,
) {
    let out = client(&pods.a, to_plain, "direct-out");
    assert_eq!(out["echo"].as_str(), Some("direct-out"), "{after}: {out}");
    let before = app_b.seen().len();
    let out = client(&pods.a, to_app, "direct-in");
    assert_eq!(out["echo"].as_str(), Some("direct-in"), "{after}: {out}");
    let seen = app_b.wait_seen(before + 1);
    assert_eq!(seen.last().unwrap().peer.ip(), pods.a.ip, "{after}");
}
