//! Acceptance 4: after the proxy exits, cleanly (SIGTERM) or not (SIGKILL), none of its eBPF
//! programs stays loaded and the pod's direct connectivity is back, in both directions.

use std::net::SocketAddr;

use crate::harness::*;

const APP_PORT: u16 = 8080;
const PLAIN_PORT: u16 = 9000;

#[test]
fn programs_detach_on_sigterm_and_sigkill_and_direct_connectivity_returns() {
    require_root();
    let _serial = serial();
    let _obj = ebpf_object();
    assert_no_programs_left();
    let pods = pods();
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    register(http, "svc-a", &pods.a, APP_PORT);
    register(http, "svc-b", &pods.b, APP_PORT);
    set_intention(http, "svc-a", "svc-b", "allow");
    let app_b = Echo::start(&pods.b, APP_PORT);
    let plain_b = Echo::start(&pods.b, PLAIN_PORT);
    let to_app = SocketAddr::new(pods.b.ip.into(), APP_PORT);
    let to_plain = SocketAddr::new(pods.b.ip.into(), PLAIN_PORT);

    for signal in ["TERM", "KILL"] {
        let mut proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
        let mut proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);
        assert!(!loaded_mesh_programs().is_empty());
        // Captured while the proxies run: B's app sees its proxy (loopback) as the peer.
        let before = app_b.seen().len();
        let out = client(&pods.a, to_app, "via-mesh");
        assert_eq!(
            out["echo"].as_str(),
            Some("via-mesh"),
            "{out}\n{}",
            proxy_a.log()
        );
        let seen = app_b.wait_seen(before + 1);
        assert!(seen.last().unwrap().peer.ip().is_loopback());

        proxy_a.stop(signal);
        proxy_b.stop(signal);
        assert_no_programs_left();

        // Outbound: a connect that connect4 would send to the (gone) outbound listener now
        // goes straight to the destination; inbound: B's app port is no longer steered.
        assert_direct_both_ways(
            &pods,
            &app_b,
            to_plain,
            to_app,
            &format!("after SIG{signal}"),
        );
    }
    assert!(plain_b.accepted() >= 2);
}
