//! Start-up refusals: one clear line on stderr and a non-zero exit, before anything binds.

use std::path::Path;

use serde_json::json;

use crate::support::{Ca, Files, WAIT, config, loopback, spawn, wait_exit, write_atomic};

/// Runs `meshproxy run --config <config>`; returns the non-empty stderr lines.
fn refused(config: &Path) -> Vec<String> {
    let log = config.with_extension("log");
    let mut child = spawn(config, &log);
    let status = wait_exit(&mut child, WAIT);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "meshproxy started: {err}");
    err.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Asserts that the start with `config` is refused with exactly one line naming every one of
/// `names`.
fn one_line_refusal(config: &Path, names: &[&str]) {
    let lines = refused(config);
    assert_eq!(lines.len(), 1, "{lines:?}");
    for name in names {
        assert!(lines[0].contains(name), "no {name:?} in {}", lines[0]);
    }
}

fn service(tmp: &Path, ca: &Ca) -> Files {
    let f = Files::new(tmp, "db");
    f.write_leaf(&ca.leaf("db"));
    f.write_bundle(&[ca]);
    f.write_config(&config(loopback(), loopback(), loopback(), &[], json!([])));
    f
}

#[test]
fn key_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = service(tmp.path(), &Ca::new(1));
    let key = std::fs::read(f.key()).unwrap();
    write_atomic(&f.key(), &key, 0o644);
    let key = f.key().display().to_string();
    one_line_refusal(&f.config(), &["key", "0644", "0600", &key]);
}

#[test]
fn malformed_config_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = service(tmp.path(), &Ca::new(1));
    write_atomic(&f.config(), b"{\"cert\": \"cert.pem\",", 0o644);
    one_line_refusal(&f.config(), &["is not valid", "line"]);

    // A well-formed file with a bad field names the field.
    let mut c = config(loopback(), loopback(), loopback(), &[], json!([]));
    c["inbound"]["listen"] = "localhost:80:80".into();
    f.write_config(&c);
    one_line_refusal(&f.config(), &["inbound.listen"]);
}

#[test]
fn missing_file_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = service(tmp.path(), &Ca::new(1));
    std::fs::remove_file(f.dir.join("bundle.pem")).unwrap();
    one_line_refusal(&f.config(), &["trust_bundle: cannot read", "bundle.pem"]);

    // And a key that belongs to another certificate.
    let other = Ca::new(1).leaf("db");
    f.write_bundle(&[&Ca::new(2)]);
    write_atomic(&f.key(), other.1.as_bytes(), 0o600);
    one_line_refusal(&f.config(), &["key", "does not match"]);
}

#[test]
fn duplicate_inbound_listener_names_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = service(tmp.path(), &Ca::new(1));
    let mut c = config(loopback(), loopback(), loopback(), &[], json!([]));
    c["inbound"] = json!([
        {"name": "http", "listen": loopback().to_string(), "local_app": loopback().to_string()},
        {"name": "http", "listen": loopback().to_string(), "local_app": loopback().to_string()},
    ]);
    f.write_config(&c);
    let path = f.config().display().to_string();
    one_line_refusal(
        &f.config(),
        &[&path, "inbound[1].name", "\"http\" is given more than once"],
    );
}
