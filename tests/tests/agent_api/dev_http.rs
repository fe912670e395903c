//! What the HTTP endpoint tests of this suite share: a `meshd dev` process ready to serve,
//! curl (a third-party client) for raw requests and refusals, and the py-consul script of a
//! family (`tests/py/consul_reads_test.py`).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::curl::{Auth, Reply, curl_at};
use mesh_tests::dev::{meshd_dev, wait_ca};
use mesh_tests::process::Meshd;
use mesh_tests::python;

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

/// `curl -X method http://addr/path` without a token (with `data` as a JSON body).
pub fn curl(method: &str, addr: SocketAddr, path: &str, data: Option<&str>) -> Reply {
    curl_at(addr, method, path, Auth::None, data)
}

/// [`curl`], asserting the status.
pub fn curl_status(
    method: &str,
    addr: SocketAddr,
    path: &str,
    data: Option<&str>,
    status: u16,
) -> Reply {
    let r = curl(method, addr, path, data);
    assert_eq!(r.status, status, "{method} {path}: {}", r.body);
    r
}
