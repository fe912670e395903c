//! Live reload: new leaves and a new CA are picked up for new connections while an established
//! connection keeps running; a broken file keeps the old material; an `allowed_sources` change
//! re-checks live connections.

use crate::harness::roundtrip;
use crate::support::{Ca, Conn, Mesh, id};

fn new_connection_works(mesh: &Mesh, what: &str) {
    let back = roundtrip(mesh.web_to_db, what.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: {e}\n--- db log ---\n{}", mesh.db.log()));
    assert_eq!(
        back,
        what.as_bytes(),
        "{what}\n--- web log ---\n{}",
        mesh.web.log()
    );
}

#[test]
fn rotated_leaf_and_new_ca_apply_to_new_connections_only() {
    let mesh = Mesh::start();
    let mut live = Conn::open(mesh.web_to_db);
    live.ping().expect("established connection");

    // 1. A new leaf for db from the same CA.
    let before = mesh.db.serial();
    mesh.db_files.write_leaf(&mesh.ca.leaf("db"));
    mesh.db.wait_until("db serves its new leaf", |p| {
        let s = p.serial();
        !s.is_empty() && s != before
    });
    new_connection_works(&mesh, "after the new leaf");
    live.ping()
        .expect("established connection after the new leaf");

    // 2. A second CA: first trusted by both sides, then db and web get leaves from it.
    let ca2 = Ca::new(2);
    mesh.db_files.write_bundle(&[&mesh.ca, &ca2]);
    mesh.web_files.write_bundle(&[&mesh.ca, &ca2]);
    mesh.db
        .wait_until("db trusts both CAs", |p| p.root_count() == 2);
    mesh.web
        .wait_until("web trusts both CAs", |p| p.root_count() == 2);
    let before = mesh.db.serial();
    mesh.db_files.write_leaf(&ca2.leaf("db"));
    mesh.db
        .wait_until("db serves a leaf of the new CA", |p| p.serial() != before);
    new_connection_works(&mesh, "db on the new CA");
    let before = mesh.web.serial();
    mesh.web_files.write_leaf(&ca2.leaf("web"));
    mesh.web
        .wait_until("web serves a leaf of the new CA", |p| p.serial() != before);
    new_connection_works(&mesh, "both on the new CA");
    live.ping()
        .expect("established connection after the CA change");

    // 3. A broken certificate: one log line, the old material stays.
    let serial = mesh.db.serial();
    std::fs::write(mesh.db_files.dir.join("cert.pem"), "not a certificate").unwrap();
    mesh.db.wait_until("db logs the failed reload", |p| {
        p.log()
            .contains("reload failed; keeping the previous configuration")
    });
    assert_eq!(mesh.db.serial(), serial);
    new_connection_works(&mesh, "after a failed reload");
    live.ping()
        .expect("established connection after a failed reload");
    live.close();
}

#[test]
fn allowed_sources_change_rechecks_live_connections() {
    let mesh = Mesh::start();
    let mut live = Conn::open(mesh.web_to_db);
    live.ping().expect("established connection");

    let mut config = mesh.db_config.clone();
    config["allowed_sources"] = serde_json::json!([]);
    mesh.db_files.write_config(&config);
    mesh.db
        .wait_until("db closes web's live connection", |_| live.is_closed());
    let before = mesh.db_app.seen();
    let back = roundtrip(mesh.web_to_db, b"denied now").unwrap_or_default();
    assert!(back.is_empty(), "got {back:?}");
    assert_eq!(
        mesh.db_app.seen(),
        before,
        "db's app saw a denied connection"
    );

    // The trust domain's wildcard lets web (and every other dc1 service) in again.
    config["allowed_sources"] = serde_json::json!([id("web").replace("svc/web", "svc/*")]);
    mesh.db_files.write_config(&config);
    mesh.db.wait_until("db allows dc1 again", |p| {
        p.config()["Intentions"]["AllowedSources"][0]
            .as_str()
            .is_some_and(|s| s.ends_with("/svc/*"))
    });
    new_connection_works(&mesh, "allowed by the wildcard");
}
