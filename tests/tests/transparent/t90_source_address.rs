//! Issue 14 point 4: the app sees the caller's real address. B's proxy connects to B's app
//! from the calling pod's address (`IP_TRANSPARENT`, marked; the pod's routing brings the
//! app's replies back to the proxy), over IPv4 and IPv6; denied connections still never reach
//! the app; the routing goes with the capture (`transparent remove`, or a `--fail-open`
//! proxy's exit), after which direct connections work as before.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::Command;

use serde_json::json;

use crate::harness::*;
use crate::t50_ipv6::{V6_A, register_b_over_v6, v6_b, v6_mesh};

const APP_PORT: u16 = 8080;
/// The mark of the proxy's app-side sockets, as `ip rule` prints it.
const MARK: &str = "fwmark 0x6d657368";

/// Whether pod `pod`'s policy routing has the caller-address rule, per family.
fn caller_rules(pod: &Pod) -> [bool; 2] {
    ["-4", "-6"].map(|family| {
        let out = Command::new("ip")
            .args(["-n", &pod.name, family, "rule", "show"])
            .output()
            .expect("run ip rule");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).contains(MARK)
    })
}

/// The last connection B's app saw came from `ip`, from a real (nonzero) port.
fn assert_peer(app: &Echo, n: usize, ip: IpAddr) {
    let seen = app.wait_seen(n);
    let peer = seen.last().unwrap().peer;
    assert_eq!(peer.ip(), ip, "{seen:?}");
    assert_ne!(peer.port(), 0, "{seen:?}");
}

#[test]
fn app_sees_the_calling_pods_ipv4_address_until_the_capture_is_removed() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (_proxy_a, mut proxy_b) = scene.proxies(&[]);
    assert_eq!(caller_rules(&pods.b), [true, true], "{}", proxy_b.log());

    for (i, msg) in ["first", "second"].iter().enumerate() {
        let out = client(&pods.a, pods.b.addr(APP_PORT), msg);
        assert_eq!(out["echo"].as_str(), Some(*msg), "{out}\n{}", proxy_b.log());
        assert_peer(app_b, i + 1, pods.a.ip.into());
    }
    assert!(
        !proxy_b.log().contains("cannot be reached from the caller"),
        "{}",
        proxy_b.log()
    );
    // Fail closed: the routing stays with the pinned capture, and goes with it.
    proxy_b.stop("KILL");
    assert_eq!(caller_rules(&pods.b), [true, true]);
    remove_capture(&pods.b);
    assert_eq!(caller_rules(&pods.b), [false, false]);
}

#[test]
fn app_sees_the_calling_pods_ipv6_address() {
    let mesh = v6_mesh();
    let (pods, http) = (&mesh.pods, mesh.http);
    register_b_over_v6(http);
    set_intention(http, "svc-a", "svc-b", "allow");
    // The app listens on IPv6 (dual stack): B's proxy reaches it on [::1] from A's address.
    let app_b = Echo::start_on(
        &pods.b,
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), APP_PORT),
    );
    let _proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
    let proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    let out = client(&pods.a, v6_b(APP_PORT), "over-ipv6");
    assert_eq!(
        out["echo"].as_str(),
        Some("over-ipv6"),
        "{out}\n{}",
        proxy_b.log()
    );
    assert_peer(&app_b, 1, V6_A.parse::<Ipv6Addr>().unwrap().into());
}

/// A sidecar whose registration gives the app at the pod's own address (not loopback), the
/// address the caller dialled: a connect there from inside the pod would be steered back to
/// the proxy by `sk_lookup`, so the proxy reaches the app (listening on all addresses) on
/// loopback, from the caller's address.
#[test]
fn an_app_registered_at_the_pod_address_is_reached_from_the_caller() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http, app_b) = (&scene.pods, scene.http, &scene.app_b);
    let b = pods.b.ip.to_string();
    ok(
        "PUT",
        http,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": "svc-b", "ID": "svc-b", "Address": b, "Port": APP_PORT,
            "Connect": {"SidecarService": {
                "Port": SIDECAR_PORT,
                "Proxy": {"LocalServiceAddress": b, "LocalServicePort": APP_PORT},
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]
            }}
        })),
    );
    let (_proxy_a, proxy_b) = scene.proxies(&[]);
    let out = client(&pods.a, pods.b.addr(APP_PORT), "to-the-pod-address");
    assert_eq!(
        out["echo"].as_str(),
        Some("to-the-pod-address"),
        "{out}\n{}",
        proxy_b.log()
    );
    assert_peer(app_b, 1, pods.a.ip.into());
}

#[test]
fn a_denied_caller_never_reaches_the_app() {
    let scene = Scene::start("deny", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (_proxy_a, proxy_b) = scene.proxies(&[]);
    let out = client(&pods.a, pods.b.addr(APP_PORT), "must-not-arrive");
    assert!(out.get("echo").is_none(), "{out}");
    proxy_b.wait_connections("inbound", "denied");
    assert_eq!(app_b.accepted(), 0);
}

#[test]
fn a_fail_open_proxy_removes_the_routing_when_it_exits() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (mut proxy_a, mut proxy_b) = scene.proxies(&["--fail-open"]);
    let out = client(&pods.a, pods.b.addr(APP_PORT), "preserved");
    assert_eq!(out["echo"].as_str(), Some("preserved"), "{out}");
    assert_peer(app_b, 1, pods.a.ip.into());
    proxy_a.stop("TERM");
    proxy_b.stop("TERM");
    assert!(
        proxy_b.log().contains("caller-address routing removed"),
        "{}",
        proxy_b.log()
    );
    assert_eq!(caller_rules(&pods.b), [false, false]);
    // Direct again: from A's address, through nothing.
    let out = client(&pods.a, pods.b.addr(APP_PORT), "direct");
    assert_echoed(&out, "direct", &[]);
    assert_peer(app_b, 2, pods.a.ip.into());
}
