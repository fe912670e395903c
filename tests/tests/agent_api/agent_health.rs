//! `/v1/agent/health/service/{id,name}/...` and maintenance mode (`/v1/agent/maintenance`,
//! `/v1/agent/service/maintenance/:id`) (issue 15 point 2): py-consul turns maintenance on and
//! off and sees it in the catalog; curl reads the aggregated status codes and gets the
//! refusals.

use std::net::SocketAddr;

use super::dev_http::{curl, curl_status, py_consul, start};

/// The aggregated health of local instance `id` as curl gets it in text: (status, word).
fn by_id_text(addr: SocketAddr, id: &str) -> (u16, String) {
    let r = curl(
        "GET",
        addr,
        &format!("/v1/agent/health/service/id/{id}?format=text"),
        None,
    );
    (r.status, r.body)
}

#[test]
fn agent_service_health_and_maintenance() {
    let meshd = start();
    let addr = meshd.http_addr;
    py_consul(addr, "agent");

    let ttl = r#"{"Name": "cache", "ID": "cache-1", "Port": 6379, "Check": {"TTL": "60s"}}"#;
    curl_status("PUT", addr, "/v1/agent/service/register", Some(ttl), 200);
    for (op, status, word) in [
        ("warn", 429, "warning"),
        ("fail", 503, "critical"),
        ("pass", 200, "passing"),
    ] {
        curl_status(
            "PUT",
            addr,
            &format!("/v1/agent/check/{op}/service:cache-1"),
            None,
            200,
        );
        assert_eq!(
            by_id_text(addr, "cache-1"),
            (status, word.to_string()),
            "after {op}"
        );
    }
    // JSON: Consul's AgentServiceChecksInfo, one object by ID, a list by name.
    let v = curl_status(
        "GET",
        addr,
        "/v1/agent/health/service/id/cache-1",
        None,
        200,
    )
    .json();
    assert_eq!(v["AggregatedStatus"], "passing");
    assert_eq!(v["Service"]["ID"], "cache-1");
    let ids: Vec<&str> = v["Checks"]
        .as_array()
        .expect("Checks")
        .iter()
        .filter_map(|c| c["CheckID"].as_str())
        .collect();
    assert!(ids.contains(&"service:cache-1"), "{ids:?}");
    let list = curl_status(
        "GET",
        addr,
        "/v1/agent/health/service/name/cache",
        None,
        200,
    )
    .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Maintenance wins over passing checks: 503 "maintenance".
    curl_status(
        "PUT",
        addr,
        "/v1/agent/service/maintenance/cache-1?enable=true",
        None,
        200,
    );
    assert_eq!(
        by_id_text(addr, "cache-1"),
        (503, "maintenance".to_string())
    );
    let r = curl(
        "GET",
        addr,
        "/v1/agent/health/service/name/cache?format=text",
        None,
    );
    assert_eq!((r.status, r.body.as_str()), (503, "maintenance"));
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    curl_status(
        "PUT",
        addr,
        "/v1/agent/service/maintenance/cache-1?enable=false",
        None,
        200,
    );
    assert_eq!(by_id_text(addr, "cache-1"), (200, "passing".to_string()));

    // Unknown IDs and names: 404 with Consul's words.
    assert_eq!(
        by_id_text(addr, "nope"),
        (404, "ServiceId nope not found".to_string())
    );
    let r = curl("GET", addr, "/v1/agent/health/service/name/nope", None);
    assert_eq!((r.status, r.json()), (404, serde_json::json!([])));
    curl_status(
        "PUT",
        addr,
        "/v1/agent/service/maintenance/nope?enable=true",
        None,
        404,
    );

    // Refusals of a maintenance request.
    for (path, words) in [
        ("/v1/agent/maintenance", "Missing value for enable"),
        (
            "/v1/agent/maintenance?enable=maybe",
            "Invalid value for enable: \"maybe\"",
        ),
        (
            "/v1/agent/service/maintenance/cache-1?enable=2",
            "Invalid value for enable: \"2\"",
        ),
    ] {
        let r = curl_status("PUT", addr, path, None, 400);
        assert!(r.body.contains(words), "{path}: {}", r.body);
    }
    // PUT only, as Consul.
    curl_status("GET", addr, "/v1/agent/maintenance?enable=true", None, 405);
}
