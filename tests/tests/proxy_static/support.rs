//! PKI, config files and `meshproxy run --config` processes for the static-mode tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, StoredRoot, generate_csr};
use mesh_control::spiffe::SpiffeId;
use mesh_tests::process::{eventually, free_port, http};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::harness::{Echo, proxy_bin};

pub const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

/// How long a proxy may take to start or to pick up a file change (it polls every second).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn id(service: &str) -> String {
    SpiffeId::service(TD, "dc1", service).uri()
}

/// A test CA (the mesh's built-in provider, so the leaves are real X.509-SVIDs).
pub struct Ca {
    root: StoredRoot,
}

impl Ca {
    pub fn new(serial: u64) -> Self {
        let root = BuiltinProvider
            .generate_root(TD, serial, OffsetDateTime::now_utc())
            .expect("root");
        Self { root }
    }

    pub fn root_pem(&self) -> &str {
        &self.root.root.root_cert
    }

    /// A fresh key and a leaf for `service`: (cert PEM, PKCS#8 key PEM).
    pub fn leaf(&self, service: &str) -> (String, String) {
        let sid = SpiffeId::service(TD, "dc1", service);
        let (csr, key) = generate_csr(&sid).expect("csr");
        let leaf = BuiltinProvider
            .sign_leaf(
                &self.root,
                &LeafRequest {
                    csr_pem: &csr,
                    trust_domain: TD,
                    datacenter: "dc1",
                    service,
                    ttl: Duration::from_secs(3600),
                },
                OffsetDateTime::now_utc(),
            )
            .expect("leaf");
        (leaf.cert_pem, key)
    }
}

/// Replaces `path` the way SPIRE's helpers do: write a temp file with `mode`, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One service's files: `<dir>/{cert,key,bundle}.pem` and `<dir>/proxy.json`.
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn new(root: &Path, service: &str) -> Self {
        let dir = root.join(service);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("proxy.json")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Key first, then the chain: in between the proxy may see a mismatch, which it must
    /// survive by keeping its current material.
    pub fn write_leaf(&self, (cert, key): &(String, String)) {
        write_atomic(&self.key(), key.as_bytes(), 0o600);
        write_atomic(&self.dir.join("cert.pem"), cert.as_bytes(), 0o644);
    }

    pub fn write_bundle(&self, roots: &[&Ca]) {
        let pem: String = roots
            .iter()
            .map(|c| c.root_pem().trim_end().to_string() + "\n")
            .collect();
        write_atomic(&self.dir.join("bundle.pem"), pem.as_bytes(), 0o644);
    }

    pub fn write_config(&self, config: &Value) {
        write_atomic(
            &self.config(),
            serde_json::to_string_pretty(config).unwrap().as_bytes(),
            0o644,
        );
    }
}

/// The config of a proxy with relative file names (resolved against the config's directory).
pub fn config(
    listen: SocketAddr,
    local_app: SocketAddr,
    admin: SocketAddr,
    allowed: &[String],
    upstreams: Value,
) -> Value {
    json!({
        "cert": "cert.pem",
        "key": "key.pem",
        "trust_bundle": "bundle.pem",
        "inbound": {"listen": listen.to_string(), "local_app": local_app.to_string()},
        "allowed_sources": allowed,
        "upstreams": upstreams,
        "admin": admin.to_string(),
        "timeouts": {"connect": "2s", "handshake": "3s", "drain": "2s"}
    })
}

/// A loopback address on a port nobody listens on (for configs that never bind: the start-up
/// refusals, and local_app of a proxy whose app is never reached).
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Let the OS choose (read back from the ready line).
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Port 1 (tcpmux) is never served on a test machine: connects to it are refused at once.
pub fn dead() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

/// Spawns `meshproxy run --config <config>` with stderr to `log` and stdout piped (the ready
/// line).
pub fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(proxy_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("MESH_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn meshproxy")
}

/// Waits (bounded) for `child` to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    match eventually("meshproxy exit", within, || child.try_wait().ok().flatten()) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
    }
}

/// A running static-mode proxy; killed by PID on drop.
///
/// Every listener is configured on port 0 and the addresses are read from the proxy's ready
/// line, so parallel tests never race for a port.
pub struct StaticProxy {
    pub name: String,
    child: Option<Child>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Bound upstream listeners by name.
    pub upstreams: BTreeMap<String, SocketAddr>,
    /// Bound named inbound listeners (`inbound.<name>=`; empty for the one-object form).
    pub inbound: BTreeMap<String, SocketAddr>,
    log: PathBuf,
}

