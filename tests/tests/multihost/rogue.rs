//! Rogue hosts on the same bridge as the cluster: one runs `meshd server` in plaintext, one
//! with a server certificate from another CA. Neither joins (both sides log why), and with
//! curl from those hosts neither can write nor get a certificate: without a certificate the
//! agent API answers PermissionDenied (only auto-encrypt signing is open to certificate-less
//! callers, and it needs a token with `node:write`); another CA's certificate is refused in
//! the TLS handshake.

use std::path::Path;
use std::time::Duration;

use mesh_tests::grpc_curl::{GrpcCall, grpc_status};
use mesh_tests::process::{Meshd, bin, eventually, meshd_command_from};

use super::site::{RPC, Site, in_host, server_args, tls_flags};

/// Waits until `text()` contains every one of `needles`.
fn shows(what: &str, needles: &[&str], text: impl Fn() -> String) {
    eventually(what, Duration::from_secs(20), || {
        let t = text();
        needles.iter().all(|n| t.contains(n)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: wanted {needles:?} in\n{}", text()));
}

/// An `AutoEncryptRequest` for node `rogue` in `dc1` (protobuf: fields 1 and 2, strings).
const SIGN_ROGUE: &[u8] = b"\x0a\x05rogue\x12\x03dc1";

pub fn rogues_cannot_join_write_or_get_a_certificate(site: &Site) {
    let target = &site.servers[0];
    let join = target.rpc_addr().to_string();
    let other = site.path("other");
    let spawn = |host: &str, name: &str, extra: Vec<String>| {
        let h = site.lan.host(host);
        let mut args = server_args(name, h, &site.path(&format!("data-{name}")), 1);
        args.extend(["--join".to_string(), join.clone()]);
        args.extend(extra);
        let log = site.path(&format!("{name}.log"));
        let cmd = meshd_command_from(in_host(h, &bin("meshd")), &args);
        let m = Meshd::spawn_logged_with(name, &args, &log, cmd)
            .unwrap_or_else(|e| panic!("meshd server {name}: {e:#}"));
        (m, log)
    };
    let (_plain, plain_log) = spawn("r1", "rogue-plain", vec!["--insecure-plaintext-rpc".into()]);
    let (_foreign, foreign_log) = spawn("r2", "rogue-ca", tls_flags(&other, "dc1-server-mesh-0"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    shows(
        "the plaintext rogue's reason",
        &["could not reach or join a server"],
        || read(&plain_log),
    );
    shows(
        "the other-CA rogue's reason",
        &["could not reach or join a server", "UnknownIssuer"],
        || read(&foreign_log),
    );

    // curl from the rogue hosts, trusting the real CA (so curl accepts the server): no
    // certificate, or another CA's client certificate.
    let ca = site.path("mesh-agent-ca.pem");
    let (cert, key) = (
        other.join("dc1-client-mesh-0.pem"),
        other.join("dc1-client-mesh-0-key.pem"),
    );
    let needs_ca = "requires%20a%20certificate%20from%20the%20agent%20CA";
    let foreign = Some((cert.as_path(), key.as_path()));
    let (sign_csr, upsert, sign) = (
        "/mesh.v1.Catalog/SignCsr",
        "/mesh.v1.Catalog/UpsertIntention",
        "/mesh.v1.AutoEncrypt/Sign",
    );
    for (host, client, path, message, status, says) in [
        ("r1", None, sign_csr, &[][..], Some(7), needs_ca),
        ("r1", None, upsert, &[], Some(7), needs_ca),
        ("r1", None, sign, SIGN_ROGUE, Some(7), "node:write"),
        ("r2", foreign, sign_csr, &[], None, ""),
        ("r2", foreign, sign, SIGN_ROGUE, None, ""),
    ] {
        let h = site.lan.host(host);
        let out = GrpcCall {
            ca: &ca,
            server: target.host.addr(RPC),
            client,
            path,
            token: None,
            message,
        }
        .run(|| in_host(h, Path::new("curl")));
        assert_eq!(grpc_status(&out), status, "{host} {path}: {out}");
        assert!(
            out.contains(says),
            "{host} {path}: wanted {says:?} in {out}"
        );
        // Refused in the handshake: TLS 1.3 lets curl finish its side first, so it sees the
        // connection dropped under its request (the server logs the reason, below).
        if status.is_none() {
            assert!(out.contains("curl: ("), "{host} {path}: {out}");
        }
    }

    // The server's side: the plaintext join, the rogue refusing the server's certificate, and
    // curl's other-CA certificate, each a refused connection with its reason.
    shows(
        "the server's reasons",
        &[
            "refused an RPC connection",
            "InvalidContentType",
            "received fatal alert: UnknownCA",
            "UnknownIssuer",
        ],
        || target.logs(),
    );
    let members: Vec<String> = site
        .servers
        .iter()
        .map(|s| s.rpc_addr().to_string())
        .collect();
    for i in 0..site.servers.len() {
        let mut peers = site.peers(i);
        peers.sort();
        assert_eq!(peers, members, "{} lists a rogue", site.servers[i].name);
    }
}
