//! Mutual TLS on the servers' RPC port (issue 13 points 2 and 3), with real `meshd` processes
//! and two third-party clients: `curl` speaking gRPC over HTTP/2 (a 5-byte empty message, the
//! status read from the `grpc-status` trailer) and `openssl s_client`.
//!
//! * A plaintext connection, a connection without a certificate and one with another CA's
//!   certificate are refused during the handshake, and the server logs why.
//! * A client certificate reaches the agents' API but not Raft or cluster membership; a server
//!   certificate reaches both. A server started with a client certificate, or another CA's,
//!   refuses to start.
//! * Three servers form a cluster over mTLS and replicate; a rogue server (plaintext, or with
//!   another CA) cannot join, and both sides log the reason.
//! * Auto-encrypt: an agent with only the CA file and a token gets its certificate and syncs
//!   its services; a token without `node:write` gets the server's refusal and the agent exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::grpc_curl::{GrpcCall, grpc_status};

use mesh_tests::process::{
    Meshd, eventually, free_port, http, meshd_refused, server_args, spawn_agent, stdout_ok,
};

use super::{meshctl, s_client, s_server};

/// The agent CA with three server certificates and a client certificate in `dir`, and
/// another CA with a server and a client certificate in `dir/other`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let other = dir.join("other");
        std::fs::create_dir(&other).unwrap();
        for d in [dir, other.as_path()] {
            stdout_ok(&meshctl(d, &["tls", "ca", "create"]), "meshctl tls ca");
            stdout_ok(
                &meshctl(d, &["tls", "cert", "create", "-client"]),
                "meshctl tls",
            );
        }
        for d in [dir, dir, dir, other.as_path()] {
            stdout_ok(
                &meshctl(d, &["tls", "cert", "create", "-server"]),
                "meshctl tls",
            );
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `--tls-*` flags presenting `cert` (e.g. `dc1-server-mesh-0`), trusting `ca_dir`'s CA.
    fn flags(&self, ca_dir: &str, cert: &str) -> Vec<String> {
        vec![
            "--tls-ca-file".into(),
            self.path(&format!("{ca_dir}mesh-agent-ca.pem")),
            "--tls-cert-file".into(),
            self.path(&format!("{cert}.pem")),
            "--tls-key-file".into(),
            self.path(&format!("{cert}-key.pem")),
        ]
    }

    /// A gRPC call to `path` on the server at `port` through curl over TLS, verifying the
    /// server as `server.dc1.mesh`, presenting `cert` if given; curl's verbose output.
    fn grpc(&self, port: u16, cert: Option<&str>, path: &str, token: Option<&str>) -> String {
        let ca = self.dir.join("mesh-agent-ca.pem");
        let files = cert.map(|c| {
            (
                self.dir.join(format!("{c}.pem")),
                self.dir.join(format!("{c}-key.pem")),
            )
        });
        GrpcCall {
            ca: &ca,
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            client: files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            path,
            token,
            message: &[],
        }
        .run(|| Command::new("curl"))
    }
}

/// An HTTP request carrying `token` (in `?token=`, one of Consul's three carriers).
fn http_as(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    body: Option<&str>,
    token: &str,
) -> anyhow::Result<mesh_tests::process::HttpResponse> {
    let sep = if path.contains('?') { '&' } else { '?' };
    http(method, addr, &format!("{path}{sep}token={token}"), body)
}

fn port(m: &Meshd) -> u16 {
    m.rpc_addr.port()
}

