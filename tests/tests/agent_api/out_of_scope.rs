//! Consul endpoint families this mesh does not implement (KV, sessions, events, txn, prepared
//! queries, snapshots; see `control/README.md`) answer Consul's own 404 for an unknown path,
//! through the agent and on the server alike, so a client sees "not supported", never a
//! half-working endpoint.

use super::dev_http::{curl_status, start};

#[test]
fn unsupported_families_are_consuls_404() {
    let meshd = start();
    let addr = meshd.http_addr;
    for (method, path) in [
        ("GET", "/v1/kv/app/config"),
        ("PUT", "/v1/kv/app/config"),
        ("PUT", "/v1/session/create"),
        ("GET", "/v1/session/list"),
        ("PUT", "/v1/event/fire/deploy"),
        ("GET", "/v1/event/list"),
        ("PUT", "/v1/txn"),
        ("GET", "/v1/query"),
        ("GET", "/v1/snapshot"),
    ] {
        let r = curl_status(method, addr, path, Some("{}"), 404);
        assert_eq!(
            r.body, "Invalid URL path: not a recognized HTTP API endpoint",
            "{method} {path}"
        );
    }
}
