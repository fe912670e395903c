//! `meshd dev` is ready (HTTP API up, leader elected, CA created) in under 2 seconds.

use std::time::{Duration, Instant};

use mesh_tests::process::{Meshd, bin, eventually, http};

#[test]
fn dev_is_ready_in_under_two_seconds() {
    // Build first: the clock starts when the process is launched.
    bin("meshd");
    let started = Instant::now();
    let dev = Meshd::spawn(
        "dev",
        &[
            "dev".into(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
        ],
    )
    .unwrap();
    eventually(
        "an active CA root on meshd dev",
        Duration::from_secs(10),
        || {
            let r = http("GET", dev.http_addr, "/v1/agent/connect/ca/roots", None).ok()?;
            let v = r.json().ok()?;
            (!v["ActiveRootID"].as_str()?.is_empty()).then_some(())
        },
    )
    .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "meshd dev took {took:?} to be ready"
    );
}
