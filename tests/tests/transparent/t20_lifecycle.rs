//! Issue 14, acceptance 1: the capture fails closed. With the proxy of pod B (`svc-b`, "db")
//! SIGKILLed, every new connection into B's app port and out of B is refused and nothing
//! reaches an app in plaintext (a veth capture shows no marker); exclusions still go direct.
//! Starting the proxy again restores service within a second, with no other command; a
//! SIGTERM keeps the capture too; only `meshproxy transparent remove` brings direct traffic
//! back, and afterwards nothing is pinned or loaded. `--fail-open` is the old behaviour: the
//! capture goes with the process.

use std::time::{Duration, Instant};

use crate::harness::*;

const APP_PORT: u16 = 8080;
const PLAIN_PORT: u16 = 9000;
/// Excluded at pod A's proxy: this uid's connects leave A unproxied, in plaintext, which is
/// how these tests knock on B's app port directly.
const DIRECT_UID: u32 = 4242;
const MARKER: &str = "FAIL-CLOSED-MARKER-7d1e";

/// A client answer that is a refusal of the connect itself (nothing accepted it).
fn assert_refused(out: &serde_json::Value, what: &str) {
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("ConnectionRefusedError"),
        "{what}: expected ECONNREFUSED, got {out}"
    );
}

#[test]
fn a_killed_proxy_leaves_its_pod_refusing_until_it_restarts_or_the_capture_is_removed() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http, app_b) = (&scene.pods, scene.http, &scene.app_b);
    set_intention(http, "svc-b", "svc-a", "allow");
    // Mesh and non-mesh destinations in A for B's outbound connects, and a DNS-port one
    // (always excluded) to show exclusions survive.
    let app_a = Echo::start(&pods.a, APP_PORT);
    let plain_a = Echo::start(&pods.a, PLAIN_PORT);
    let dns_a = Echo::start(&pods.a, 53);
    let (to_app_b, to_app_a, to_plain_a) = (
        pods.b.addr(APP_PORT),
        pods.a.addr(APP_PORT),
        pods.a.addr(PLAIN_PORT),
    );
    let uid = DIRECT_UID.to_string();
    let mut proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-uid", &uid]);
    let mut proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);
    assert_echoed(&client(&pods.a, to_app_b, "served"), "served", &[&proxy_b]);
    let st = pinned(&pods.b).expect("B's capture is pinned");
    assert_eq!(
        st["proxy_pid"].as_u64(),
        Some(u64::from(proxy_b.pid())),
        "{st}"
    );
    let programs: Vec<&str> = st["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for p in [
        "mesh_connect4",
        "mesh_connect6",
        "mesh_sock_ops",
        "mesh_sk_lookup",
    ] {
        assert!(programs.contains(&p), "{p} not pinned: {st}");
    }

    let seen_before = app_b.seen().len();
    let capture = Capture::start(&pods.b, MARKER);
    proxy_b.stop("KILL");
    let st = pinned(&pods.b).expect("the capture outlives the proxy");
    assert!(st["proxy_pid"].is_null(), "{st}");

    // Into B: through A's proxy (its mTLS dial finds no listener: the client is cut off),
    // and straight at B's app port in plaintext (refused by sk_lookup, never the app's).
    let via_mesh = client(&pods.a, to_app_b, MARKER);
    assert_ne!(via_mesh["echo"].as_str(), Some(MARKER), "{via_mesh}");
    assert_refused(
        &client_as(&pods.a, DIRECT_UID, to_app_b, MARKER),
        "plaintext to B's app port",
    );
    // Out of B: to a mesh service and to a non-mesh destination, both refused at connect.
    assert_refused(&client(&pods.b, to_app_a, MARKER), "B to a mesh service");
    assert_refused(&client(&pods.b, to_plain_a, MARKER), "B to a non-mesh port");
    // Exclusions keep working while no proxy runs (port 53 is always excluded).
    assert_echoed(&client(&pods.b, pods.a.addr(53), "dns"), "dns", &[]);
    let counts = capture.finish();
    assert_eq!(counts["marker"], 0, "plaintext on B's veth: {counts}");
    assert_eq!(app_b.seen().len(), seen_before, "B's app got a connection");
    assert_eq!(app_a.accepted() + plain_a.accepted(), 0);
    assert_eq!(dns_a.accepted(), 1);

    // A new proxy serves the pod again, with no other command, within a second of starting.
    let start = Instant::now();
    let mut proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);
    let out = client(&pods.a, to_app_b, "back");
    let took = start.elapsed();
    assert_echoed(&out, "back", &[&proxy_b]);
    // The refusal while no proxy ran was counted in the pinned map, which the new one shows.
    assert!(
        proxy_b.ebpf_event("inbound_refused") >= 1.0,
        "{}",
        proxy_b.log()
    );
    assert_echoed(
        &client(&pods.b, to_plain_a, "out-again"),
        "out-again",
        &[&proxy_b],
    );
    assert!(
        took < Duration::from_secs(1),
        "service came back {took:?} after the restart began"
    );

    // SIGTERM keeps the capture as well; `remove` refuses while a proxy holds the pod.
    let (ok, text) = transparent_remove(&["--cgroup".as_ref(), pods.b.cgroup.as_os_str()]);
    assert!(!ok && text.contains("still serves"), "{text}");
    proxy_b.stop("TERM");
    assert_refused(&client(&pods.b, to_plain_a, "x"), "after SIGTERM");
    // A wrong namespace is refused, naming the one the capture was made for.
    let (ok, text) = transparent_remove(&[
        "--cgroup".as_ref(),
        pods.b.cgroup.as_os_str(),
        "--netns".as_ref(),
        pods.a.netns_path().as_os_str(),
    ]);
    assert!(!ok && text.contains(&pods.b.name), "{text}");
    remove_capture(&pods.b);
    assert!(pinned(&pods.b).is_none());
    // Direct again both ways (B's app sees A's address, not a proxy's).
    let out = client_as(&pods.a, DIRECT_UID, to_app_b, "direct-in");
    assert_echoed(&out, "direct-in", &[]);
    assert_eq!(
        app_b.wait_seen(seen_before + 2).last().unwrap().peer.ip(),
        pods.a.ip
    );
    assert_echoed(
        &client(&pods.b, to_plain_a, "direct-out"),
        "direct-out",
        &[],
    );
    let (ok, text) = transparent_remove(&["--cgroup".as_ref(), pods.b.cgroup.as_os_str()]);
    assert!(!ok && text.contains("nothing is pinned"), "{text}");
    // With A's capture removed as well, no program of ours is left in the kernel.
    proxy_a.stop("TERM");
    remove_capture(&pods.a);
    assert_no_programs_left();
}

