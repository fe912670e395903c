//! Sidecars side by side with default flags (issue 15, point 7): with no `--admin-addr`, each
//! proxy's admin listener takes the registration's `Proxy.Config.admin_addr` or else a port the
//! OS picks, so any number start on one host; the ready line announces the address. Before,
//! the second one failed with `binding 127.0.0.1:19000 failed: Address already in use`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;

use mesh_tests::dev::ok;
use mesh_tests::process::free_port;
use mesh_tests::sidecar::{Proxy, proxy_bin, sidecar_registration};
use serde_json::json;

use crate::harness::{meshd_dev, register};

/// Registers `name` with a sidecar whose `Proxy.Config.admin_addr` is `admin`.
fn register_with_admin(http: SocketAddr, name: &str, admin: &serde_json::Value) {
    let mut body = sidecar_registration(name, free_port(), free_port(), &[]);
    body["Connect"]["SidecarService"]["Proxy"]["Config"] = json!({ "admin_addr": admin });
    ok("PUT", http, "/v1/agent/service/register", Some(&body));
}

#[test]
fn three_sidecars_with_default_flags_start_side_by_side() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let names = ["web", "api", "db"];
    for n in names {
        register(http, n, free_port(), free_port(), &[]);
    }
    let proxies: Vec<Proxy> = names
        .iter()
        .map(|n| Proxy::start_default_admin(http, n))
        .collect();
    let admins: HashSet<SocketAddr> = proxies.iter().map(|p| p.admin).collect();
    assert_eq!(
        admins.len(),
        3,
        "three distinct admin addresses: {admins:?}"
    );
    for p in &proxies {
        assert!(
            p.admin.ip().is_loopback() && p.admin.port() != 0,
            "{}",
            p.admin
        );
        // Each answers its own admin API, as its own service.
        let id = p.config()["Identity"]["SpiffeID"].clone();
        let line = p.ready_line().unwrap();
        assert!(
            line.contains(&format!("admin={}", p.admin)),
            "ready line announces the admin address: {line}"
        );
        assert!(
            id.as_str()
                .is_some_and(|id| id.ends_with(&format!("/svc/{}", p.name))),
            "{} serves {id}",
            p.name
        );
    }
}

#[test]
fn the_registration_may_choose_the_admin_address_and_must_keep_it_loopback() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let chosen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    register_with_admin(http, "web", &json!(chosen.to_string()));
    let web = Proxy::start_default_admin(http, "web");
    assert_eq!(
        web.admin,
        chosen,
        "{}",
        web.ready_line().unwrap_or_default()
    );

    // A registration may not open the admin port beyond the host: refused at start, saying why.
    register_with_admin(http, "api", &json!("0.0.0.0:19555"));
    let out = Command::new(proxy_bin())
        .args(["run", "--sidecar-for", "api", "--agent-addr"])
        .arg(http.to_string())
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Proxy.Config.admin_addr")
            && stderr.contains("not a loopback address")
            && stderr.contains("--admin-addr"),
        "{stderr}"
    );
    // `--admin-addr` still overrides the registration (the harness passes a free port).
    let api = Proxy::start(http, "api", &[]);
    let line = api.ready_line().unwrap_or_default();
    assert!(line.contains(&format!("admin={}", api.admin)), "{line}");
}
