//! Host mode: `meshproxy run --transparent` without `--cgroup` captures the connects of every
//! process on the host (the cgroup v2 root) except its own, so a node proxy needs no pod.
//!
//! The proxy runs in a cgroup of its own (as a node proxy's unit would), the client is a plain
//! process of the test (host network namespace, the test's cgroup) and the destination is a
//! server in a namespace joined to the host by a veth pair. While the proxy runs, every host
//! process's non-loopback TCP connect goes through it; the transparent tests run one at a
//! time, and this one takes a few seconds.

use std::net::SocketAddr;

use mesh_tests::pod::{Cgroup, HostLink};
use mesh_tests::process::free_port;
use serde_json::json;

use crate::harness::*;

const SERVER_PORT: u16 = 9000;

#[test]
fn host_mode_captures_host_processes_but_not_the_proxy_itself() {
    let _serial = exclusive();
    assert_no_programs_left();
    let link = HostLink::create().expect("netns joined to the host");
    let server = Echo::start(&link.far, SERVER_PORT);
    let dst = SocketAddr::new(link.far.ip.into(), SERVER_PORT);
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    let (sidecar_port, outbound_port) = (free_port(), free_port());
    ok(
        "PUT",
        http,
        "/v1/agent/service/register",
        Some(&json!({
            "Name": "node", "ID": "node", "Address": "127.0.0.1", "Port": free_port(),
            "Connect": {"SidecarService": {
                "Address": "127.0.0.1", "Port": sidecar_port,
                "Checks": [{"Name": "ttl", "TTL": "1h", "Status": "passing"}]
            }}
        })),
    );
    let cgroup = Cgroup::create("node-proxy").expect("the proxy's cgroup");
    let mut proxy = Proxy::start_host(
        http,
        "node",
        &["--outbound-port", &outbound_port.to_string(), "--fail-open"],
        &cgroup,
    );

    let out = client_host(dst, "from-the-host");
    assert_echoed(&out, "from-the-host", &[&proxy]);
    // Redirected into the proxy (which the app cannot tell: getpeername shows the server) and
    // passed through, not a mesh destination.
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    let log = proxy.log();
    assert!(
        log.contains("passing through") && log.contains(&dst.to_string()),
        "{log}"
    );
    assert!(proxy.ebpf_event("redirected") >= 1.0, "{log}");
    // The proxy's own connect to the server was not redirected back into itself: it reached
    // the server, from the host's end of the veth.
    let seen = server.wait_seen(1);
    assert_eq!(seen.len(), 1, "one connection, no loop: {seen:?}");
    assert_eq!(seen[0].peer.ip(), std::net::IpAddr::from(link.host_ip));
    assert_eq!(seen[0].bytes, b"from-the-host");

    // --fail-open (given at start): once the proxy is gone the host connects directly again. A
    // fail-closed host capture would refuse every outside connect of every host process
    // (this test's runner included) until `transparent remove`; t20 tests fail-closed on a pod.
    proxy.stop("TERM");
    assert!(
        transparent_status()
            .iter()
            .all(|p| p["cgroup"].as_str() != Some(&*cgroup_root().to_string_lossy()))
    );
    assert_no_programs_left();
    let out = client_host(dst, "direct-again");
    assert_echoed(&out, "direct-again", &[]);
    assert_eq!(server.accepted(), 2);
}
