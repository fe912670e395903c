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

/// The common start of these tests: a [`Mesh`] whose pods have IPv6 addresses next to their
/// IPv4 ones.
fn v6_mesh() -> Mesh {
    let mesh = Mesh::start(APP_PORT);
    add_v6(&mesh.pods.a, V6_A);
    add_v6(&mesh.pods.b, V6_B);
    mesh
}

/// `port` on pod B's IPv6 address.
fn v6_b(port: u16) -> SocketAddr {
    SocketAddr::new(V6_B.parse::<Ipv6Addr>().unwrap().into(), port)
}

/// Runs [`client`] in pod A to a plain (non-mesh) echo server on `[V6_B]:9090` and asserts
/// the echo and that the server saw pod A's IPv6 address send exactly `msg`.
fn plain_v6_echo(pods: &Pods, msg: &str, proxy_a: &Proxy) -> serde_json::Value {
    let server = Echo::start_on(&pods.b, v6_b(9090));
    let out = client(&pods.a, v6_b(9090), msg);
    assert_echoed(&out, msg, &[proxy_a]);
    let seen = server.wait_seen(1);
    assert_eq!(seen[0].bytes, msg.as_bytes());
    assert_eq!(seen[0].peer.ip(), V6_A.parse::<Ipv6Addr>().unwrap());
    out
}

#[test]
fn ipv6_client_reaches_the_other_pod_through_the_mesh() {
    let mesh = v6_mesh();
    let (pods, http) = (&mesh.pods, mesh.http);
    register_v6(http, "svc-b", &pods.b, V6_B, APP_PORT);
    set_intention(http, "svc-a", "svc-b", "allow");
    let app_b = Echo::start(&pods.b, APP_PORT);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
    let proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    let dst = v6_b(APP_PORT);
    let marker = "over-ipv6-through-the-mesh";
    let out = client(&pods.a, dst, marker);
    assert_echoed(&out, marker, &[&proxy_a, &proxy_b]);
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
    let mesh = v6_mesh();
    let proxy_a = Proxy::start(mesh.http, "svc-a", &mesh.pods.a, &[]);

    let dst = v6_b(9090);
    let out = plain_v6_echo(&mesh.pods, "plain-ipv6", &proxy_a);
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    // It went through proxy A: redirected by connect6, then passed through.
    let log = proxy_a.log();
    assert!(
        log.contains("passing through") && log.contains(&dst.to_string()),
        "{log}"
    );
}

#[test]
fn excluded_ipv6_cidr_goes_direct() {
    let mesh = v6_mesh();
    let flags = ["--exclude-cidr", "fd00:77::/64"];
    let proxy_a = Proxy::start(mesh.http, "svc-a", &mesh.pods.a, &flags);

    plain_v6_echo(&mesh.pods, "direct-ipv6", &proxy_a);
    // connect6 left it alone: counted as excluded, nothing redirected, no pass-through.
    assert!(proxy_a.ebpf_event("excluded") >= 1.0, "{}", proxy_a.log());
    assert_eq!(proxy_a.ebpf_event("redirected6"), 0.0);
    assert!(
        !proxy_a.log().contains("passing through"),
        "{}",
        proxy_a.log()
    );
}
