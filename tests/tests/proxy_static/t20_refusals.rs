//! Peers that must not get through: a source missing from `allowed_sources`, and an upstream
//! that presents a valid certificate of another service.

use crate::harness::roundtrip;
use crate::support::Mesh;

#[test]
fn source_not_in_allowed_sources_never_reaches_the_app() {
    let mesh = Mesh::start();
    let before = mesh.db_app.seen();
    // api holds a valid leaf of the same CA, but db allows only web.
    let back = roundtrip(mesh.api_to_db, b"let me in").unwrap_or_default();
    assert!(back.is_empty(), "api got {back:?} back");
    mesh.db.wait_until("db logs the denial", |p| {
        p.log().contains("inbound connection denied") && p.log().contains("svc/api")
    });
    assert_eq!(
        mesh.db_app.seen(),
        before,
        "db's app saw the denied connection"
    );
    // web still gets through, and only web's bytes reached the app.
    assert_eq!(roundtrip(mesh.web_to_db, b"web").unwrap(), b"web");
    assert_eq!(mesh.db_app.seen(), (before.0 + 1, before.1 + 3));
}

#[test]
fn upstream_presenting_another_identity_is_refused() {
    let mesh = Mesh::start();
    // web's `imposter` upstream expects db's ID but reaches api's proxy, which presents api's
    // (valid, same CA) certificate and would even allow web in.
    let back = roundtrip(mesh.web_to_imposter, b"secret for db").unwrap_or_default();
    assert!(back.is_empty(), "got {back:?} back from the wrong server");
    mesh.web.wait_until("web logs the refused handshake", |p| {
        let log = p.log();
        log.contains("upstream TLS handshake failed") && log.contains("svc/api")
    });
    // web refused during the handshake, so api's proxy never authorized anything and its
    // application saw nothing.
    assert_eq!(mesh.api_app.seen(), (0, 0), "api's app was reached");
}
