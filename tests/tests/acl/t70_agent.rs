//! The agent's own routes under ACLs (`meshd dev --acl`, its embedded agent), with curl:
//! leaves need `service:write` on the service (anonymous gets 403, a service identity gets
//! its own service only), registration needs `service:write` on what it registers, lists are
//! filtered, a deleted token stops working within a second, the agent's tokens are set at
//! runtime with `acl:write`; and with ACLs off nothing is enforced. A client agent
//! (`meshd agent --token`) enforces the same with its own token, answers the cached health
//! read only to `service:read`, forwards the caller's token with what it passes through, and
//! refuses a deleted token within a second too.

use std::time::{Duration, Instant};

use mesh_tests::process::{eventually, spawn_agent};

use super::*;

const ANON_DB_WRITE: &str = "Permission denied: anonymous token lacks permission \
                             'service:write' on \"db\"";

/// A token with the service identity `service`: its SecretID and AccessorID.
fn service_token(dev: &Dev, root: &str, service: &str) -> (String, String) {
    let body = format!(r#"{{"ServiceIdentities":[{{"ServiceName":"{service}"}}]}}"#);
    let t = dev.put("/v1/acl/token", Auth::Header(root), &body);
    (
        t["SecretID"].as_str().expect("SecretID").to_string(),
        t["AccessorID"].as_str().expect("AccessorID").to_string(),
    )
}

fn leaf(service: &str) -> String {
    format!("/v1/agent/connect/ca/leaf/{service}")
}

#[test]
fn leaves_need_service_write_on_their_service() {
    let (dev, root) = Dev::bootstrapped();
    let (web, web_accessor) = service_token(&dev, &root, "web");

    dev.curl("GET", &leaf("db"), Auth::None, None)
        .assert_refused(403, ANON_DB_WRITE);
    let l = dev.ok("GET", &leaf("db"), Auth::Header(&root), None);
    assert_eq!(l["Service"], "db");
    assert!(
        l["PrivateKeyPEM"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );

    for auth in [Auth::Header(&web), Auth::Bearer(&web)] {
        let l = dev.ok("GET", &leaf("web"), auth, None);
        assert_eq!(l["Service"], "web");
        dev.curl("GET", &leaf("db"), auth, None).assert_refused(
            403,
            &format!(
                "Permission denied: token with AccessorID '{web_accessor}' lacks permission \
                 'service:write' on \"db\""
            ),
        );
    }
    let l = dev.ok(
        "GET",
        &format!("{}?token={web}", leaf("web")),
        Auth::None,
        None,
    );
    assert_eq!(l["Service"], "web");
    dev.curl(
        "GET",
        &leaf("web"),
        Auth::Header("6a1b7a2c-0000-4000-8000-000000000000"),
        None,
    )
    .assert_refused(403, "ACL not found");
    dev.stop();
}

/// Issue 12 acceptance 1: a service identity gets its own service's leaf and nothing that
/// manages the mesh: no intentions (even to its own service), no CA rotation, no peer removal.
#[test]
fn a_service_identity_token_cannot_manage_the_mesh() {
    let (dev, root) = Dev::bootstrapped();
    let (web, _) = service_token(&dev, &root, "web");
    let auth = Auth::Header(&web);
    let intention = r#"{"SourceName":"web","DestinationName":"db","Action":"allow"}"#;
    for (method, path, body, permission) in [
        (
            "POST",
            "/v1/connect/intentions",
            Some(intention),
            "intention:write",
        ),
        (
            "PUT",
            "/v1/connect/intentions/exact?source=db&destination=web",
            Some(r#"{"Action":"allow"}"#),
            "intention:write",
        ),
        ("PUT", "/v1/connect/ca/rotate", None, "operator:write"),
        (
            "DELETE",
            "/v1/operator/raft/peer?id=dev",
            None,
            "operator:write",
        ),
    ] {
        dev.curl(method, path, auth, body)
            .assert_refused(403, &format!("lacks permission '{permission}'"));
    }
    // Nothing changed: no intention exists, the peer is still there.
    let ixns = dev.ok("GET", "/v1/connect/intentions", Auth::Header(&root), None);
    assert_eq!(ixns, serde_json::json!([]));
    let peers = dev.ok("GET", "/v1/status/peers", Auth::None, None);
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");
    dev.stop();
}

#[test]
fn agent_routes_refuse_the_anonymous_token() {
    let (dev, root) = Dev::bootstrapped();
    let authorize =
        r#"{"Target":"db","ClientCertURI":"spiffe://x.consul/ns/default/dc/dc1/svc/web"}"#;
    // Each route, what the anonymous token lacks; the management token passes.
    let routes: [(&str, &str, Option<&str>, &str); 4] = [
        ("GET", "/v1/agent/self", None, "'agent:read'"),
        (
            "POST",
            "/v1/agent/connect/authorize",
            Some(authorize),
            "'service:write' on \"db\"",
        ),
        (
            "GET",
            "/v1/agent/connect/intentions/db",
            None,
            "'intention:read' on \"db\"",
        ),
        ("GET", &leaf("db"), None, "'service:write' on \"db\""),
    ];
    for (method, path, body, lacks) in routes {
        dev.curl(method, path, Auth::None, body)
            .assert_refused(403, &format!("anonymous token lacks permission {lacks}"));
        let r = dev.curl(method, path, Auth::Header(&root), body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    }
    // The roots are public.
    let roots = dev.ok("GET", "/v1/agent/connect/ca/roots", Auth::None, None);
    assert!(
        roots["ActiveRootID"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    dev.stop();
}

#[test]
fn registration_and_checks_need_service_write() {
    let (dev, root) = Dev::bootstrapped();
    let (web, _) = service_token(&dev, &root, "web");
    let db = r#"{"Name":"db","Port":5432}"#;
    let web_service = r#"{"Name":"web","Port":8080,"Check":{"CheckID":"web-ttl","TTL":"30s"},
        "Connect":{"SidecarService":{}}}"#;

    for auth in [Auth::None, Auth::Header(&web)] {
        let r = dev.curl("PUT", "/v1/agent/service/register", auth, Some(db));
        r.assert_refused(403, "lacks permission 'service:write' on \"db\"");
    }
    dev.curl(
        "PUT",
        "/v1/agent/service/register",
        Auth::None,
        Some(web_service),
    )
    .assert_refused(403, "lacks permission 'service:write' on \"web\"");
    // The service identity covers web and its sidecar.
    let r = dev.curl(
        "PUT",
        "/v1/agent/service/register",
        Auth::Header(&web),
        Some(web_service),
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // Lists are filtered to what the token may read.
    let all = dev.ok("GET", "/v1/agent/services", Auth::Header(&root), None);
    assert!(
        all.get("web").is_some() && all.get("web-sidecar-proxy").is_some(),
        "{all}"
    );
    let anon = dev.ok("GET", "/v1/agent/services", Auth::None, None);
    assert_eq!(anon, serde_json::json!({}));
    let checks = dev.ok("GET", "/v1/agent/checks", Auth::Header(&web), None);
    assert!(checks.get("web-ttl").is_some(), "{checks}");
    assert_eq!(
        dev.ok("GET", "/v1/agent/checks", Auth::None, None),
        serde_json::json!({})
    );
    dev.curl("GET", "/v1/agent/service/web", Auth::None, None)
        .assert_refused(403, "'service:read' on \"web\"");

    // TTL updates and deregistration need service:write on the service.
    for path in [
        "/v1/agent/check/pass/web-ttl",
        "/v1/agent/service/deregister/web",
    ] {
        dev.curl("PUT", path, Auth::None, None)
            .assert_refused(403, "'service:write' on \"web\"");
        dev.curl("PUT", path, Auth::Header(&web), None)
            .assert_status(200);
    }
    dev.stop();
}

/// Deletes the token `accessor` and asserts the agent at `agent` refuses `secret` within 1 s
/// (after having served it, so the agent had it cached).
fn deleted_token_refused_within_a_second(
    dev: &Dev,
    root: &str,
    agent: SocketAddr,
    secret: &str,
    accessor: &str,
) {
    for _ in 0..2 {
        let r = curl_at(agent, "GET", &leaf("web"), Auth::Header(secret), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    dev.curl(
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        Auth::Header(root),
        None,
    )
    .assert_status(200);
    let deleted = Instant::now();
    eventually(
        "the deleted token to be refused",
        Duration::from_secs(1),
        || {
            let r = curl_at(agent, "GET", &leaf("web"), Auth::Header(secret), None);
            (r.status == 403 && r.body == "ACL not found").then_some(())
        },
    )
    .expect("refused within 1s");
    assert!(deleted.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_deleted_token_stops_working_within_a_second() {
    let (dev, root) = Dev::bootstrapped();
    let (web, accessor) = service_token(&dev, &root, "web");
    deleted_token_refused_within_a_second(&dev, &root, dev.addr, &web, &accessor);
    dev.stop();
}

#[test]
fn a_client_agent_enforces_with_its_own_token() {
    let (dev, root) = Dev::bootstrapped();
    let dir = mesh_tests::data_dir();
    let mut agent = spawn_agent(
        "client-1",
        &[dev.meshd.rpc_addr],
        dir.path(),
        &["--token", &root],
    );
    let at = agent.http_addr;
    let (web, accessor) = service_token(&dev, &root, "web");

    curl_at(at, "GET", "/v1/health/connect/db?cached", Auth::None, None).assert_refused(
        403,
        "anonymous token lacks permission 'service:read' on \"db\"",
    );
    let r = curl_at(
        at,
        "GET",
        "/v1/health/connect/db?cached",
        Auth::Header(&web),
        None,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    curl_at(at, "GET", &leaf("db"), Auth::Header(&web), None)
        .assert_refused(403, "'service:write' on \"db\"");

    // What the agent passes through carries the caller's token, in every carrier.
    for auth in [Auth::Header(&root), Auth::Bearer(&root)] {
        let r = curl_at(at, "GET", "/v1/acl/token/self", auth, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["SecretID"], root.as_str());
    }
    let r = curl_at(at, "GET", "/v1/acl/token/self", Auth::Header(&web), None);
    assert_eq!(r.json()["AccessorID"], accessor.as_str());

    // Its own work acts with its token: its node is in the catalog.
    eventually(
        "the client agent's node in the catalog",
        Duration::from_secs(10),
        || {
            let r = dev.curl("GET", "/v1/catalog/nodes", Auth::Header(&root), None);
            (r.status == 200 && r.body.contains("client-1")).then_some(())
        },
    )
    .expect("anti-entropy registered the node");

    deleted_token_refused_within_a_second(&dev, &root, at, &web, &accessor);
    assert!(agent.stop(), "meshd agent exits cleanly");
    dev.stop();
}

#[test]
fn the_agent_tokens_are_set_at_runtime_with_acl_write() {
    let (dev, root) = Dev::bootstrapped();
    let (web, _) = service_token(&dev, &root, "web");
    let body = format!(r#"{{"Token":"{root}"}}"#);
    dev.curl("PUT", "/v1/agent/token/agent", Auth::None, Some(&body))
        .assert_refused(403, "anonymous token lacks permission 'acl:write'");
    dev.curl(
        "PUT",
        "/v1/agent/token/agent",
        Auth::Header(&web),
        Some(&body),
    )
    .assert_refused(403, "lacks permission 'acl:write'");
    let r = dev.curl(
        "PUT",
        "/v1/agent/token/agent",
        Auth::Header(&root),
        Some(&body),
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    dev.curl(
        "PUT",
        "/v1/agent/token/nope",
        Auth::Header(&root),
        Some(&body),
    )
    .assert_refused(404, "nope");
    dev.curl(
        "PUT",
        "/v1/agent/token/agent",
        Auth::Header(&root),
        Some("{}"),
    )
    .assert_refused(400, "Request decode failed");

    // The default token: requests without a token act with it.
    dev.curl("GET", &leaf("web"), Auth::None, None)
        .assert_refused(403, "anonymous token");
    let default = format!(r#"{{"Token":"{web}"}}"#);
    dev.curl(
        "PUT",
        "/v1/agent/token/default",
        Auth::Header(&root),
        Some(&default),
    )
    .assert_status(200);
    assert_eq!(
        dev.ok("GET", &leaf("web"), Auth::None, None)["Service"],
        "web"
    );
    dev.stop();
}

#[test]
fn with_acls_off_the_agent_enforces_nothing() {
    let dev = Dev::start(false);
    assert_eq!(
        dev.ok("GET", &leaf("db"), Auth::None, None)["Service"],
        "db"
    );
    dev.curl(
        "PUT",
        "/v1/agent/service/register",
        Auth::Header("6a1b7a2c-0000-4000-8000-000000000000"),
        Some(r#"{"Name":"db","Port":5432}"#),
    )
    .assert_status(200);
    assert!(
        dev.ok("GET", "/v1/agent/services", Auth::None, None)
            .get("db")
            .is_some()
    );
    dev.curl(
        "PUT",
        "/v1/agent/token/agent",
        Auth::None,
        Some(r#"{"Token":"x"}"#),
    )
    .assert_refused(401, "ACL support disabled");
    dev.stop();
}
