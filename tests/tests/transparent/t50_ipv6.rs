//! Issue 5, IPv6: `connect6` sends the pod's IPv6 TCP connects to the proxy's IPv6 outbound
//! listener (on `::1`), `getpeername6` keeps showing the original destination, and the proxy
//! maps the IPv6 destination to a mesh service through the catalog (or passes it through).
//! The pods get IPv6 addresses on their veth (`nodad`, usable at once) next to their IPv4 ones.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use mesh_tests::process::eventually;
use serde_json::json;

use crate::harness::*;

const APP_PORT: u16 = 8080;
const V6_A: &str = "fd00:77::1";
const V6_B: &str = "fd00:77::2";

/// Adds `addr/64` to the pod's veth without duplicate address detection.
fn add_v6(pod: &Pod, addr: &str) {
    let out = Command::new("ip")
        .args(["-n", &pod.name, "addr", "add", &format!("{addr}/64"), "dev"])
        .arg(&pod.veth)
        .arg("nodad")
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip addr add {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Service `name` at `[v6]:port`, its sidecar at the pod's IPv4 address (Consul lets the two
/// differ); the mesh index maps the IPv6 service address to `name`.
fn register_v6(http: SocketAddr, name: &str, pod: &Pod, v6: &str, port: u16) {
    ok(
        "PUT",
        http,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": name, "ID": name, "Address": v6, "Port": port,
            "Connect": {"SidecarService": {
                "Address": pod.ip.to_string(),
                "Port": SIDECAR_PORT,
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]
            }}
        })),
    );
}

/// The common start of these tests: two pods with IPv6 addresses next to their IPv4 ones,
/// `meshd dev` with its CA ready, and `svc-a` registered in pod A. Fields drop in order, so the
/// serial lock is released last.
struct V6Scene {
    pods: Pods,
    meshd: mesh_tests::process::Meshd,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl V6Scene {
    fn start() -> Self {
        require_root();
        let serial = serial();
        let _obj = ebpf_object();
        let pods = pods();
        add_v6(&pods.a, V6_A);
        add_v6(&pods.b, V6_B);
        let meshd = meshd_dev();
        wait_ca(meshd.http_addr);
        register(meshd.http_addr, "svc-a", &pods.a, APP_PORT);
        Self {
            pods,
            meshd,
            _serial: serial,
        }
    }
}

#[test]
fn ipv6_client_reaches_the_other_pod_through_the_mesh() {
    let scene = V6Scene::start();
    let (pods, http) = (&scene.pods, scene.meshd.http_addr);
    register_v6(http, "svc-b", &pods.b, V6_B, APP_PORT);
    set_intention(http, "svc-a", "svc-b", "allow");
    let app_b = Echo::start(&pods.b, APP_PORT);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
    let proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    let dst = SocketAddr::new(V6_B.parse::<Ipv6Addr>().unwrap().into(), APP_PORT);
    let marker = "over-ipv6-through-the-mesh";
    let out = client(&pods.a, dst, marker);
    assert_eq!(
        out["echo"].as_str(),
        Some(marker),
        "client: {out}\n--- proxy A ---\n{}\n--- proxy B ---\n{}",
        proxy_a.log(),
        proxy_b.log()
    );
    assert_eq!(out["family"].as_str(), Some("inet6"), "{out}");
    // getpeername6 shows the original destination, not [::1]:<outbound port>.
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    let seen = app_b.wait_seen(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Through proxy B (its local peer), with exactly the client's bytes.
    assert!(seen[0].peer.ip().is_loopback(), "{:?}", seen[0].peer);
    assert_eq!(seen[0].bytes, marker.as_bytes());
    let log = proxy_a.log();
    assert!(
        log.contains("mesh destination") && log.contains(&dst.to_string()),
        "{log}"
    );
    eventually("proxy B counted it", Duration::from_secs(10), || {
        (proxy_b.metric("meshproxy_connections_total", &["inbound", "result=\"ok\""]) >= 1.0)
            .then_some(())
    })
    .unwrap();
}

#[test]
fn ipv6_non_mesh_destination_is_redirected_and_passed_through() {
    let scene = V6Scene::start();
    let (pods, http) = (&scene.pods, scene.meshd.http_addr);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);

    let dst = SocketAddr::new(V6_B.parse::<Ipv6Addr>().unwrap().into(), 9090);
    let server = Echo::start_on(&pods.b, dst);
    let out = client(&pods.a, dst, "plain-ipv6");
    assert_eq!(
        out["echo"].as_str(),
        Some("plain-ipv6"),
        "client: {out}\n--- proxy A ---\n{}",
        proxy_a.log()
    );
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    let seen = server.wait_seen(1);
    assert_eq!(seen[0].bytes, b"plain-ipv6");
    assert_eq!(seen[0].peer.ip(), V6_A.parse::<Ipv6Addr>().unwrap());
    // It went through proxy A: redirected by connect6, then passed through.
    let log = proxy_a.log();
    assert!(
        log.contains("passing through") && log.contains(&dst.to_string()),
        "{log}"
    );
}

#[test]
fn excluded_ipv6_cidr_goes_direct() {
    let scene = V6Scene::start();
    let (pods, http) = (&scene.pods, scene.meshd.http_addr);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-cidr", "fd00:77::/64"]);

    let dst = SocketAddr::new(V6_B.parse::<Ipv6Addr>().unwrap().into(), 9090);
    let server = Echo::start_on(&pods.b, dst);
    let out = client(&pods.a, dst, "direct-ipv6");
    assert_eq!(
        out["echo"].as_str(),
        Some("direct-ipv6"),
        "client: {out}\n--- proxy A ---\n{}",
        proxy_a.log()
    );
    let seen = server.wait_seen(1);
    assert_eq!(seen[0].bytes, b"direct-ipv6");
    assert_eq!(seen[0].peer.ip(), V6_A.parse::<Ipv6Addr>().unwrap());
    // connect6 left it alone: counted as excluded, nothing redirected, no pass-through.
    assert!(proxy_a.ebpf_event("excluded") >= 1.0, "{}", proxy_a.log());
    assert_eq!(proxy_a.ebpf_event("redirected6"), 0.0);
    assert!(
        !proxy_a.log().contains("passing through"),
        "{}",
        proxy_a.log()
    );
}
