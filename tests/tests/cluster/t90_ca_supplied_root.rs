//! CA commands originate only inside the leader (issue 13 point 4). A root supplied through
//! `PUT /v1/connect/ca/configuration` (`RootCert`/`PrivateKey`, Consul's built-in provider
//! fields) must be a CA certificate whose key matches; the leader cross-signs it with the
//! current root before it becomes active, so leaves under it still verify for holders of the
//! old root. A crafted `Cluster.Write` carrying a CA command, even with the servers' secret, is
//! refused. Certificates are made with the `openssl` CLI and sent with `curl`; chains are
//! checked with `openssl verify`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_control::ca::{BuiltinProvider, CaProvider};
use mesh_control::fsm::Command as FsmCommand;
use mesh_control::proto::CommandRequest;
use mesh_control::proto::cluster_client::ClusterClient;
use mesh_tests::openssl::openssl_verify;
use mesh_tests::process::{Meshd, eventually, free_port, http, server_args};

use super::wait_active_root;

/// Runs `openssl <args>` in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl binary must be installed for these tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl -X PUT` of a CA configuration supplying `cert`/`key` (files in `dir`, `None` to leave
/// the field out); the status and body.
fn put_root(
    addr: std::net::SocketAddr,
    dir: &Path,
    cert: Option<&str>,
    key: Option<&str>,
) -> (u16, String) {
    let mut config = serde_json::Map::new();
    for (field, file) in [("RootCert", cert), ("PrivateKey", key)] {
        if let Some(f) = file {
            let pem = std::fs::read_to_string(dir.join(f)).unwrap();
            config.insert(field.to_string(), pem.into());
        }
    }
    let body = serde_json::json!({ "Provider": "consul", "Config": config }).to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "PUT",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://{addr}/v1/connect/ca/configuration"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("piped").write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("the curl binary must be installed for these tests");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl -w status line");
    (code.trim().parse().expect("status code"), body.to_string())
}

fn roots(addr: std::net::SocketAddr) -> serde_json::Value {
    http("GET", addr, "/v1/connect/ca/roots", None)
        .unwrap()
        .json()
        .unwrap()
}

fn active(list: &serde_json::Value) -> serde_json::Value {
    list["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Active"].as_bool() == Some(true))
        .cloned()
        .expect("an active root")
}

/// The server (a one-server cluster, sealing with an encryption key) and its data directory.
fn start(dir: &Path) -> Meshd {
    let key = dir.join("key");
    let out = Command::new(mesh_tests::process::bin("meshctl"))
        .args(["keygen", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut args = server_args("s1", &dir.join("s1"), free_port(), free_port(), 1, &[]);
    args.extend(["--encrypt-key-file".to_string(), key.display().to_string()]);
    let s1 = Meshd::spawn("s1", &args).unwrap();
    wait_active_root(s1.http_addr).unwrap();
    s1
}

#[test]
fn a_supplied_root_is_checked_and_cross_signed_before_it_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s1 = start(d);
    let ec = [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
    ];
    for key in ["op.key", "other.key"] {
        openssl(d, &[&ec[..], &[key]].concat());
    }
    let req = [
        "req", "-x509", "-new", "-key", "op.key", "-days", "30", "-out",
    ];
    openssl(
        d,
        &[&req[..], &["op.pem", "-subj", "/CN=Operator Root"]].concat(),
    );
    openssl(
        d,
        &[
            &req[..],
            &[
                "notca.pem",
                "-subj",
                "/CN=Not A CA",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ],
        ]
        .concat(),
    );
    let before = roots(s1.http_addr);
    let old = active(&before);

    let refusals = [
        (
            Some("notca.pem"),
            Some("op.key"),
            "RootCert is not a CA certificate",
        ),
        (
            Some("op.pem"),
            Some("other.key"),
            "PrivateKey does not match RootCert's public key",
        ),
        (
            Some("op.pem"),
            None,
            "RootCert and PrivateKey must be given together",
        ),
    ];
    for (cert, key, expected) in refusals {
        let (status, body) = put_root(s1.http_addr, d, cert, key);
        assert_eq!(status, 400, "{cert:?}/{key:?}: {body}");
        assert!(body.contains(expected), "{body}");
        assert!(!body.contains("PRIVATE KEY"), "{body}");
    }
    assert_eq!(
        roots(s1.http_addr)["ActiveRootID"],
        before["ActiveRootID"],
        "nothing changed"
    );

    let (status, body) = put_root(s1.http_addr, d, Some("op.pem"), Some("op.key"));
    assert_eq!(status, 200, "{body}");
    let after = roots(s1.http_addr);
    let new = active(&after);
    let supplied = std::fs::read_to_string(d.join("op.pem")).unwrap();
    assert_eq!(new["RootCert"].as_str().unwrap().trim(), supplied.trim());
    assert_eq!(
        after["Roots"].as_array().unwrap().len(),
        2,
        "the old root stays trusted"
    );
    let cross = new["IntermediateCerts"][0]
        .as_str()
        .expect("a cross-signed intermediate");
    std::fs::write(d.join("old.pem"), old["RootCert"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("cross.pem"), cross).unwrap();
    // The key is in neither the configuration nor, in clear, the store.
    let config = http("GET", s1.http_addr, "/v1/connect/ca/configuration", None).unwrap();
    assert!(
        !config.body.contains("PRIVATE KEY") && !config.body.contains("PrivateKey"),
        "{}",
        config.body
    );

    // A leaf signed by the supplied root verifies for a holder of the old root only, through
    // the cross-signed certificate.
    let new_id = new["ID"].as_str().unwrap().to_string();
    let leaf = eventually(
        "a leaf from the supplied root",
        Duration::from_secs(30),
        || {
            let r = http("GET", s1.http_addr, "/v1/agent/connect/ca/leaf/web", None).ok()?;
            let v = r.json().ok()?;
            (v["RootID"].as_str()? == new_id).then(|| v["CertPEM"].as_str().map(str::to_string))?
        },
    )
    .unwrap();
    std::fs::write(d.join("leaf.pem"), leaf).unwrap();
    let p = |f: &str| d.join(f).display().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        openssl_verify(&["-CAfile", &p("old.pem"), &p("cross.pem")])
            .await
            .unwrap();
        openssl_verify(&[
            "-CAfile",
            &p("old.pem"),
            "-untrusted",
            &p("cross.pem"),
            &p("leaf.pem"),
        ])
        .await
        .unwrap();
        openssl_verify(&["-CAfile", &p("op.pem"), &p("leaf.pem")])
            .await
            .unwrap();
        assert!(
            openssl_verify(&["-CAfile", &p("old.pem"), &p("leaf.pem")])
                .await
                .is_err()
        );
    });
    drop(s1);
    // The log and the snapshot (absent until one is taken).
    for file in ["raft.redb", "raft.snapshot"] {
        let store = std::fs::read(d.join("s1").join(file)).unwrap_or_default();
        assert!(
            !store.windows(11).any(|w| w == b"PRIVATE KEY"),
            "a CA key in clear in {file}"
        );
    }
}