impl StaticProxy {
    pub fn start(name: &str, files: &Files) -> Self {
        use std::io::BufRead;
        let log = files.dir.join("proxy.log");
        let mut child = spawn(&files.config(), &log);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{name} proxy not ready: {e}\n--- {name} log ---\n{log}");
            }
        };
        let field = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
        };
        // `<prefix><name>=<addr>` words of the ready line.
        let named = |prefix: &str| -> BTreeMap<String, SocketAddr> {
            line.split_whitespace()
                .filter_map(|w| w.strip_prefix(prefix))
                .filter_map(|w| w.split_once('='))
                .map(|(n, a)| (n.to_string(), a.parse().expect("listener address")))
                .collect()
        };
        let p = Self {
            name: name.into(),
            child: Some(child),
            public: field("public=").unwrap_or_else(|| panic!("no public= in {line:?}")),
            admin: field("admin=").unwrap_or_else(|| panic!("no admin= in {line:?}")),
            upstreams: named("upstream."),
            inbound: named("inbound."),
            log,
        };
        let ready = http("GET", p.admin, "/ready", None).expect("/ready");
        assert_eq!(ready.status, 200, "{name} /ready: {}", ready.body);
        p
    }

    pub fn upstream(&self, name: &str) -> SocketAddr {
        self.upstreams[name]
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config(&self) -> Value {
        let r = http("GET", self.admin, "/config", None).expect("/config");
        r.json().expect("/config JSON")
    }

    /// Serial of the leaf the proxy currently serves.
    pub fn serial(&self) -> String {
        self.config()["Identity"]["Leaf"]["serial_number"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn root_count(&self) -> usize {
        self.config()["Identity"]["Roots"]["root_ids"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits until `probe` holds, failing with the proxy's log.
    pub fn wait_until(&self, what: &str, mut probe: impl FnMut(&Self) -> bool) {
        if let Err(e) = eventually(what, WAIT, || probe(self).then_some(())) {
            panic!("{e}\n--- {} log ---\n{}", self.name, self.log());
        }
    }
}

impl Drop for StaticProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The mesh of the tests, all in one temp dir, one CA:
///
/// * `db`: the echo server behind its proxy, which allows only `web`;
/// * `web`: a client-side proxy with upstream `db` (a dead address first, then db's proxy, so
///   failover is exercised) and upstream `imposter`, which expects db's ID but points at `api`;
/// * `api`: a proxy with its own echo server (allowing only `web`) and an upstream to `db`,
///   which db must refuse.
pub struct Mesh {
    pub ca: Ca,
    pub db_app: Echo,
    pub api_app: Echo,
    pub db_files: Files,
    pub web_files: Files,
    pub db: StaticProxy,
    pub web: StaticProxy,
    /// Kept running for the refusal tests (reached through `api_to_db` and `imposter`).
    pub _api: StaticProxy,
    /// web's listener for upstream `db`.
    pub web_to_db: SocketAddr,
    /// web's listener for upstream `imposter` (expects db, reaches api).
    pub web_to_imposter: SocketAddr,
    /// api's listener for upstream `db`.
    pub api_to_db: SocketAddr,
    pub db_config: Value,
    /// Removed after the proxies (fields drop in order).
    pub _tmp: tempfile::TempDir,
}

impl Mesh {
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new(1);
        let db_app = Echo::start();
        let api_app = Echo::start();

        let files = |svc: &str| {
            let f = Files::new(tmp.path(), svc);
            f.write_leaf(&ca.leaf(svc));
            f.write_bundle(&[&ca]);
            f
        };
        let db_files = files("db");
        let web_files = files("web");
        let api_files = files("api");

        let db_config = config(any_port(), db_app.addr, any_port(), &[id("web")], json!([]));
        db_files.write_config(&db_config);
        let db = StaticProxy::start("db", &db_files);

        let api_files_config = |db_public: SocketAddr| {
            config(
                any_port(),
                api_app.addr,
                any_port(),
                &[id("web")],
                json!([{"name": "db", "listen": any_port().to_string(),
                        "addresses": [db_public.to_string()], "spiffe_id": id("db")}]),
            )
        };
        api_files.write_config(&api_files_config(db.public));
        let api = StaticProxy::start("api", &api_files);

        web_files.write_config(&config(
            any_port(),
            loopback(),
            any_port(),
            &[],
            json!([
                {"name": "db", "listen": any_port().to_string(),
                 "addresses": [dead().to_string(), db.public.to_string()], "spiffe_id": id("db")},
                {"name": "imposter", "listen": any_port().to_string(),
                 "addresses": [api.public.to_string()], "spiffe_id": id("db")},
            ]),
        ));
        let web = StaticProxy::start("web", &web_files);
        Self {
            web_to_db: web.upstream("db"),
            web_to_imposter: web.upstream("imposter"),
            api_to_db: api.upstream("db"),
            ca,
            db_app,
            api_app,
            db_files,
            web_files,
            db,
            web,
            _api: api,
            db_config,
            _tmp: tmp,
        }
    }
}

/// A long-lived connection through the proxies, used to show that established connections
/// survive reloads.
pub struct Conn {
    s: TcpStream,
    n: u32,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { s, n: 0 }
    }

    /// Sends a message and reads the echo.
    pub fn ping(&mut self) -> std::io::Result<()> {
        self.n += 1;
        let msg = format!("ping {} through the mesh\n", self.n);
        self.s.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        self.s.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(std::io::Error::other("echo differs"));
        }
        Ok(())
    }

    /// Whether the proxy closed the connection (EOF or reset), polling briefly.
    pub fn is_closed(&mut self) -> bool {
        self.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 64];
        let closed = match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        closed
    }

    pub fn close(self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}