/// Waits until `log` contains every one of `needles`.
fn log_shows(log: &Path, needles: &[&str]) -> String {
    eventually(
        "the log to show the refusal",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            needles.iter().all(|n| text.contains(n)).then_some(text)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: wanted {needles:?} in {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Waits for a leader known to the server at `m`'s HTTP port.
fn wait_leader(m: &Meshd) {
    eventually("a leader", Duration::from_secs(30), || {
        http("GET", m.http_addr, "/v1/status/leader", None)
            .ok()
            .filter(|r| r.status == 200 && r.body.trim().len() > 2)
    })
    .expect("a leader is elected over mTLS");
}

fn server(pki: &Pki, name: &str, cert: &str, expect: usize, join: &[u16]) -> Vec<String> {
    let dir = pki.dir.join(format!("data-{name}"));
    let mut a = server_args(name, &dir, free_port(), free_port(), expect, join);
    a.extend(pki.flags("", cert));
    a
}

#[test]
fn the_rpc_port_admits_servers_and_agents_only_as_their_certificates_say() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let log = tmp.path().join("s1.log");
    let s1 = Meshd::spawn_logged("s1", &server(&pki, "s1", "dc1-server-mesh-0", 1, &[]), &log)
        .expect("a server with TLS starts");
    wait_leader(&s1);
    let p = port(&s1);

    // Plaintext gRPC: refused in the handshake, never answered.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--http2-prior-knowledge",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{p}/mesh.v1.Cluster/Hello"),
        ])
        .output()
        .unwrap();
    let plain_text = String::from_utf8_lossy(&plain.stderr).to_string();
    assert!(!plain.status.success(), "{plain_text}");
    assert!(grpc_status(&plain_text).is_none(), "{plain_text}");

    // No certificate, and another CA's: refused in the handshake.
    let anonymous = pki.grpc(p, None, "/mesh.v1.Catalog/ResolveToken", None);
    assert!(grpc_status(&anonymous).is_none(), "{anonymous}");
    let foreign = pki.grpc(
        p,
        Some("other/dc1-client-mesh-0"),
        "/mesh.v1.Catalog/ResolveToken",
        None,
    );
    assert!(grpc_status(&foreign).is_none(), "{foreign}");
    log_shows(
        &log,
        &[
            "refused an RPC connection",
            "TLS handshake failed",
            "peer sent no certificates",
            "UnknownIssuer",
        ],
    );
    // The same two refusals as OpenSSL sees them: the server's alert ends the handshake
    // (`-ign_eof` keeps s_client reading until the server closes).
    let connect = format!("127.0.0.1:{p}");
    let refused_by_server = |cert: Option<&str>| {
        let mut args = vec![
            "10",
            "openssl",
            "s_client",
            "-ign_eof",
            "-connect",
            &connect,
            "-CAfile",
            "mesh-agent-ca.pem",
        ];
        let (c, k);
        if let Some(cert) = cert {
            c = format!("{cert}.pem");
            k = format!("{cert}-key.pem");
            args.extend(["-cert", c.as_str(), "-key", k.as_str()]);
        }
        let out = Command::new("timeout")
            .args(&args)
            .current_dir(&pki.dir)
            .stdin(Stdio::null())
            .output()
            .expect("timeout and openssl run");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let none = refused_by_server(None);
    assert!(none.contains("alert certificate required"), "{none}");
    let other_ca = refused_by_server(Some("other/dc1-client-mesh-0"));
    assert!(other_ca.contains("alert unknown ca"), "{other_ca}");

    // The server's own certificate verifies as server.dc1.mesh (OpenSSL as the client), and
    // not as another datacenter's server.
    let client = Some(("dc1-client-mesh-0.pem", "dc1-client-mesh-0-key.pem"));
    let (done, ok) = s_client(&pki.dir, s1.rpc_addr, "server.dc1.mesh", client);
    assert!(done && ok.contains("Verification: OK"), "{ok}");
    let (done, wrong) = s_client(&pki.dir, s1.rpc_addr, "server.dc2.mesh", client);
    assert!(!done && !wrong.contains("Verification: OK"), "{wrong}");

    // A client certificate: the agents' API yes, Raft and membership no.
    for path in ["/mesh.v1.Cluster/Hello", "/mesh.v1.Raft/Vote"] {
        let out = pki.grpc(p, Some("dc1-client-mesh-0"), path, None);
        assert_eq!(grpc_status(&out), Some(7), "{path}: {out}");
        assert!(
            out.contains("requires%20a%20server%20certificate%20(server.dc1.mesh)"),
            "{out}"
        );
    }
    let catalog = pki.grpc(
        p,
        Some("dc1-client-mesh-0"),
        "/mesh.v1.Catalog/ResolveToken",
        None,
    );
    assert_eq!(grpc_status(&catalog), Some(0), "{catalog}");
    log_shows(&log, &["refused an RPC", "a client certificate"]);

    // A server certificate: membership too.
    let hello = pki.grpc(p, Some("dc1-server-mesh-1"), "/mesh.v1.Cluster/Hello", None);
    assert_eq!(grpc_status(&hello), Some(0), "{hello}");
    assert!(hello.contains("ALPN: server accepted h2"), "{hello}");

    // Without --auto-encrypt-allow-tls the signing method does not exist.
    let sign = pki.grpc(
        p,
        Some("dc1-client-mesh-0"),
        "/mesh.v1.AutoEncrypt/Sign",
        None,
    );
    assert_eq!(grpc_status(&sign), Some(12), "Unimplemented: {sign}");

    // A client certificate presented as a server (OpenSSL's s_server with it, from our CA):
    // a server joining through it refuses it (`verify_server_hostname`) and says why.
    let (_impostor, impostor) = s_server(
        &pki.dir,
        "dc1-client-mesh-0.pem",
        "dc1-client-mesh-0-key.pem",
    );
    let joiner_log = pki.dir.join("joiner.log");
    let mut joiner = server(&pki, "joiner", "dc1-server-mesh-2", 2, &[]);
    joiner.extend(["--join".to_string(), impostor.to_string()]);
    let _joiner = Meshd::spawn_logged("joiner", &joiner, &joiner_log).unwrap();
    log_shows(
        &joiner_log,
        &[
            "could not reach or join a server",
            "certificate not valid for name \"server.dc1.mesh\"",
        ],
    );

    // A server given a client certificate, or another CA's server certificate, does not start.
    let refused = meshd_refused(&server(&pki, "s2", "dc1-client-mesh-0", 1, &[]));
    assert!(
        refused.contains("does not verify as a server certificate"),
        "{refused}"
    );
    let refused = meshd_refused(&server(&pki, "s3", "other/dc1-server-mesh-0", 1, &[]));
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // Auto-encrypt is refused without ACLs (the token is what vouches for an agent) and
    // without TLS.
    let mut no_acl = server(&pki, "s5", "dc1-server-mesh-0", 1, &[]);
    no_acl.push("--auto-encrypt-allow-tls".into());
    let refused = meshd_refused(&no_acl);
    assert!(
        refused.contains("auto-encrypt (--auto-encrypt-allow-tls) needs ACLs"),
        "{refused}"
    );
    let mut no_tls = server_args(
        "s6",
        &pki.dir.join("data-s6"),
        free_port(),
        free_port(),
        1,
        &[],
    );
    no_tls.retain(|a| a != "--acl-disabled");
    no_tls.push("--auto-encrypt-allow-tls".into());
    let refused = meshd_refused(&no_tls);
    assert!(refused.contains("needs TLS on the RPC port"), "{refused}");
    // Nor one whose key file group or others can read; the message says how to fix it.
    let key = pki.dir.join("dc1-server-mesh-2-key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let refused = meshd_refused(&server(&pki, "s4", "dc1-server-mesh-2", 1, &[]));
    assert!(
        refused.contains("is readable by group or others (mode 644)")
            && refused.contains(&format!("chmod 600 {}", key.display())),
        "{refused}"
    );
}

#[test]
fn three_servers_replicate_over_mtls_and_rogues_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let rpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..3 {
        let name = format!("s{i}");
        let mut args = server_args(&name, &tmp.path().join(&name), rpc[i], free_port(), 3, &rpc);
        args.extend(pki.flags("", &format!("dc1-server-mesh-{i}")));
        let log = tmp.path().join(format!("{name}.log"));
        servers.push((Meshd::spawn_logged(&name, &args, &log).unwrap(), log));
    }
    for (s, _) in &servers {
        wait_leader(s);
    }
    // A write on one server is read on another: Raft runs over mTLS.
    let put = http(
        "PUT",
        servers[0].0.http_addr,
        "/v1/connect/intentions/exact?source=web&destination=db",
        Some(r#"{"Action":"allow"}"#),
    )
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    eventually("the intention on s2", Duration::from_secs(10), || {
        http(
            "GET",
            servers[2].0.http_addr,
            "/v1/connect/intentions/exact?source=web&destination=db",
            None,
        )
        .ok()
        .filter(|r| r.status == 200)
    })
    .expect("replicated over mTLS");

    // Rogue servers: one in plaintext, one with another CA. Neither joins; both sides say why.
    let rogue_plain_log = tmp.path().join("rogue-plain.log");
    let _rogue_plain = Meshd::spawn_logged(
        "rogue-plain",
        &server_args(
            "rogue-plain",
            &tmp.path().join("rp"),
            free_port(),
            free_port(),
            1,
            &rpc[..1],
        ),
        &rogue_plain_log,
    )
    .unwrap();
    let rogue_ca_log = tmp.path().join("rogue-ca.log");
    let mut args = server_args(
        "rogue-ca",
        &tmp.path().join("rc"),
        free_port(),
        free_port(),
        1,
        &rpc[..1],
    );
    args.extend(pki.flags("other/", "other/dc1-server-mesh-0"));
    let _rogue_ca = Meshd::spawn_logged("rogue-ca", &args, &rogue_ca_log).unwrap();

    log_shows(&rogue_plain_log, &["could not reach or join a server"]);
    log_shows(
        &rogue_ca_log,
        &["could not reach or join a server", "UnknownIssuer"],
    );
    // The plaintext rogue is refused by s0's handshake; the other-CA rogue refuses s0's
    // certificate itself (UnknownCA), before it would present its own.
    log_shows(
        &servers[0].1,
        &[
            "refused an RPC connection",
            "InvalidContentType",
            "received fatal alert: UnknownCA",
        ],
    );
    let peers = http("GET", servers[0].0.http_addr, "/v1/status/peers", None).unwrap();
    let peers: Vec<String> = serde_json::from_str(&peers.body).unwrap();
    assert_eq!(peers.len(), 3, "{peers:?}");
    for p in &peers {
        assert!(
            rpc.iter().any(|r| p.ends_with(&format!(":{r}"))),
            "{p} is a rogue"
        );
    }
}

#[test]
fn agents_get_their_certificate_through_auto_encrypt_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let mut args: Vec<String> = server(&pki, "s1", "dc1-server-mesh-0", 1, &[])
        .into_iter()
        .filter(|a| a != "--acl-disabled")
        .collect();
    args.push("--auto-encrypt-allow-tls".into());
    let s1_log = tmp.path().join("s1.log");
    let s1 = Meshd::spawn_logged_at(
        "s1",
        &args,
        &s1_log,
        "warn,openraft=off,mesh_control::server::auto_encrypt=info",
    )
    .unwrap();
    wait_leader(&s1);
    let root = eventually("the ACL bootstrap", Duration::from_secs(20), || {
        http("PUT", s1.http_addr, "/v1/acl/bootstrap", None)
            .ok()
            .filter(|r| r.status == 200)
    })
    .unwrap()
    .json()
    .unwrap()["SecretID"]
        .as_str()
        .unwrap()
        .to_string();
    let as_root = |method: &str, path: &str, body: &str| {
        let r = http_as(method, s1.http_addr, path, Some(body), &root).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json().unwrap()
    };
    as_root(
        "PUT",
        "/v1/acl/policy",
        r#"{"Name":"n1","Rules":"node \"n1\" { policy = \"write\" }\nservice \"web\" { policy = \"write\" }"}"#,
    );
    let token = as_root("PUT", "/v1/acl/token", r#"{"Policies":[{"Name":"n1"}]}"#)["SecretID"]
        .as_str()
        .unwrap()
        .to_string();
    // Agent certificates live as long as leaves: 6 s here, so the agent renews within the test.
    as_root(
        "PUT",
        "/v1/connect/ca/configuration",
        r#"{"Provider":"consul","Config":{"LeafCertTTL":"6s"}}"#,
    );
    let p = port(&s1);

    // Without a certificate only the signing method answers; the agents' API does not.
    let catalog = pki.grpc(p, None, "/mesh.v1.Catalog/ResolveToken", None);
    assert_eq!(grpc_status(&catalog), Some(7), "{catalog}");
    assert!(
        catalog.contains("requires%20a%20certificate%20from%20the%20agent%20CA"),
        "{catalog}"
    );
    let sign = pki.grpc(p, None, "/mesh.v1.AutoEncrypt/Sign", None);
    assert_eq!(
        grpc_status(&sign),
        Some(3),
        "reached, empty node name: {sign}"
    );
    assert!(
        sign.contains("is%20not%20a%20valid%20node%20name"),
        "{sign}"
    );

    // A token without node:write on the node: the agent exits with the server's reason.
    let servers = [s1.rpc_addr];
    let ca = pki.path("mesh-agent-ca.pem");
    let mut refused_args = vec![
        "agent".to_string(),
        "--node".into(),
        "n2".into(),
        "--server".into(),
        s1.rpc_addr.to_string(),
        "--data-dir".into(),
        tmp.path().join("a2").display().to_string(),
        "--http-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--tls-ca-file".into(),
        ca.clone(),
        "--auto-encrypt".into(),
        "--token".into(),
        token.clone(),
    ];
    let refused = meshd_refused(&refused_args);
    assert!(
        refused.contains("refused auto-encrypt")
            && refused.contains("lacks permission 'node:write' on \"n2\""),
        "{refused}"
    );
    // Without the CA file, --auto-encrypt is a usage error.
    refused_args.retain(|a| a != "--tls-ca-file" && *a != ca);
    assert!(meshd_refused(&refused_args).contains("--tls-ca-file"));

    // With a token for its node: certificate, then its service reaches the catalog.
    let agent = spawn_agent(
        "n1",
        &servers,
        &tmp.path().join("a1"),
        &["--tls-ca-file", &ca, "--auto-encrypt", "--token", &token],
    );
    let reg = http_as(
        "PUT",
        agent.http_addr,
        "/v1/agent/service/register",
        Some(r#"{"Name":"web","Port":8080}"#),
        &token,
    )
    .unwrap();
    assert_eq!(reg.status, 200, "{}", reg.body);
    let listed = eventually("web in the catalog", Duration::from_secs(20), || {
        http_as("GET", s1.http_addr, "/v1/catalog/service/web", None, &root)
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("\"n1\""))
    })
    .expect("the agent syncs over its auto-encrypt certificate");
    assert!(listed.body.contains("8080"), "{}", listed.body);

    // It renews before expiry: a second signature for n1 within the first certificate's life.
    let signed = |log: &str| {
        log.matches("auto-encrypt: signed an agent certificate")
            .count()
    };
    eventually("the agent's renewal", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&s1_log).unwrap_or_default();
        (signed(&log) >= 2).then_some(())
    })
    .expect("the agent renewed its certificate");
}
