//! The read endpoints and maintenance routes of issue 15 point 2 under ACLs, as Consul
//! decides them: check lists and a node's services filtered by `node:read`/`service:read`
//! (with `X-Consul-Results-Filtered-By-ACLs`), an unreadable node answered `null`, the agent's
//! service health needing `service:read`, maintenance `node:write` or `service:write`.

use std::time::Duration;

use mesh_tests::process::eventually;

use super::t50_routes::token;
use super::*;

const WEB_READER: &str =
    "service \"web\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\n";

/// The check IDs of a check list.
fn check_ids(r: &Reply) -> Vec<String> {
    let v = r.json();
    let mut ids: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|c| c["CheckID"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

#[test]
fn reads_are_filtered_and_maintenance_needs_write() {
    let (dev, root) = Dev::bootstrapped();
    for name in ["web", "db"] {
        let body = format!(r#"{{"Name": "{name}", "Port": 80, "Check": {{"TTL": "60s"}}}}"#);
        dev.curl(
            "PUT",
            "/v1/agent/service/register",
            Auth::Header(&root),
            Some(&body),
        )
        .assert_status(200);
    }
    eventually(
        "both checks in the catalog",
        Duration::from_secs(10),
        || {
            let r = dev.curl("GET", "/v1/health/state/any", Auth::Header(&root), None);
            (check_ids(&r).len() == 3).then_some(())
        },
    )
    .unwrap();
    let reader = token(&dev, &root, "web-reader", WEB_READER);
    let auth = Auth::Header(&reader);

    let r = dev.curl("GET", "/v1/health/state/any", auth, None);
    r.assert_status(200);
    assert_eq!(check_ids(&r), ["serfHealth", "service:web"]);
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
    let r = dev.curl("GET", "/v1/health/checks/db", auth, None);
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));

    let node = dev.ok("GET", "/v1/catalog/node/dev", auth, None);
    let services: Vec<&String> = node["Services"]
        .as_object()
        .expect("Services")
        .keys()
        .collect();
    assert_eq!(services, ["web"]);
    // The anonymous token may not read the node: `null`, as Consul.
    let r = dev.curl("GET", "/v1/catalog/node/dev", Auth::None, None);
    assert_eq!((r.status, r.body.trim()), (200, "null"));

    dev.curl(
        "GET",
        "/v1/agent/health/service/id/web?format=text",
        auth,
        None,
    )
    .assert_status(503);
    dev.curl("GET", "/v1/agent/health/service/id/db", auth, None)
        .assert_refused(403, "'service:read' on \"db\"");
    dev.curl("GET", "/v1/agent/health/service/name/db", auth, None)
        .assert_refused(403, "'service:read' on \"db\"");

    dev.curl("PUT", "/v1/agent/maintenance?enable=true", auth, None)
        .assert_refused(403, "'node:write' on \"dev\"");
    dev.curl(
        "PUT",
        "/v1/agent/service/maintenance/web?enable=true",
        auth,
        None,
    )
    .assert_refused(403, "'service:write' on \"web\"");
    dev.curl(
        "PUT",
        "/v1/agent/maintenance?enable=true",
        Auth::Header(&root),
        None,
    )
    .assert_status(200);
    dev.stop();
}
