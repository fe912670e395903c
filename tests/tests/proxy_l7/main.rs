//! L7 intentions end to end (issue #6): `meshd dev`, web's and db's `meshproxy` processes, and
//! db's application as an in-process HTTP/1.1, h2c or gRPC server. Clients are real: `curl`
//! through web's upstream listener (HTTP/1.1 and `--http2-prior-knowledge`), a tonic client,
//! and raw sockets where a test needs byte-level control (pipelining, WebSocket upgrade, slow
//! chunked upload, malformed headers). Every request crosses web's outbound proxy, mutual TLS,
//! and db's inbound L7 server, which decides it with the control plane's matcher.

/// The shared proxy-test helpers (one library copy for every target).
use mesh_tests::chain as harness;

mod apps;
mod t10_http1;
mod t20_h2_grpc;
mod t30_streams;
mod t40_normalization;
mod t50_denied_body;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use apps::HttpApp;
use harness::{Proxy, ok, register, wait_ca};
use mesh_tests::process::{Meshd, eventually, free_port};
use serde_json::{Value, json};

/// db (L7, app on `app_port`) and web (upstream listener for db), both proxies ready and web
/// seeing db healthy.
pub struct L7Chain {
    pub meshd: Meshd,
    pub db: Proxy,
    pub web: Proxy,
    pub upstream: SocketAddr,
}

impl L7Chain {
    /// Starts the chain; `protocol` is written as db's service-defaults entry first (so the
    /// proxy discovers it from the agent), unless `None`; `db_flags` go to db's proxy.
    pub fn start(app_port: u16, protocol: Option<&str>, db_flags: &[&str]) -> Self {
        let meshd = harness::meshd_dev();
        let http = meshd.http_addr;
        wait_ca(http);
        if let Some(p) = protocol {
            set_protocol(http, "db", p);
        }
        let db_public = free_port();
        let up = free_port();
        register(http, "db", app_port, db_public, &[]);
        register(http, "web", free_port(), free_port(), &[("db", up)]);
        let db = Proxy::start(http, "db", db_flags);
        let web = Proxy::start(http, "web", &[]);
        harness::wait_upstream_healthy(&web);
        Self {
            meshd,
            db,
            web,
            upstream: format!("127.0.0.1:{up}").parse().unwrap(),
        }
    }

    /// An HTTP/1.1 [`HttpApp`] as db's application behind an `http` chain, with the web => db
    /// intention's `permissions` in force (`ready` answers 200).
    pub fn http1(permissions: Value, ready: &str) -> (HttpApp, Self) {
        let app = HttpApp::start(false);
        let chain = Self::start(app.port(), Some("http"), &[]);
        chain.permit(permissions, ready);
        (app, chain)
    }

    /// [`Self::set_permissions`], then waits until `ready` answers 200 under them.
    pub fn permit(&self, permissions: Value, ready: &str) {
        self.set_permissions(permissions);
        self.wait_status(ready, 200);
    }

    pub fn http(&self) -> SocketAddr {
        self.meshd.http_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.upstream)
    }

    /// Writes the web => db intention with these permissions.
    pub fn set_permissions(&self, permissions: Value) {
        ok(
            "PUT",
            self.http(),
            "/v1/connect/intentions/exact?source=web&destination=db",
            Some(&json!({ "Permissions": permissions })),
        );
    }

    /// Waits until db's proxy decides `path` as `want` (intentions reach it asynchronously).
    pub fn wait_status(&self, path: &str, want: u16) {
        eventually(
            &format!("GET {path} answers {want}"),
            Duration::from_secs(20),
            || (curl(&[&self.url(path)]).status == want).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- db log ---\n{}", self.db.log()));
    }
}

/// `PUT /v1/config` of a service-defaults entry.
pub fn set_protocol(http: SocketAddr, service: &str, protocol: &str) {
    ok(
        "PUT",
        http,
        "/v1/config",
        Some(&json!({"Kind": "service-defaults", "Name": service, "Protocol": protocol})),
    );
}

/// One curl transfer's result.
#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    pub body: String,
    /// Response headers, lower-cased names.
    pub headers: String,
    pub http_version: String,
}

/// Runs `curl -sS` with `args` (one transfer), bounded to 20 s.
pub fn curl(args: &[&str]) -> CurlOut {
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&hdr)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split_whitespace();
    CurlOut {
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: tail.next().unwrap_or_default().to_string(),
        body: body.to_string(),
        headers: std::fs::read_to_string(&hdr)
            .unwrap_or_default()
            .to_ascii_lowercase(),
    }
}

/// Reads from `s` until `done(bytes so far)` or 10 s pass.
pub fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) && std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    got
}

/// Sends `raw` on a new connection to `addr` and reads until `done`.
pub fn raw_exchange(addr: SocketAddr, raw: &[u8], done: impl Fn(&[u8]) -> bool) -> String {
    let mut s = TcpStream::connect(addr).expect("connect upstream listener");
    s.write_all(raw).unwrap();
    String::from_utf8_lossy(&read_until(&mut s, done)).to_string()
}
