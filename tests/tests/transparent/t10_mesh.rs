//! Acceptance 1 and 2: an unmodified client in pod A reaches service B's app through both
//! proxies over mutual TLS; a deny intention resets it before any byte reaches B's app.

use std::time::Duration;

use mesh_tests::process::eventually;

use crate::harness::*;

const APP_PORT: u16 = 8080;

#[test]
fn unmodified_client_reaches_the_other_pod_over_mutual_tls() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (proxy_a, proxy_b) = scene.proxies(&[]);

    let marker = "PLAINTEXT-MARKER-7f3a9c";
    let capture = Capture::start(&pods.a, marker);
    let dst = pods.b.addr(APP_PORT);
    let out = client(&pods.a, dst, marker);
    let counts = capture.finish();

    assert_echoed(&out, marker, &[&proxy_a, &proxy_b]);
    // getpeername in the app shows the original destination, not the proxy's listener.
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    let seen = app_b.wait_seen(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    // B's app sees pod A as the peer (B's proxy connects from the caller's address, t90),
    // and exactly the client's bytes.
    assert_eq!(seen[0].peer.ip(), pods.a.ip, "{:?}", seen[0].peer);
    assert_eq!(seen[0].bytes, marker.as_bytes());
    // Both proxies counted it.
    let outbound_ok = proxy_a.wait_connections("outbound", "ok");
    assert_eq!(outbound_ok, 1.0);
    let inbound_ok = proxy_b.wait_connections("inbound", "ok");
    assert_eq!(inbound_ok, 1.0);
    // On the wire between the pods: TLS records, never the plaintext marker.
    assert!(counts["packets"].as_u64().unwrap() > 0, "{counts}");
    assert!(counts["tls_records"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!(
        counts["marker"].as_u64(),
        Some(0),
        "plaintext crossed the veth: {counts}"
    );
    assert!(
        proxy_a.log().contains("mesh destination"),
        "{}",
        proxy_a.log()
    );
}

#[test]
fn deny_intention_resets_the_client_and_no_byte_reaches_the_app() {
    let scene = Scene::start("deny", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (proxy_a, proxy_b) = scene.proxies(&[]);

    let out = client(&pods.a, pods.b.addr(APP_PORT), "must-not-arrive");
    // The client is connected to its local proxy, which resets the connection once B's proxy
    // refuses it: the app sees ECONNRESET (not an orderly end, not the echo).
    assert_eq!(out.get("echo"), None, "{out}");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("ConnectionResetError"),
        "expected a reset, got {out}\n--- proxy A ---\n{}",
        proxy_a.log()
    );
    eventually("proxy A logged the reset", Duration::from_secs(10), || {
        proxy_a
            .log()
            .contains("resetting the app's connection")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy_a.log()));
    proxy_b.wait_connections("inbound", "denied");
    assert_eq!(app_b.accepted(), 0, "a denied connection reached B's app");
}
