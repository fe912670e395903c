//! `meshctl tls ca create` / `tls cert create` (issue 13 point 1), checked with OpenSSL as the
//! independent client: the files and their modes, nothing overwritten, the names and usages
//! `openssl x509`/`verify` see, and a real mutual-TLS handshake between `openssl s_server` and
//! `openssl s_client` with those certificates, where a client certificate cannot pass as a
//! server.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod rpc;

use mesh_tests::process::{OwnedChild, bin, eventually, free_port, stdout_ok};

/// `meshctl <args>` run in `dir`, with an API address and token that could not be used: the
/// `tls` commands touch only local files and must not need either.
pub(crate) fn meshctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("meshctl"))
        .args(args)
        .current_dir(dir)
        .env("MESH_HTTP_ADDR", "not an address")
        .env("MESH_HTTP_TOKEN", "not\u{1}a header value")
        .stdin(Stdio::null())
        .output()
        .expect("running meshctl")
}

/// `openssl <args>` run in `dir`: whether it exited 0, and stdout+stderr.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl binary must be installed for these tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

/// A CA, two server certificates (the second gets index 1) and a client certificate in `dir`.
fn make_pki(dir: &Path) {
    stdout_ok(&meshctl(dir, &["tls", "ca", "create"]), "meshctl tls");
    let saved = stdout_ok(
        &meshctl(
            dir,
            &[
                "tls",
                "cert",
                "create",
                "-server",
                "-dc",
                "dc1",
                "-additional-ipaddress",
                "10.0.0.5",
                "-additional-dnsname",
                "s1.example",
            ],
        ),
        "meshctl tls",
    );
    assert!(saved.contains("==> Saved dc1-server-mesh-0.pem"), "{saved}");
    let again = stdout_ok(
        &meshctl(dir, &["tls", "cert", "create", "-server"]),
        "meshctl tls",
    );
    assert!(again.contains("==> Saved dc1-server-mesh-1.pem"), "{again}");
    stdout_ok(
        &meshctl(dir, &["tls", "cert", "create", "-client"]),
        "meshctl tls",
    );
}

#[test]
fn files_names_and_usages_as_openssl_sees_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_pki(dir);
    for (file, want) in [
        ("mesh-agent-ca.pem", 0o644),
        ("mesh-agent-ca-key.pem", 0o600),
        ("dc1-server-mesh-0.pem", 0o644),
        ("dc1-server-mesh-0-key.pem", 0o600),
        ("dc1-server-mesh-1-key.pem", 0o600),
        ("dc1-client-mesh-0-key.pem", 0o600),
    ] {
        assert_eq!(mode(&dir.join(file)), want, "{file}");
    }

    // A second CA in the same place is refused and the first is untouched.
    let before = std::fs::read(dir.join("mesh-agent-ca-key.pem")).unwrap();
    let refused = meshctl(dir, &["tls", "ca", "create"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read(dir.join("mesh-agent-ca-key.pem")).unwrap(),
        before
    );

    let (is_ca, text) = openssl(
        dir,
        &["x509", "-in", "mesh-agent-ca.pem", "-noout", "-text"],
    );
    assert!(
        is_ca && text.contains("CA:TRUE") && text.contains("prime256v1"),
        "{text}"
    );
    let (_, ext) = openssl(
        dir,
        &[
            "x509",
            "-in",
            "dc1-server-mesh-0.pem",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
        ],
    );
    for want in [
        "DNS:server.dc1.mesh",
        "DNS:localhost",
        "DNS:s1.example",
        "IP Address:127.0.0.1",
        "IP Address:10.0.0.5",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
    ] {
        assert!(ext.contains(want), "{want} not in {ext}");
    }
    let verify = |cert: &str, host: &str| {
        openssl(
            dir,
            &[
                "verify",
                "-CAfile",
                "mesh-agent-ca.pem",
                "-verify_hostname",
                host,
                cert,
            ],
        )
    };
    assert!(verify("dc1-server-mesh-0.pem", "server.dc1.mesh").0);
    assert!(verify("dc1-client-mesh-0.pem", "client.dc1.mesh").0);
    // A client certificate does not carry a server's name.
    let (passes, why) = verify("dc1-client-mesh-0.pem", "server.dc1.mesh");
    assert!(!passes && why.contains("hostname mismatch"), "{why}");

    // Another CA's key with this CA's certificate is refused before anything is signed.
    let other = tempfile::tempdir().unwrap();
    stdout_ok(
        &meshctl(other.path(), &["tls", "ca", "create"]),
        "meshctl tls",
    );
    let mixed = meshctl(
        dir,
        &[
            "tls",
            "cert",
            "create",
            "-client",
            "-key",
            &other
                .path()
                .join("mesh-agent-ca-key.pem")
                .display()
                .to_string(),
        ],
    );
    assert_eq!(mixed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&mixed.stderr).contains("does not match the CA certificate"),
        "{mixed:?}"
    );
    assert!(!dir.join("dc1-client-mesh-1.pem").exists());
}

/// `openssl s_server` on a free loopback port presenting `cert`, requiring a client
/// certificate from the CA; stopped (by PID) on drop.
pub(crate) fn s_server(dir: &Path, cert: &str, key: &str) -> (OwnedChild, SocketAddr) {
    let port = free_port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            cert,
            "-key",
            key,
            "-CAfile",
            "mesh-agent-ca.pem",
            "-Verify",
            "1",
            "-verify_return_error",
            "-quiet",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("s_server to listen", Duration::from_secs(10), || {
        TcpStream::connect(addr).ok()
    })
    .expect("s_server listens");
    (OwnedChild::new(child), addr)
}

/// `openssl s_client` to `addr` expecting the server name `host`, with `client` (cert, key) if
/// given; whether the handshake and verification succeeded, and the output.
pub(crate) fn s_client(
    dir: &Path,
    addr: SocketAddr,
    host: &str,
    client: Option<(&str, &str)>,
) -> (bool, String) {
    let connect = addr.to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        "mesh-agent-ca.pem",
        "-verify_hostname",
        host,
        "-verify_return_error",
        "-brief",
    ];
    if let Some((cert, key)) = client {
        args.extend(["-cert", cert, "-key", key]);
    }
    openssl(dir, &args)
}

#[test]
fn mutual_tls_with_openssl_and_no_impersonation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_pki(dir);
    let client = Some(("dc1-client-mesh-0.pem", "dc1-client-mesh-0-key.pem"));

    let (_server, addr) = s_server(dir, "dc1-server-mesh-0.pem", "dc1-server-mesh-0-key.pem");
    let (done, text) = s_client(dir, addr, "server.dc1.mesh", client);
    assert!(done && text.contains("Verification: OK"), "{text}");

    // A client certificate presented as a server: the name check refuses it.
    let (_fake, fake_addr) = s_server(dir, "dc1-client-mesh-0.pem", "dc1-client-mesh-0-key.pem");
    let (done, text) = s_client(dir, fake_addr, "server.dc1.mesh", client);
    assert!(!done && text.contains("hostname mismatch"), "{text}");
}
