//! Acceptance 3: an excluded port goes direct, a non-mesh destination passes through the
//! proxy in plaintext, and `--mesh-destinations-only` refuses it. Also the other exclusions
//! (CIDR, uid): excluded connects go direct, the rest is still captured.

use std::time::Duration;

use mesh_tests::process::eventually;

use crate::harness::*;

const APP_PORT: u16 = 8080;

#[test]
fn excluded_port_pass_through_and_mesh_destinations_only() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http, app_b) = (&scene.pods, scene.http, &scene.app_b);
    let to_plain = pods.b.addr(9000);
    let plain = Echo::start(&pods.b, 9000);
    let excluded = Echo::start(&pods.b, 9001);
    let _proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    {
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-outbound-port", "9001"]);
        // Excluded port: straight to the destination, the proxy never sees it.
        let out = client(&pods.a, pods.b.addr(9001), "excluded");
        assert_echoed(&out, "excluded", &[]);
        assert_eq!(excluded.accepted(), 1);
        let outbound = || proxy_a.metric("meshproxy_connections_total", &["outbound"]);
        assert_eq!(outbound(), 0.0, "{}", proxy_a.log());

        // Non-mesh destination: through the proxy, in plaintext (the capture sees the marker,
        // which also shows the capture of t10 would have seen a leak).
        let marker = "PASS-THROUGH-MARKER-51c2";
        let capture = Capture::start(&pods.a, marker);
        let out = client(&pods.a, to_plain, marker);
        let counts = capture.finish();
        assert_echoed(&out, marker, &[&proxy_a]);
        assert!(counts["marker"].as_u64().unwrap() > 0, "{counts}");
        eventually(
            "proxy A counted the pass-through",
            Duration::from_secs(10),
            || (outbound() >= 1.0).then_some(()),
        )
        .unwrap();
        assert!(
            proxy_a.log().contains("passing through"),
            "{}",
            proxy_a.log()
        );
        assert_eq!(plain.accepted(), 1);
    }
    {
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--mesh-destinations-only"]);
        let out = client(&pods.a, to_plain, "refused");
        assert_ne!(out["echo"].as_str(), Some("refused"), "{out}");
        assert_eq!(
            plain.accepted(),
            1,
            "a refused connection reached the destination"
        );
        assert!(proxy_a.log().contains("refused"), "{}", proxy_a.log());
        // Mesh destinations still work.
        let out = client(&pods.a, pods.b.addr(APP_PORT), "mesh-ok");
        assert_echoed(&out, "mesh-ok", &[&proxy_a]);
        assert_eq!(app_b.accepted(), 1);
    }
}

#[test]
fn excluded_cidr_and_uid_go_direct() {
    let mesh = Mesh::start(APP_PORT);
    let (pods, http) = (&mesh.pods, mesh.http);
    let plain = Echo::start(&pods.b, 9000);
    let to_plain = pods.b.addr(9000);
    let captured = |p: &Proxy| p.metric("meshproxy_connections_total", &["outbound"]);
    {
        let cidr = format!("{}/24", pods.b.ip);
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-cidr", &cidr]);
        let out = client(&pods.a, to_plain, "cidr");
        assert_echoed(&out, "cidr", &[&proxy_a]);
        assert_eq!(plain.accepted(), 1);
        assert_eq!(captured(&proxy_a), 0.0, "{}", proxy_a.log());
    }
    {
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-uid", "65534"]);
        let out = client_as(&pods.a, 65534, to_plain, "uid-excluded");
        assert_echoed(&out, "uid-excluded", &[&proxy_a]);
        assert_eq!(captured(&proxy_a), 0.0, "{}", proxy_a.log());
        // Another uid is still captured (and passed through).
        let out = client_as(&pods.a, 65533, to_plain, "uid-captured");
        assert_echoed(&out, "uid-captured", &[&proxy_a]);
        eventually(
            "proxy A captured the other uid",
            Duration::from_secs(10),
            || (captured(&proxy_a) >= 1.0).then_some(()),
        )
        .unwrap();
        assert_eq!(plain.accepted(), 3);
    }
}
