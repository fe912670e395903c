//! Several inbound listeners in one static-mode process (issue 16): one identity, two public
//! ports (`iperf` and `http`), each mapped to its own application, both behind the same trust
//! bundle and `allowed_sources`. web's proxy reaches each application through its own listener;
//! api (same CA, not allowed) and `openssl s_client` without a client certificate are refused
//! on both; a reload moves one listener's application live and reports a changed listener set
//! instead of applying it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Echo, roundtrip};
use crate::support::{Ca, Files, StaticProxy, any_port, config, id, loopback};

/// db's proxy with two inbound listeners, and two client proxies with an upstream to each:
/// web (allowed) and api (a valid leaf of the same CA, not allowed).
struct TwoPorts {
    iperf_app: Echo,
    http_app: Echo,
    db_files: Files,
    db_config: Value,
    db: StaticProxy,
    web: StaticProxy,
    api: StaticProxy,
    _tmp: tempfile::TempDir,
}

/// `inbound` as a list of `(name, listen, local_app)`.
fn listeners(list: &[(&str, SocketAddr, SocketAddr)]) -> Value {
    list.iter()
        .map(|(n, l, a)| json!({"name": n, "listen": l.to_string(), "local_app": a.to_string()}))
        .collect()
}

impl TwoPorts {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::new(1);
        let (iperf_app, http_app) = (Echo::start(), Echo::start());
        let files = |svc: &str| {
            let f = Files::new(tmp.path(), svc);
            f.write_leaf(&ca.leaf(svc));
            f.write_bundle(&[&ca]);
            f
        };
        let db_files = files("db");
        let mut db_config = config(any_port(), loopback(), any_port(), &[id("web")], json!([]));
        db_config["inbound"] = listeners(&[
            ("iperf", any_port(), iperf_app.addr),
            ("http", any_port(), http_app.addr),
        ]);
        db_files.write_config(&db_config);
        let db = StaticProxy::start("db", &db_files);
        let client = |svc: &str| {
            let f = files(svc);
            let ups: Vec<Value> = db
                .inbound
                .iter()
                .map(|(name, addr)| {
                    json!({"name": name, "listen": any_port().to_string(),
                           "addresses": [addr.to_string()], "spiffe_id": id("db")})
                })
                .collect();
            f.write_config(&config(any_port(), loopback(), any_port(), &[], ups.into()));
            StaticProxy::start(svc, &f)
        };
        let (web, api) = (client("web"), client("api"));
        Self {
            iperf_app,
            http_app,
            db_files,
            db_config,
            db,
            web,
            api,
            _tmp: tmp,
        }
    }

    /// What each application has seen: (iperf's, http's) connections.
    fn seen(&self) -> (usize, usize) {
        (self.iperf_app.seen().0, self.http_app.seen().0)
    }
}

#[test]
fn each_listener_reaches_its_own_app_and_refuses_who_the_sources_refuse() {
    let m = TwoPorts::start();
    // The ready line names both; `public=` stays the first.
    let names: Vec<_> = m.db.inbound.keys().map(String::as_str).collect();
    assert_eq!(names, ["http", "iperf"]);
    assert_eq!(m.db.public, m.db.inbound["iperf"]);
    assert_ne!(m.db.inbound["iperf"], m.db.inbound["http"]);

    // web reaches each application through its own listener, and only that one.
    assert_eq!(
        roundtrip(m.web.upstream("iperf"), b"bulk").unwrap(),
        b"bulk"
    );
    assert_eq!(m.seen(), (1, 0));
    assert_eq!(
        roundtrip(m.web.upstream("http"), b"GET /").unwrap(),
        b"GET /"
    );
    assert_eq!(m.seen(), (1, 1));

    // api holds a valid leaf of the same CA but is not in allowed_sources: refused on both,
    // before either application sees a connection.
    for up in ["iperf", "http"] {
        let back = roundtrip(m.api.upstream(up), b"let me in").unwrap_or_default();
        assert!(back.is_empty(), "api got {back:?} back through {up}");
    }
    m.db.wait_until("db logs both denials", |p| {
        p.log()
            .lines()
            .filter(|l| l.contains("inbound connection denied") && l.contains("svc/api"))
            .count()
            == 2
    });
    assert_eq!(m.seen(), (1, 1), "an application saw a denied connection");

    // `/config` lists both listeners with their applications.
    let c = m.db.config();
    let listed: Vec<(String, String, u64)> = c["InboundListeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no InboundListeners: {c}"))
        .iter()
        .map(|l| {
            (
                l["Name"].as_str().unwrap_or_default().to_string(),
                l["Address"].as_str().unwrap_or_default().to_string(),
                l["LocalApp"]["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "iperf".to_string(),
                m.db.inbound["iperf"].to_string(),
                u64::from(m.iperf_app.port())
            ),
            (
                "http".to_string(),
                m.db.inbound["http"].to_string(),
                u64::from(m.http_app.port())
            ),
        ]
    );
    assert_eq!(c["PublicListener"], m.db.inbound["iperf"].to_string());
}

