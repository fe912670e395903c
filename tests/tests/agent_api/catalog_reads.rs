//! `/v1/catalog/node/:node`, `/v1/catalog/node-services/:node`, `/v1/catalog/datacenters` and
//! the shape of `/v1/catalog/connect/:service` (issue 15 point 2): py-consul for what it reads,
//! curl for the rest and for an unknown node.

use std::time::Duration;

use mesh_tests::process::eventually;
use serde_json::json;

use super::dev_http::{curl, curl_status, py_consul, start};

#[test]
fn catalog_node_reads() {
    let meshd = start();
    let addr = meshd.http_addr;
    py_consul(addr, "catalog");
    let node = curl_status("GET", addr, "/v1/agent/self", None, 200).json()["Config"]["NodeName"]
        .as_str()
        .expect("NodeName")
        .to_string();

    // Unknown nodes: 200 with `null`, as Consul answers (not a 404).
    let r = curl_status("GET", addr, "/v1/catalog/node/no-such-node", None, 200);
    assert_eq!(r.body.trim(), "null");
    let r = curl_status(
        "GET",
        addr,
        "/v1/catalog/node-services/no-such-node",
        None,
        200,
    );
    assert_eq!(r.json(), json!({"Node": null, "Services": null}));

    // The same node as a list, with the service py-consul registered.
    let r = curl_status(
        "GET",
        addr,
        &format!("/v1/catalog/node-services/{node}"),
        None,
        200,
    );
    let v = r.json();
    assert_eq!(v["Node"]["Node"], node.as_str());
    let ids: Vec<&str> = v["Services"]
        .as_array()
        .expect("Services list")
        .iter()
        .filter_map(|s| s["ID"].as_str())
        .collect();
    assert!(ids.contains(&"api-1"), "{ids:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.headers
    );

    // /v1/catalog/connect/:service: Consul's CatalogService rows of the sidecar (the fields
    // every Consul answers carries).
    curl_status(
        "PUT",
        addr,
        "/v1/agent/service/register",
        Some(r#"{"Name": "pay", "Port": 7000, "Connect": {"SidecarService": {}}}"#),
        200,
    );
    let row = eventually(
        "pay's sidecar in /v1/catalog/connect/pay",
        Duration::from_secs(10),
        || {
            let v = curl("GET", addr, "/v1/catalog/connect/pay", None).json();
            v.as_array().and_then(|a| a.first().cloned())
        },
    )
    .unwrap();
    assert_eq!(row["ServiceID"], "pay-sidecar-proxy");
    assert_eq!(row["ServiceKind"], "connect-proxy");
    assert_eq!(row["ServiceProxy"]["DestinationServiceName"], "pay");
    assert_eq!(row["Node"], node.as_str());
    for key in [
        "Address",
        "Datacenter",
        "ServicePort",
        "ServiceAddress",
        "ServiceWeights",
        "ServiceEnableTagOverride",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(row.get(key).is_some(), "{key} missing from {row}");
    }
    // Only the mesh-capable instances: the plain `pay` instance is not a row.
    let rows = curl_status("GET", addr, "/v1/catalog/connect/pay", None, 200).json();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
}