#[test]
fn fail_open_detaches_with_the_process_and_removes_a_pinned_capture() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http, app_b) = (&scene.pods, scene.http, &scene.app_b);
    let plain_b = Echo::start(&pods.b, PLAIN_PORT);
    // A fail-closed capture left by a killed proxy ...
    let mut first = Proxy::start(http, "svc-b", &pods.b, &[]);
    first.stop("KILL");
    assert!(pinned(&pods.b).is_some());
    // ... is taken away by a --fail-open start (logged), which pins nothing itself.
    let (mut proxy_a, mut proxy_b) = scene.proxies(&["--fail-open"]);
    assert!(
        proxy_b
            .log()
            .contains("--fail-open: removing the fail-closed capture"),
        "{}",
        proxy_b.log()
    );
    assert!(pinned(&pods.b).is_none() && pinned(&pods.a).is_none());
    assert_echoed(
        &client(&pods.a, pods.b.addr(APP_PORT), "via-mesh"),
        "via-mesh",
        &[&proxy_a, &proxy_b],
    );
    proxy_a.stop("KILL");
    proxy_b.stop("KILL");
    assert_no_programs_left();
    assert_direct_both_ways(
        pods,
        app_b,
        pods.b.addr(PLAIN_PORT),
        pods.b.addr(APP_PORT),
        "after --fail-open proxies died",
    );
    assert!(plain_b.accepted() >= 1);
}
