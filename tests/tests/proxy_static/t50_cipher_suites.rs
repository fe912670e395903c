//! The TLS 1.3 cipher suites an operator chooses (`tls.cipher_suites`; issue 16): the proxy
//! accepts exactly those, seen with `openssl s_client` (a third-party client) offering other
//! suites; a list it cannot use stops it at start with the reason.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::harness::Echo;
use super::support::{Ca, Files, StaticProxy, any_port, config, id, spawn, wait_exit};

/// `openssl s_client` with web's certificate to `proxy`, offering `suites` (TLS 1.3 only):
/// the suite negotiated, or `None` when the handshake failed.
fn negotiated(proxy: &StaticProxy, web: &Files, suites: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["10", "/usr/bin/openssl", "s_client", "-brief", "-tls1_3"])
        .args([
            "-ciphersuites",
            suites,
            "-connect",
            &proxy.public.to_string(),
        ])
        .arg("-cert")
        .arg(web.dir.join("cert.pem"))
        .arg("-key")
        .arg(web.key())
        .arg("-CAfile")
        .arg(web.dir.join("bundle.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Ciphersuite: "))
        .map(|s| s.trim().to_string())
}

#[test]
fn the_chosen_suites_are_the_only_ones_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(1);
    let app = Echo::start();
    let files = |svc: &str| {
        let f = Files::new(tmp.path(), svc);
        f.write_leaf(&ca.leaf(svc));
        f.write_bundle(&[&ca]);
        f
    };
    let (db_files, web_files, api_files) = (files("db"), files("web"), files("api"));
    let mut db_config = config(any_port(), app.addr, any_port(), &[id("web")], json!([]));
    db_config["tls"] = json!({"cipher_suites": ["TLS_AES_128_GCM_SHA256"]});
    db_files.write_config(&db_config);
    let db = StaticProxy::start("db", &db_files);
    api_files.write_config(&config(
        any_port(),
        app.addr,
        any_port(),
        &[id("web")],
        json!([]),
    ));
    let api = StaticProxy::start("api", &api_files);

    // db accepts AES-128 only: a client offering only AES-256 gets no handshake, one offering
    // AES-256 first then AES-128 gets AES-128.
    assert_eq!(negotiated(&db, &web_files, "TLS_AES_256_GCM_SHA384"), None);
    assert_eq!(
        negotiated(
            &db,
            &web_files,
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
        )
        .as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );
    // The defaults (api): both accepted.
    assert_eq!(
        negotiated(&api, &web_files, "TLS_AES_256_GCM_SHA384").as_deref(),
        Some("TLS_AES_256_GCM_SHA384")
    );
    assert_eq!(
        db.config()["Flags"]["tls"]["cipher_suites"],
        json!(["TLS_AES_128_GCM_SHA256"]),
        "/config shows the choice"
    );

    // A suite it cannot use: refused at start, naming the key and what is supported.
    let bad = Files::new(tmp.path(), "bad");
    bad.write_leaf(&ca.leaf("bad"));
    bad.write_bundle(&[&ca]);
    let mut c = config(any_port(), app.addr, any_port(), &[], json!([]));
    c["tls"] = json!({"cipher_suites": ["TLS_RSA_WITH_AES_128_CBC_SHA"]});
    bad.write_config(&c);
    let log = bad.dir.join("proxy.log");
    let mut child = spawn(&bad.config(), &log);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tls.cipher_suites")
            && stderr.contains("TLS_RSA_WITH_AES_128_CBC_SHA")
            && stderr.contains("supported: TLS_AES_128_GCM_SHA256"),
        "{stderr}"
    );
}
