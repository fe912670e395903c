//! CA root rotation and leaf renewal under continuous traffic: with a 5 s LeafCertTTL both
//! proxies renew their leaves every few seconds, and a rotation switches the active root while
//! a client keeps opening new connections through the chain. None may fail, and a connection
//! opened after the rotation is served with leaves from the new root on both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_tests::process::eventually;
use serde_json::Value;

use super::harness::{Chain, meshd_dev, ok, roundtrip, set_intention, wait_ca};

fn leaf_root(cfg: &Value) -> String {
    cfg["Identity"]["Leaf"]["root_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn rotation_and_renewal_under_traffic_lose_no_connection() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    let config = ok("GET", http, "/v1/connect/ca/configuration", None);
    let mut body = serde_json::json!({"Provider": config["Provider"], "Config": config["Config"]});
    body["Config"]["LeafCertTTL"] = "5s".into();
    ok("PUT", http, "/v1/connect/ca/configuration", Some(&body));

    let chain = Chain::start(http);
    set_intention(http, "web", "db", "allow");
    eventually("allowed connection echoes", Duration::from_secs(10), || {
        roundtrip(chain.upstream, b"x").ok().filter(|b| b == b"x")
    })
    .unwrap();
    let old_root = ok("GET", http, "/v1/connect/ca/roots", None)["ActiveRootID"]
        .as_str()
        .unwrap()
        .to_string();

    // Continuous new connections through the chain.
    let stop = Arc::new(AtomicBool::new(false));
    let (okc, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, okc, failed, up) = (stop.clone(), okc.clone(), failed.clone(), chain.upstream);
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let msg = format!("request {i}");
                match roundtrip(up, msg.as_bytes()) {
                    Ok(b) if b == msg.as_bytes() => {
                        okc.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{i}: {other:?}"));
                    }
                }
                i += 1;
            }
            errors
        })
    };

    // Let renewals happen under traffic (several 5 s leaves), then rotate.
    let serial_before = chain.web.config()["Identity"]["Leaf"]["serial_number"].clone();
    eventually("web renews its leaf", Duration::from_secs(15), || {
        (chain.web.config()["Identity"]["Leaf"]["serial_number"] != serial_before).then_some(())
    })
    .unwrap();
    let rotated = Instant::now();
    let r = ok("PUT", http, "/v1/connect/ca/rotate", None);
    let new_root = r["ActiveRootID"].as_str().unwrap().to_string();
    assert_ne!(new_root, old_root);

    // Both proxies end up with the new root in their bundle and a leaf it signed.
    for p in [&chain.web, &chain.db] {
        eventually(
            &format!("{} serves a leaf from the new root", p.name),
            Duration::from_secs(40),
            || {
                let c = p.config();
                (c["Identity"]["Roots"]["active_root_id"] == new_root.as_str()
                    && leaf_root(&c) == new_root)
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", p.config()));
    }
    let switched = rotated.elapsed();
    // Keep the traffic going across at least one more renewal with the new root.
    let n = okc.load(Ordering::SeqCst);
    eventually("traffic continues after rotation", Duration::from_secs(15), || {
        (okc.load(Ordering::SeqCst) > n + 20).then_some(())
    })
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let errors = traffic.join().unwrap();
    let (good, bad) = (okc.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("{good} connections during renewal/rotation, {bad} failed; both leaves on the new root {switched:?} after the rotation");
    assert_eq!(bad, 0, "connections failed: {errors:?}");
    assert!(good > 50, "too little traffic to mean anything: {good}");

    // A connection opened now is served, and both proxies hold new-root leaves.
    assert_eq!(roundtrip(chain.upstream, b"after").unwrap(), b"after");
    assert_eq!(leaf_root(&chain.web.config()), new_root);
    assert_eq!(leaf_root(&chain.db.config()), new_root);
}