/// The servers' secret as anyone who can read `raft.redb` finds it (the leader's
/// `SetServerSecret` entry): the strongest credential a remote caller could present.
fn server_secret(store: &Path) -> String {
    let bytes = std::fs::read(store).unwrap();
    let marker = b"\"Op\":\"SetServerSecret\",\"secret\":\"";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the secret's log entry");
    String::from_utf8(bytes[at + marker.len()..at + marker.len() + 64].to_vec()).unwrap()
}

#[test]
fn a_forwarded_write_with_a_ca_command_is_refused_even_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = start(dir.path());
    let secret = server_secret(&dir.path().join("s1").join("raft.redb"));
    let before = roots(s1.http_addr);
    let td = before["TrustDomain"].as_str().unwrap();

    let rogue = BuiltinProvider
        .generate_root(td, 99, time::OffsetDateTime::now_utc())
        .unwrap();
    let crafted = [
        FsmCommand::CaRotate {
            expected_active: before["ActiveRootID"].as_str().unwrap().to_string(),
            new_root: Box::new(rogue.clone()),
            cross_signed_pem: String::new(),
            config: None,
            now_unix: 0,
        },
        FsmCommand::CaPruneRoots { now_unix: i64::MAX },
    ];
    let harmless = FsmCommand::CaSetConfig {
        config: mesh_control::model::CaConfig {
            provider: "consul".into(),
            config: [("LeafCertTTL".to_string(), "24h".into())].into(),
            create_index: 0,
            modify_index: 0,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = ClusterClient::connect(format!("http://{}", s1.rpc_addr))
            .await
            .unwrap();
        let write = |cmd: &FsmCommand| {
            let mut req = tonic::Request::new(CommandRequest {
                json: serde_json::to_vec(cmd).unwrap(),
                hops: 0,
            });
            req.metadata_mut()
                .insert("x-mesh-server-secret", secret.parse().unwrap());
            req
        };
        for cmd in &crafted {
            let e = client.write(write(cmd)).await.unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{}: {e:?}",
                cmd.op()
            );
            assert!(
                e.message().contains("built by the leader only"),
                "{}",
                e.message()
            );
        }
        // The same secret passes with a command a follower may forward: the refusal was the
        // command's, not the credential's.
        client.write(write(&harmless)).await.unwrap();
    });
    let after = roots(s1.http_addr);
    assert_eq!(after["ActiveRootID"], before["ActiveRootID"]);
    assert!(!after.to_string().contains(&rogue.root.id));
}
