//! Peers that must be refused by db's public port before the application sees anything, even
//! with an allow intention web → db: no client certificate (`openssl s_client`), a certificate
//! from a foreign CA, an expired leaf from the mesh's own root, leaves for another trust domain
//! (from the mesh's root and from a foreign one). A valid leaf through the same `s_client`
//! path is echoed, so the refusals are not an artefact of the client.
//!
//! And on the client side: web's proxy refuses an "instance of db" that presents a valid mesh
//! certificate of another service.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, StoredRoot, generate_csr};
use mesh_control::spiffe::SpiffeId;
use mesh_tests::inproc::TestCluster;
use mesh_tests::process::{eventually, free_port};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::json;
use time::OffsetDateTime;

use super::harness::{Echo, Proxy, meshd_dev, ok, register, roundtrip, set_intention, wait_ca};

/// `openssl s_client` to `127.0.0.1:port`, optionally with a client certificate; sends
/// "hello" and returns what came back before the server closed (or 8 s passed).
fn s_client(port: u16, cert: Option<(&Path, &Path)>) -> String {
    let mut cmd = Command::new("/usr/bin/openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
    ]);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"hello\n");
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let _ = eventually("s_client done", Duration::from_secs(8), || {
        let exited = child.try_wait().ok().flatten().is_some();
        (exited || out.lock().unwrap().contains("hello")).then_some(())
    });
    mesh_tests::process::kill_and_reap(&mut child);
    drop(stdin);
    out.lock().unwrap().clone()
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// Writes a client certificate and its key as `dir/<stem>.pem` and `dir/<stem>.key`.
fn write_pair(dir: &Path, stem: &str, (cert, key): (&str, &str)) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("{stem}.pem"), cert),
        write(dir, &format!("{stem}.key"), key),
    )
}

/// A one-hour leaf for `id` (service "web" of `trust_domain`) signed by `root` with the
/// built-in provider as of `issued`: (cert PEM, key PEM).
fn builtin_leaf(
    root: &StoredRoot,
    id: &SpiffeId,
    trust_domain: &str,
    issued: OffsetDateTime,
) -> (String, String) {
    let (csr, key) = generate_csr(id).unwrap();
    let leaf = BuiltinProvider
        .sign_leaf(
            root,
            &LeafRequest {
                csr_pem: &csr,
                trust_domain,
                datacenter: "dc1",
                service: "web",
                ttl: Duration::from_secs(3600),
            },
            issued,
        )
        .expect("sign a leaf");
    (leaf.cert_pem, key)
}

/// A self-signed CA (distinct subject) and a leaf it signs for `uri`: (cert PEM, key PEM).
fn foreign_leaf(uri: &str) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Foreign Test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca, ca_key);
    leaf_signed_by(uri, &issuer)
}

