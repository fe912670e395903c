//! Acceptance 4: after the proxy exits, cleanly (SIGTERM) or not (SIGKILL), none of its eBPF
//! programs stays loaded and the pod's direct connectivity is back, in both directions.

use crate::harness::*;

const APP_PORT: u16 = 8080;
const PLAIN_PORT: u16 = 9000;

#[test]
fn programs_detach_on_sigterm_and_sigkill_and_direct_connectivity_returns() {
    let scene = Scene::start("allow", APP_PORT);
    // A clean slate: nothing left loaded by an earlier test.
    assert_no_programs_left();
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let plain_b = Echo::start(&pods.b, PLAIN_PORT);
    let to_app = pods.b.addr(APP_PORT);
    let to_plain = pods.b.addr(PLAIN_PORT);

    for signal in ["TERM", "KILL"] {
        let (mut proxy_a, mut proxy_b) = scene.proxies(&[]);
        assert!(!loaded_mesh_programs().is_empty());
        // Captured while the proxies run: B's app sees its proxy (loopback) as the peer.
        let before = app_b.seen().len();
        let out = client(&pods.a, to_app, "via-mesh");
        assert_echoed(&out, "via-mesh", &[&proxy_a]);
        let seen = app_b.wait_seen(before + 1);
        assert!(seen.last().unwrap().peer.ip().is_loopback());

        proxy_a.stop(signal);
        proxy_b.stop(signal);
        assert_no_programs_left();

        // Outbound: a connect that connect4 would send to the (gone) outbound listener now
        // goes straight to the destination; inbound: B's app port is no longer steered.
        assert_direct_both_ways(pods, app_b, to_plain, to_app, &format!("after SIG{signal}"));
    }
    assert!(plain_b.accepted() >= 2);
}
