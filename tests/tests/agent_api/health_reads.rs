//! `/v1/health/checks/:service`, `/v1/health/node/:node` and `/v1/health/state/:state`
//! (issue 15 point 2): read with py-consul (including a blocking `health.checks` woken by a
//! check's change), an unknown state refused with curl.

use super::dev_http::{curl_status, py_consul, start};

#[test]
fn health_check_lists() {
    let meshd = start();
    let addr = meshd.http_addr;
    py_consul(addr, "health");

    let r = curl_status("GET", addr, "/v1/health/state/unknown", None, 400);
    assert!(
        r.body.contains("\"unknown\"") && r.body.contains("any, passing, warning or critical"),
        "{}",
        r.body
    );
    // Consul's spelling only: the state is case-sensitive.
    curl_status("GET", addr, "/v1/health/state/Passing", None, 400);
    // A check list of a service has Consul's headers of a blocking query.
    let r = curl_status("GET", addr, "/v1/health/checks/web", None, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "{}", r.body);
}
