//! Root rotation: a `meshd agent --leaf-rotation-jitter 2s` re-issues every cached leaf within
//! the jitter window after the active root changes; the new leaves name the new root and verify
//! with `openssl verify` against the roots the agent serves.

use std::time::Duration;

use mesh_tests::eventually::eventually;
use mesh_tests::openssl::openssl_verify;
use serde_json::Value;
use tokio::time::Instant;

use crate::{ProcServers, ok, spawn_agent};

const JITTER: Duration = Duration::from_secs(2);
/// Roots reach the agent over its watch stream and the leaf is signed by a server: a small
/// margin on top of the jitter window.
const MARGIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_are_reissued_within_the_jitter_after_rotation() {
    let servers = ProcServers::start(1).await;
    let agent_dir = mesh_tests::data_dir();
    let agent = spawn_agent(
        "client-rot",
        &servers.rpc_addrs(),
        agent_dir.path(),
        &["--leaf-rotation-jitter", "2s"],
    );
    let a = agent.http_addr;
    let services = ["web", "api"];

    let before = ok(a, "GET", "/v1/agent/connect/ca/roots", None)
        .await
        .json();
    let old_root = before["ActiveRootID"].as_str().unwrap().to_string();
    let mut old: Vec<Value> = Vec::new();
    for s in services {
        let l = ok(a, "GET", &format!("/v1/agent/connect/ca/leaf/{s}"), None)
            .await
            .json();
        assert_eq!(l["RootID"], old_root.as_str(), "{l}");
        old.push(l);
    }

    let r = ok(servers.http(0), "PUT", "/v1/connect/ca/rotate", None).await;
    let rotated = Instant::now();
    let new_root = r.json()["ActiveRootID"].as_str().unwrap().to_string();
    assert_ne!(new_root, old_root);

    let fresh: Vec<Value> = eventually(
        "both leaves re-issued by the new root",
        Duration::from_secs(20),
        || {
            let new_root = new_root.clone();
            async move {
                let mut leaves = Vec::new();
                for s in services {
                    let l =
                        crate::try_call(a, "GET", &format!("/v1/agent/connect/ca/leaf/{s}"), None)
                            .await?
                            .json();
                    if l["RootID"] != new_root.as_str() {
                        return Err(format!("{s} still signed by {}", l["RootID"]));
                    }
                    leaves.push(l);
                }
                Ok(leaves)
            }
        },
    )
    .await;
    let took = rotated.elapsed();
    eprintln!("t30: both leaves re-issued {took:?} after the rotation");
    assert!(
        took <= JITTER + MARGIN,
        "leaves re-issued {took:?} after the rotation (bound {:?})",
        JITTER + MARGIN
    );

    let roots = ok(a, "GET", "/v1/agent/connect/ca/roots", None)
        .await
        .json();
    assert_eq!(roots["ActiveRootID"], new_root.as_str(), "{roots}");
    let bundle = mesh_tests::openssl::root_bundle(&roots);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("roots.pem");
    std::fs::write(&ca_file, bundle).unwrap();
    for (i, (l, s)) in fresh.iter().zip(services).enumerate() {
        assert_ne!(l["SerialNumber"], old[i]["SerialNumber"], "{s}: {l}");
        assert_eq!(l["Service"], s);
        let pem = dir.path().join(format!("{s}.pem"));
        std::fs::write(&pem, l["CertPEM"].as_str().expect("CertPEM")).unwrap();
        openssl_verify(&["-CAfile", ca_file.to_str().unwrap(), pem.to_str().unwrap()])
            .await
            .unwrap_or_else(|e| panic!("new {s} leaf does not verify against the roots: {e}"));
    }

    drop(agent);
    drop(servers);
}
