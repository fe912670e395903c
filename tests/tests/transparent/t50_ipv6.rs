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
pub(crate) const V6_A: &str = "fd00:77::1";
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

/// `svc-b` and its sidecar both at pod B's IPv6 address, so A's proxy dials
/// `[V6_B]:21000`, B's IPv6 inbound listener.
pub(crate) fn register_b_over_v6(http: SocketAddr) {
    ok(
        "PUT",
        http,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": "svc-b", "ID": "svc-b", "Address": V6_B, "Port": APP_PORT,
            "Connect": {"SidecarService": {
                "Address": V6_B,
                "Port": SIDECAR_PORT,
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]
            }}
        })),
    );
}

/// The common start of these tests: a [`Mesh`] whose pods have IPv6 addresses next to their
/// IPv4 ones.
pub(crate) fn v6_mesh() -> Mesh {
    let mesh = Mesh::start(APP_PORT);
    add_v6(&mesh.pods.a, V6_A);
    add_v6(&mesh.pods.b, V6_B);
    mesh
}

/// `port` on pod B's IPv6 address.
pub(crate) fn v6_b(port: u16) -> SocketAddr {
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
    // Through proxy B (which dialled B over IPv4), from pod A's address (t90), with exactly
    // the client's bytes.
    assert_eq!(seen[0].peer.ip(), mesh.pods.a.ip, "{:?}", seen[0].peer);
    assert_eq!(seen[0].bytes, marker.as_bytes());
    let log = proxy_a.log();
    assert!(
        log.contains("mesh destination") && log.contains(&dst.to_string()),
        "{log}"
    );
    proxy_b.wait_connections("inbound", "ok");
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

/// Issue 14 point 3: inbound IPv6 is captured like IPv4. A plaintext client that bypasses the
/// mesh (pod A has no proxy) and connects to B's app port over IPv6 is handed to B's proxy by
/// `sk_lookup`, which wants mutual TLS: the app never sees the connection. (Before, only IPv4
/// was steered and this reached the app in plaintext.)
#[test]
fn ipv6_inbound_to_the_app_port_is_steered_to_the_proxy() {
    let mesh = v6_mesh();
    let (pods, http) = (&mesh.pods, mesh.http);
    register_v6(http, "svc-b", &pods.b, V6_B, APP_PORT);
    // The app listens on IPv6 (and IPv4 through a second echo), so only steering keeps a
    // bypassing client away from it.
    let app_b6 = Echo::start_on(&pods.b, v6_b(APP_PORT));
    let app_b4 = Echo::start(&pods.b, APP_PORT);
    let proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    for (dst, app) in [(v6_b(APP_PORT), &app_b6), (pods.b.addr(APP_PORT), &app_b4)] {
        let out = client(&pods.a, dst, "plaintext-bypass");
        // What comes back, if anything, is the proxy's TLS alert record (content type 21),
        // never the app's echo.
        let echo = out["echo"].as_str().unwrap_or_default();
        assert_ne!(echo, "plaintext-bypass", "{dst}: {out}");
        assert!(
            echo.is_empty() || echo.starts_with('\u{15}'),
            "{dst}: {out}"
        );
        assert_eq!(app.accepted(), 0, "{dst} reached the app in plaintext");
    }
    // Both went to the proxy: two steered lookups, two refused handshakes.
    eventually("both steered", Duration::from_secs(10), || {
        (proxy_b.ebpf_event("inbound_steered") >= 2.0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy_b.log()));
}

/// A mesh connection over IPv6 end to end (B's sidecar registered at its IPv6 address, so A's
/// proxy dials `[V6_B]:21000`, B's IPv6 inbound listener): authorized like IPv4, allowed and
/// then denied.
#[test]
fn ipv6_inbound_mesh_connections_are_authorized() {
    let mesh = v6_mesh();
    let (pods, http) = (&mesh.pods, mesh.http);
    register_b_over_v6(http);
    set_intention(http, "svc-a", "svc-b", "allow");
    let app_b = Echo::start(&pods.b, APP_PORT);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
    let proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    let out = client(&pods.a, v6_b(APP_PORT), "mesh-over-ipv6");
    assert_echoed(&out, "mesh-over-ipv6", &[&proxy_a, &proxy_b]);
    assert_eq!(app_b.wait_seen(1)[0].bytes, b"mesh-over-ipv6");
    // B's IPv4 listener is bound to its IPv4 address only: this came in over IPv6.
    proxy_b.wait_connections("inbound", "ok");

    set_intention(http, "svc-a", "svc-b", "deny");
    let denied = eventually("the deny to apply", Duration::from_secs(10), || {
        let out = client(&pods.a, v6_b(APP_PORT), "must-not-arrive");
        out.get("echo").is_none().then_some(out)
    })
    .unwrap();
    let err = denied["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("ConnectionResetError"), "{denied}");
    proxy_b.wait_connections("inbound", "denied");
    assert_eq!(
        app_b.seen().len(),
        1,
        "only the allowed connection reached the app"
    );
}
