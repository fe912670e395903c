//! The built-in CA through a running cluster: CSRs signed by the servers, certificates checked
//! by `openssl verify` (an independent X.509 implementation), rotation with cross-signing and
//! CA configuration changes through the HTTP API.

mod t10_sign_and_verify;
mod t20_rotation;
mod t30_configuration;
mod t35_leaf_ttl_limits;
mod t40_no_private_keys;

use std::path::Path;

use mesh_control::ca::generate_csr;
use mesh_control::model::IssuedLeaf;
use mesh_control::server::Server;
use mesh_control::spiffe::SpiffeId;

/// Issues a leaf for `service` from `server`, with a fresh key and a CSR for the cluster's own
/// trust domain.
pub fn issue_leaf(server: &Server, service: &str) -> IssuedLeaf {
    let td = server.state.read(|s| s.ca.trust_domain.clone());
    let (csr, _key) = generate_csr(&SpiffeId::service(&td, "dc1", service)).expect("CSR");
    server
        .sign_csr(service, "dc1", &csr)
        .unwrap_or_else(|e| panic!("signing a CSR for {service}: {e}"))
}

/// Writes `pem` to `dir/name` and returns the path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path.to_string_lossy().into_owned()
}

pub use mesh_tests::openssl::openssl_verify;

/// Asserts that `openssl verify -CAfile ca_pem leaf_pem` fails; `what` names the leak if not.
pub async fn assert_not_verified(ca_pem: &str, leaf_pem: &str, what: &str) {
    assert!(
        openssl_verify(&["-CAfile", ca_pem, leaf_pem])
            .await
            .is_err(),
        "{what}"
    );
}

/// `NotAfter - now` of a PEM certificate, in seconds.
pub fn seconds_left(cert_pem: &str) -> i64 {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("X.509");
    cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The URI SANs of a PEM certificate.
pub fn uri_sans(cert_pem: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("X.509");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The root list of `GET /v1/connect/ca/roots`, as JSON.
pub async fn roots(http: std::net::SocketAddr) -> serde_json::Value {
    let r = mesh_tests::http_raw::get(http, "/v1/connect/ca/roots")
        .await
        .expect("GET roots");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Every `Roots[]` entry.
pub fn root_entries(list: &serde_json::Value) -> Vec<serde_json::Value> {
    list["Roots"].as_array().expect("Roots array").clone()
}

/// The one active root, asserting there is exactly one.
pub fn active_root(list: &serde_json::Value) -> serde_json::Value {
    let active: Vec<_> = root_entries(list)
        .into_iter()
        .filter(|r| r["Active"] == true)
        .collect();
    assert_eq!(active.len(), 1, "exactly one active root: {list}");
    assert_eq!(active[0]["ID"], list["ActiveRootID"], "{list}");
    active[0].clone()
}

pub use mesh_tests::openssl::root_bundle as bundle;

/// `PUT /v1/connect/ca/rotate` on `http`, asserting it succeeds.
pub async fn rotate(http: std::net::SocketAddr) -> mesh_tests::http_raw::Reply {
    let r = mesh_tests::http_raw::send(http, http::Method::PUT, "/v1/connect/ca/rotate", None)
        .await
        .expect("rotate answers");
    assert_eq!(r.status, 200, "{}", r.text());
    r
}
