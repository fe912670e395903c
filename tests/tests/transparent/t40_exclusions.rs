//! Acceptance 3: an excluded port goes direct, a non-mesh destination passes through the
//! proxy in plaintext, and `--mesh-destinations-only` refuses it. Also the other exclusions
//! (CIDR, uid): excluded connects go direct, the rest is still captured.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::process::eventually;

use crate::harness::*;

const APP_PORT: u16 = 8080;

#[test]
fn excluded_port_pass_through_and_mesh_destinations_only() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http, app_b) = (&scene.pods, scene.http, &scene.app_b);
    let plain = Echo::start(&pods.b, 9000);
    let excluded = Echo::start(&pods.b, 9001);
    let _proxy_b = Proxy::start(http, "svc-b", &pods.b, &[]);

    {
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-outbound-port", "9001"]);
        // Excluded port: straight to the destination, the proxy never sees it.
        let out = client(&pods.a, SocketAddr::new(pods.b.ip.into(), 9001), "excluded");
        assert_eq!(out["echo"].as_str(), Some("excluded"), "{out}");
        assert_eq!(excluded.accepted(), 1);
        let outbound = || proxy_a.metric("meshproxy_connections_total", &["outbound"]);
        assert_eq!(outbound(), 0.0, "{}", proxy_a.log());

        // Non-mesh destination: through the proxy, in plaintext (the capture sees the marker,
        // which also shows the capture of t10 would have seen a leak).
        let marker = "PASS-THROUGH-MARKER-51c2";
        let capture = Capture::start(&pods.a, marker);
        let out = client(&pods.a, SocketAddr::new(pods.b.ip.into(), 9000), marker);
        let counts = capture.finish();
        assert_eq!(
            out["echo"].as_str(),
            Some(marker),
            "{out}\n{}",
            proxy_a.log()
        );
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
        let out = client(&pods.a, SocketAddr::new(pods.b.ip.into(), 9000), "refused");
        assert_ne!(out["echo"].as_str(), Some("refused"), "{out}");
        assert_eq!(
            plain.accepted(),
            1,
            "a refused connection reached the destination"
        );
        assert!(proxy_a.log().contains("refused"), "{}", proxy_a.log());
        // Mesh destinations still work.
        let out = client(
            &pods.a,
            SocketAddr::new(pods.b.ip.into(), APP_PORT),
            "mesh-ok",
        );
        assert_eq!(
            out["echo"].as_str(),
            Some("mesh-ok"),
            "{out}\n{}",
            proxy_a.log()
        );
        assert_eq!(app_b.accepted(), 1);
    }
}

#[test]
fn excluded_cidr_and_uid_go_direct() {
    require_root();
    let _serial = serial();
    let _obj = ebpf_object();
    let pods = pods();
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    register(http, "svc-a", &pods.a, APP_PORT);
    let plain = Echo::start(&pods.b, 9000);
    let to_plain = SocketAddr::new(pods.b.ip.into(), 9000);
    let captured = |p: &Proxy| p.metric("meshproxy_connections_total", &["outbound"]);
    {
        let cidr = format!("{}/24", pods.b.ip);
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-cidr", &cidr]);
        let out = client(&pods.a, to_plain, "cidr");
        assert_eq!(out["echo"].as_str(), Some("cidr"), "{out}");
        assert_eq!(plain.accepted(), 1);
        assert_eq!(captured(&proxy_a), 0.0, "{}", proxy_a.log());
    }
    {
        let proxy_a = Proxy::start(http, "svc-a", &pods.a, &["--exclude-uid", "65534"]);
        let out = client_as(&pods.a, 65534, to_plain, "uid-excluded");
        assert_eq!(out["echo"].as_str(), Some("uid-excluded"), "{out}");
        assert_eq!(captured(&proxy_a), 0.0, "{}", proxy_a.log());
        // Another uid is still captured (and passed through).
        let out = client_as(&pods.a, 65533, to_plain, "uid-captured");
        assert_eq!(out["echo"].as_str(), Some("uid-captured"), "{out}");
        eventually(
            "proxy A captured the other uid",
            Duration::from_secs(10),
            || (captured(&proxy_a) >= 1.0).then_some(()),
        )
        .unwrap();
        assert_eq!(plain.accepted(), 3);
    }
}