fn leaf_signed_by(uri: &str, issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::hours(1);
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_refused_before_the_app() {
    // In-process control plane: the test needs the CA's root key to forge leaves.
    let cluster = TestCluster::start(1).await.expect("cluster");
    let server = cluster.server(0).clone();
    let http = cluster.handle(0).http_addr;
    let dir = tempfile::tempdir().unwrap();

    let (db, echo, db_public) = tokio::task::block_in_place(|| {
        wait_ca(http);
        let echo = Echo::start();
        let db_public = free_port();
        register(http, "db", echo.port(), db_public, &[]);
        let db = Proxy::start(http, "db", &[]);
        set_intention(http, "web", "db", "allow");
        (db, echo, db_public)
    });
    let (td, root) = server
        .state
        .read(|s| (s.ca.trust_domain.clone(), s.ca.active().cloned()));
    let root = root.expect("active root");
    let web_id = SpiffeId::service(&td, "dc1", "web");

    let check = |what: &str, cert: Option<(&Path, &Path)>, expect: &str| {
        let before = db.metrics();
        let out = tokio::task::block_in_place(|| s_client(db_public, cert));
        assert!(!out.contains("hello"), "{what}: echoed {out:?}");
        assert_eq!(echo.seen(), (0, 0), "{what}: the app saw something");
        tokio::task::block_in_place(|| {
            eventually(
                &format!("{what}: db counts {expect}"),
                Duration::from_secs(5),
                || (db.metrics() != before && db.metrics().contains(expect)).then_some(()),
            )
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", db.metrics()));
    };

    // 1. No client certificate at all.
    check(
        "no client certificate",
        None,
        "kind=\"no_client_certificate\"",
    );

    // 2. A certificate for web's exact identity, from a CA the mesh does not trust.
    let (c, k) = foreign_leaf(&web_id.uri());
    let (c, k) = write_pair(dir.path(), "f", (&c, &k));
    check("foreign CA", Some((&c, &k)), "kind=\"unknown_issuer\"");

    // 3. A leaf from the mesh's own root that expired two hours ago.
    let three_hours_ago = OffsetDateTime::now_utc() - time::Duration::hours(3);
    let (c, k) = builtin_leaf(&root, &web_id, &td, three_hours_ago);
    let (c, k) = write_pair(dir.path(), "e", (&c, &k));
    check("expired leaf", Some((&c, &k)), "kind=\"expired\"");

    // 4. Another trust domain, signed by the mesh's own root: the chain verifies, the identity
    //    is not of this mesh.
    let issuer = Issuer::from_ca_cert_pem(
        &root.root.root_cert,
        KeyPair::from_pem(&root.private_key_pem).unwrap(),
    )
    .unwrap();
    let other = SpiffeId::service("other.consul", "dc1", "web");
    let (c, k) = leaf_signed_by(&other.uri(), &issuer);
    let (c, k) = write_pair(dir.path(), "o", (&c, &k));
    check(
        "other trust domain, our root",
        Some((&c, &k)),
        "reason=\"foreign_trust_domain\"",
    );
    assert!(
        db.log()
            .contains("peer is in trust domain \"other.consul\""),
        "{}",
        db.log()
    );

    // 5. Another trust domain with its own (built-in provider) root.
    let other_root = BuiltinProvider
        .generate_root("other.consul", 7, OffsetDateTime::now_utc())
        .unwrap();
    let (c, k) = builtin_leaf(
        &other_root,
        &other,
        "other.consul",
        OffsetDateTime::now_utc(),
    );
    let (c, k) = write_pair(dir.path(), "t", (&c, &k));
    check(
        "other trust domain, other root",
        Some((&c, &k)),
        "kind=\"unknown_issuer\"",
    );

    // Control: a valid leaf for web through the same client is echoed.
    let (csr, key) = generate_csr(&web_id).unwrap();
    let valid = server.sign_csr("web", "dc1", &csr).expect("sign");
    let (c, k) = write_pair(dir.path(), "v", (&valid.cert_pem, &key));
    let out = tokio::task::block_in_place(|| s_client(db_public, Some((&c, &k))));
    assert!(
        out.contains("hello"),
        "valid leaf not echoed: {out:?}\n{}",
        db.log()
    );
    assert_eq!(echo.seen().0, 1);

    drop(db);
    cluster.shutdown().await;
}

#[test]
fn web_refuses_an_upstream_presenting_another_services_certificate() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    // "api" is a real service with a real proxy: its certificate is a valid mesh certificate.
    let api_app = Echo::start();
    let api_public = free_port();
    register(http, "api", api_app.port(), api_public, &[]);
    let api = Proxy::start(http, "api", &[]);
    // web's upstream "db" resolves to an instance that is really api's proxy.
    ok(
        "PUT",
        http,
        "/v1/agent/service/register",
        Some(&json!({
            "Kind": "connect-proxy", "ID": "db-impostor", "Name": "db-sidecar-proxy",
            "Port": api_public,
            "Proxy": {"DestinationServiceName": "db", "DestinationServiceID": "db"},
            "Check": {"TCP": format!("127.0.0.1:{api_public}"), "Interval": "1s"}
        })),
    );
    let up = free_port();
    register(http, "web", free_port(), free_port(), &[("db", up)]);
    let web = Proxy::start(http, "web", &[]);
    // Every intention that could let it through is there: only the identity check can stop it.
    set_intention(http, "web", "db", "allow");
    set_intention(http, "web", "api", "allow");
    eventually(
        "web sees the impostor as db",
        Duration::from_secs(30),
        || {
            let c = web.config();
            let ports: Vec<u64> = c["Upstreams"][0]["Instances"]
                .as_array()?
                .iter()
                .filter_map(|i| i["port"].as_u64())
                .collect();
            (ports == [u64::from(api_public)]).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", web.config()));

    let upstream = format!("127.0.0.1:{up}").parse().unwrap();
    for _ in 0..3 {
        let back = roundtrip(upstream, b"secret for db").unwrap_or_default();
        assert!(back.is_empty(), "impostor answered: {back:?}");
    }
    assert_eq!(api_app.seen(), (0, 0), "the impostor's app saw something");
    let log = web.log();
    assert!(
        log.lines()
            .any(|l| l.contains("upstream TLS handshake failed")
                && l.contains("kind=\"wrong_identity\"")
                && l.contains("/svc/api")),
        "{log}"
    );
    assert!(
        web.metric(
            "meshproxy_tls_handshake_failures_total",
            &["wrong_identity"]
        ) >= 3.0
    );
    drop(api);
}
