//! What the HTTP endpoint tests of this suite share: a `meshd dev` process ready to serve,
//! curl (a third-party client) for raw requests and refusals, and the py-consul script of a
//! family (`tests/py/consul_reads_test.py`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::dev::{meshd_dev, wait_ca};
use mesh_tests::process::Meshd;
use mesh_tests::python::{self, run_bounded};

/// `meshd dev` on loopback with its CA up (the agent routes and the catalog answer).
pub fn start() -> Meshd {
    // The venv first: a cold pip install can take a while and needs no server.
    python::venv();
    let meshd = meshd_dev();
    wait_ca(meshd.http_addr);
    meshd
}

/// Runs the py-consul steps of `family` against `addr`; fails with the script's output.
pub fn py_consul(addr: SocketAddr, family: &str) {
    let out = python::run_client_script(
        "consul_reads_test.py",
        addr,
        &[family],
        Duration::from_secs(180),
    )
    .expect("running consul_reads_test.py");
    assert!(
        out.success(),
        "py-consul {family} steps against {addr} failed ({})\n{}",
        out.describe(),
        out.text()
    );
    println!("{}", out.stdout);
}

/// An answer curl got: status, `Content-Type` and body.
pub struct Curl {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Curl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// `curl -X method http://addr/path` (with `data` as a JSON body), bounded to 20 s.
pub fn curl(method: &str, addr: SocketAddr, path: &str, data: Option<&str>) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", method])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .arg(format!("http://{addr}{path}"))
        .env("NO_PROXY", "127.0.0.1");
    if let Some(d) = data {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", d]);
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(30)).expect("running curl");
    assert!(out.success(), "curl {method} {path}: {}", out.text());
    let (body, trailer) = out.stdout.rsplit_once('\n').expect("curl's trailer line");
    let (code, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Curl {
        status: code.parse().expect("curl's status code"),
        content_type: content_type.to_string(),
        body: body.to_string(),
    }
}

/// [`curl`], asserting the status.
pub fn curl_status(
    method: &str,
    addr: SocketAddr,
    path: &str,
    data: Option<&str>,
    status: u16,
) -> Curl {
    let r = curl(method, addr, path, data);
    assert_eq!(r.status, status, "{method} {path}: {}", r.body);
    r
}
