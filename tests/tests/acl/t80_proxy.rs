//! `meshproxy --token` against `meshd dev --acl` (issue 12): a proxy whose token may not have
//! its service's certificate refuses to start and says why; one whose token may, serves; and
//! when that token is deleted the proxy keeps serving live traffic with its current leaf but
//! cannot renew it, and logs the refusal.

use std::time::Duration;

use mesh_tests::process::eventually;
use mesh_tests::sidecar::{Echo, Proxy, roundtrip, sidecar_registration};

use super::*;

/// A token whose only grant is the service identity `service`: its AccessorID and SecretID.
fn identity_token(dev: &Dev, root: &str, service: &str) -> (String, String) {
    let body = format!(r#"{{"ServiceIdentities":[{{"ServiceName":"{service}"}}]}}"#);
    let t = dev.put("/v1/acl/token", Auth::Header(root), &body);
    (
        t["AccessorID"].as_str().expect("AccessorID").to_string(),
        t["SecretID"].as_str().expect("SecretID").to_string(),
    )
}

/// Registers `body` on the dev agent with the management token.
fn register(dev: &Dev, root: &str, body: &str) {
    dev.curl(
        "PUT",
        "/v1/agent/service/register",
        Auth::Header(root),
        Some(body),
    )
    .assert_status(200);
}

#[test]
fn a_proxy_without_service_write_refuses_to_start_and_says_why() {
    let (dev, root) = Dev::bootstrapped();
    let app = Echo::start();
    let public = mesh_tests::process::free_port();
    let reg = sidecar_registration("web", app.port(), public, &[]).to_string();
    register(&dev, &root, &reg);

    // db's identity reads every service (it finds web's sidecar) but may not write web.
    let (_, db_secret) = identity_token(&dev, &root, "db");
    let mut proxy = Proxy::spawn(dev.addr, "web", &["--token", &db_secret]);
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the proxy kept running:\n{}", proxy.log()));
    assert!(!status.success(), "{status:?}");
    let log = proxy.log();
    assert!(
        log.contains("may not get \"web\"'s certificate")
            && log.contains("lacks permission 'service:write' on \"web\""),
        "{log}"
    );
    assert!(
        !log.contains(&db_secret),
        "the secret is never logged:\n{log}"
    );
    dev.stop();
}

#[test]
fn a_deleted_token_stops_renewal_but_not_live_traffic() {
    let (dev, root) = Dev::bootstrapped();
    let app = Echo::start();
    let (web_public, db_public, upstream) = (
        mesh_tests::process::free_port(),
        mesh_tests::process::free_port(),
        mesh_tests::process::free_port(),
    );
    for (name, port, public, ups) in [
        ("web", app.port(), web_public, vec![]),
        ("db", app.port(), db_public, vec![("web", upstream)]),
    ] {
        let reg = sidecar_registration(name, port, public, &ups).to_string();
        register(&dev, &root, &reg);
    }
    let allow = r#"{"SourceName":"db","DestinationName":"web","Action":"allow"}"#;
    dev.curl(
        "PUT",
        "/v1/connect/intentions/exact?source=db&destination=web",
        Auth::Header(&root),
        Some(allow),
    )
    .assert_status(200);
    let (web_accessor, web_secret) = identity_token(&dev, &root, "web");
    let (_, db_secret) = identity_token(&dev, &root, "db");
    let web = Proxy::start(dev.addr, "web", &["--token", &web_secret]);
    let db = Proxy::start(dev.addr, "db", &["--token", &db_secret]);
    let through = std::net::SocketAddr::from(([127, 0, 0, 1], upstream));
    let echoed = eventually(
        "db -> web through both proxies",
        Duration::from_secs(20),
        || {
            roundtrip(through, b"before")
                .ok()
                .filter(|b| b == b"before")
        },
    );
    assert!(echoed.is_ok(), "mTLS chain works with both tokens");

    dev.curl(
        "DELETE",
        &format!("/v1/acl/token/{web_accessor}"),
        Auth::Header(&root),
        None,
    )
    .assert_status(200);
    // web's token can no longer get (renew) web's leaf, within a second...
    eventually(
        "the deleted token's leaf request to be refused",
        Duration::from_secs(1),
        || {
            let (status, _) = dev.get("/v1/agent/connect/ca/leaf/web", Auth::Header(&web_secret));
            (status == 403).then_some(())
        },
    )
    .expect("revoked within 1 s");
    // ...but the web proxy keeps serving with the leaf it holds: new connections through the
    // chain still complete their mutual TLS handshake and reach the app.
    assert_eq!(
        roundtrip(through, b"after").expect("chain still serves"),
        b"after"
    );
    // The proxies' blocking queries would hold the agent's graceful shutdown: stop them first.
    drop((web, db));
    dev.stop();
}
