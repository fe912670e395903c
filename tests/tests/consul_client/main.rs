//! Acceptance: a third-party Consul client, unmodified, works against `meshd dev`.
//!
//! `tests/py/consul_client_test.py` drives a real `meshd dev` process with py-consul (pinned
//! in `tests/py/requirements.txt`, installed into a venv under `target/` by
//! `mesh_tests::python`): it registers a service with a connect sidecar, upserts, reads,
//! lists, checks, matches and deletes intentions, reads the CA roots and a leaf, calls
//! authorize, and runs blocking `health.connect` queries (woken by a registration change, and
//! returning at the deadline when nothing changes). Needs `python3` with `venv`, and PyPI (or a
//! mirror via `PIP_INDEX_URL`) the first time.
//!
//! `tests/py/consul_acl_test.py` does ACL work with the same client against `meshd dev --acl`
//! (issue 12): bootstrap, a policy and a token through py-consul's ACL API, then that token
//! used for registration and leaves (allowed for its service, refused for another), and
//! revoked.
//!
//! `tests/py/consul_filter_test.py` (issue 15) drives the list filters through py-consul
//! (`tag`, `node_meta`, `filter_expr` on catalog, health and agent lists); `curl_filters`
//! checks with curl what the client cannot show (an empty answer for `?tag=nope`, a 400 with
//! the position, a refused filter not held by a blocking wait, the agent's cached route).

mod curl_filters;

use std::time::Duration;

use mesh_tests::process::{Meshd, eventually, http};
use mesh_tests::python;

/// The whole script takes a few seconds; this only bounds a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// A `meshd dev` with `extra` flags, once its agent serves an active CA root.
fn dev(extra: &[&str]) -> Meshd {
    let args: Vec<String> = ["dev", "--http-addr", "127.0.0.1:0", "--bind", "127.0.0.1:0"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let meshd = Meshd::spawn("dev", &args).expect("starting meshd dev");
    let addr = meshd.http_addr;
    // Ready once the agent answers for the CA roots with an active root: before the CA is
    // initialized (just after the election) it answers 200 with an empty `Roots` list.
    eventually(
        "meshd dev to serve an active root at /v1/agent/connect/ca/roots",
        Duration::from_secs(30),
        || {
            http("GET", addr, "/v1/agent/connect/ca/roots", None)
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| r.json().ok())
                .filter(|v| v["ActiveRootID"].as_str().is_some_and(|id| !id.is_empty()))
        },
    )
    .expect("meshd dev ready");
    meshd
}

/// Runs `meshd dev` with `extra` flags and the py-consul script `script` against it; fails
/// with the script's output unless it exits 0.
fn run_script(script: &str, extra: &[&str]) {
    // The venv first: a cold pip install can take a while and needs no server.
    python::venv();
    let meshd = dev(extra);
    let addr = meshd.http_addr;
    let out = python::run_client_script(script, addr, &[], SCRIPT_TIMEOUT)
        .expect("running the py-consul script");
    assert!(
        out.success(),
        "py-consul script {script} against meshd dev at {addr} failed ({}) after {:.1?}\n{}",
        out.describe(),
        out.elapsed,
        out.text()
    );
    println!("{}", out.stdout);
    drop(meshd);
}

#[test]
fn py_consul_against_meshd_dev() {
    run_script("consul_client_test.py", &[]);
}

#[test]
fn py_consul_filters_against_meshd_dev() {
    run_script("consul_filter_test.py", &[]);
}

#[test]
fn py_consul_acl_against_meshd_dev_acl() {
    run_script("consul_acl_test.py", &["--acl"]);
}
