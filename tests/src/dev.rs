//! The embedded control plane for the end-to-end tests and the demo: `meshd dev` on
//! OS-chosen loopback ports and the few HTTP calls every proxy test makes (wait for the CA,
//! set an intention), asserting on the answer so a failing call names itself.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{HttpResponse, Meshd, eventually, http};

/// `meshd dev` on OS-chosen loopback ports (in the host namespace, like the proxies).
pub fn meshd_dev() -> Meshd {
    Meshd::spawn("dev", &dev_args()).expect("meshd dev starts")
}

/// The arguments of [`meshd_dev`]: `dev` with its HTTP and RPC listeners on OS-chosen
/// loopback ports.
pub fn dev_args() -> Vec<String> {
    ["dev", "--http-addr", "127.0.0.1:0", "--bind", "127.0.0.1:0"]
        .map(String::from)
        .to_vec()
}

pub fn call(method: &str, addr: SocketAddr, path: &str, body: Option<&Value>) -> HttpResponse {
    let body = body.map(Value::to_string);
    http(method, addr, path, body.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e:#}"))
}

pub fn ok(method: &str, addr: SocketAddr, path: &str, body: Option<&Value>) -> Value {
    let r = call(method, addr, path, body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    r.json().unwrap_or(Value::Null)
}

pub fn wait_ca(http_addr: SocketAddr) {
    eventually("CA roots", Duration::from_secs(20), || {
        let r = http("GET", http_addr, "/v1/connect/ca/roots", None).ok()?;
        let v = r.json().ok()?;
        (r.status == 200 && v["Roots"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .unwrap();
}

pub fn set_intention(http_addr: SocketAddr, src: &str, dst: &str, action: &str) {
    ok(
        "PUT",
        http_addr,
        &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
        Some(&json!({ "Action": action })),
    );
}