/// `openssl s_client` (no client certificate, the mesh's CA trusted) to `addr`, sending a line:
/// everything it printed.
fn s_client_without_certificate(addr: SocketAddr, bundle: &Path) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "/usr/bin/openssl", "s_client", "-quiet", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(b"hello without a certificate\n");
    drop(stdin);
    let out = child.wait_with_output().expect("s_client output");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_client_without_a_certificate_is_refused_on_both_listeners() {
    let m = TwoPorts::start();
    let bundle = m.db_files.dir.join("bundle.pem");
    for name in ["iperf", "http"] {
        let said = s_client_without_certificate(m.db.inbound[name], &bundle);
        assert!(
            said.contains("certificate required"),
            "{name}: s_client was not refused for want of a certificate: {said}"
        );
        assert!(!said.contains("hello without"), "{name}: echoed: {said}");
    }
    assert_eq!(m.seen(), (0, 0), "an application was reached");
    // Both listeners count into the proxy's one set of inbound metrics.
    m.db.wait_until("db counts both refused handshakes", |p| {
        let metrics = mesh_tests::process::http("GET", p.admin, "/metrics", None)
            .map(|r| r.body)
            .unwrap_or_default();
        let failed: f64 = metrics
            .lines()
            .filter(|l| l.contains("tls_handshake_failures_total{direction=\"inbound\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        failed == 2.0
    });
}

#[test]
fn a_reload_moves_one_listeners_app_live_and_reports_a_new_listener() {
    let m = TwoPorts::start();
    let mut c = m.db_config.clone();
    let added = loopback();
    c["inbound"] = listeners(&[
        ("iperf", m.db.inbound["iperf"], m.iperf_app.addr),
        ("http", m.db.inbound["http"], m.iperf_app.addr),
        ("grpc", added, m.http_app.addr),
    ]);
    m.db_files.write_config(&c);
    m.db.wait_until("db reports the listener change", |p| {
        p.log()
            .contains("inbound listeners (names or addresses), upstream names or IDs")
    });
    // http's application is now iperf's (applied live, like today's `local_app`) ...
    m.db.wait_until("http's listener goes to the new application", |p| {
        p.config()["InboundListeners"][1]["LocalApp"]["port"].as_u64()
            == Some(u64::from(m.iperf_app.port()))
    });
    assert_eq!(
        roundtrip(m.web.upstream("http"), b"moved").unwrap(),
        b"moved"
    );
    assert_eq!(m.seen(), (1, 0));
    // ... and the new listener waits for a restart (as a changed `listen` always has).
    let refused = TcpStream::connect_timeout(&added, Duration::from_secs(2));
    assert!(refused.is_err(), "a listener was opened by a reload");
    assert_eq!(
        m.db.config()["InboundListeners"].as_array().map(Vec::len),
        Some(2)
    );
}
