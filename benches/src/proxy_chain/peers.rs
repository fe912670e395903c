//! The peer chains: the same app → proxy ⇒ mutual TLS ⇒ proxy → app chain built from stunnel
//! or HAProxy, with certificates generated here.
//!
//! Fairness, so that the comparison measures the proxies and not their settings:
//!
//! * Certificates as the mesh issues them: ECDSA P-256 keys, one CA, a server leaf for
//!   `spiffe://bench.test/ns/default/dc/dc1/svc/db` and a client leaf for `.../svc/web`, each
//!   with its SPIFFE ID as the only SAN (URI).
//! * TLS 1.3 only, the same cipher-suite preference as rustls with aws-lc-rs (AES-256-GCM,
//!   AES-128-GCM, ChaCha20-Poly1305) and X25519 then P-256 for the key exchange.
//! * Mutual TLS required on both sides: the server demands a client certificate and verifies
//!   its chain to the CA, the client verifies the server's chain to the CA. (meshproxy also
//!   checks the exact SPIFFE ID in the URI SAN and authorizes against intentions; stunnel and
//!   HAProxy have no URI-SAN check, so they do a little less work per handshake.)
//! * Each client-side proxy has two listeners: one that resumes TLS sessions with the server
//!   side (OpenSSL's default, as rustls's default is in meshproxy) and one that never does
//!   (stunnel `sessionResume = no`, HAProxy `no-ssl-reuse`), so every connection through it is
//!   a full handshake with certificates and signatures on both sides.
//! * Default threading: stunnel one thread per connection, HAProxy one thread per CPU.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

use super::procs::{Child, free_port, local, which};

/// How long a peer process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// TLS 1.3 suites in rustls/aws-lc-rs's order.
const SUITES: &str = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
/// Key-exchange groups in rustls's order (without its post-quantum hybrid).
const GROUPS: &str = "X25519:P-256";

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stunnel,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stunnel => "stunnel",
            Kind::Haproxy => "haproxy",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Stunnel => "stunnel4",
            Kind::Haproxy => "haproxy",
        }
    }

    /// The binary, if installed.
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Kind::Stunnel => which("stunnel4").or_else(|| which("stunnel")),
            Kind::Haproxy => which("haproxy"),
        }
    }

    /// `stunnel -version` / `haproxy -v`, first line.
    pub fn version(self) -> String {
        let Some(bin) = self.binary() else {
            return "not installed".into();
        };
        let flag = match self {
            Kind::Stunnel => "-version",
            Kind::Haproxy => "-v",
        };
        let out = Command::new(bin).arg(flag).stdin(Stdio::null()).output();
        out.map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| l.contains("stunnel ") || l.contains("HAProxy version"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
    }
}

/// Installs the missing peers with apt (running `apt-get update` and retrying once if the
/// install fails). Returns one line per peer saying what happened; a peer that cannot be
/// installed is reported, not fatal.
pub fn ensure_installed(kinds: &[Kind], allow_install: bool) -> Vec<String> {
    let missing: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| k.binary().is_none())
        .collect();
    let mut lines: Vec<String> = kinds
        .iter()
        .filter(|k| !missing.contains(k))
        .map(|k| format!("{}: already installed ({})", k.name(), k.version()))
        .collect();
    if missing.is_empty() {
        return lines;
    }
    let names: Vec<&str> = missing.iter().map(|k| k.package()).collect();
    let why_not = if allow_install {
        crate::apt::cannot_install()
    } else {
        Some("--no-install given")
    };
    if let Some(why) = why_not {
        for k in &missing {
            lines.push(format!(
                "{}: not installed and {why}; skipping this peer",
                k.name()
            ));
        }
        return lines;
    }
    crate::apt::install(&names);
    for k in &missing {
        lines.push(match k.binary() {
            Some(_) => format!(
                "{}: installed package {} ({})",
                k.name(),
                k.package(),
                k.version()
            ),
            None => format!(
                "{}: apt-get install {} failed; skipping this peer",
                k.name(),
                k.package()
            ),
        });
    }
    lines
}

/// PEM files of the peers' CA and leaves.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Certificate and key in one file (HAProxy's `crt`).
    pub server_bundle: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_bundle: PathBuf,
}

const TRUST_DOMAIN: &str = "bench.test";

fn spiffe(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{service}")
}

/// Generates the CA and both leaves (P-256, valid for a day) into `dir`.
pub fn generate_certs(dir: &Path) -> anyhow::Result<Certs> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "proxy_chain bench CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(1);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |service: &str| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(spiffe(service).try_into()?)];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(1);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf("db")?;
    let (client_pem, client_key) = leaf("web")?;
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {p:?}"))?;
        Ok(p)
    };
    Ok(Certs {
        ca: write("ca.pem", &ca_cert.pem())?,
        server_cert: write("server.pem", &server_pem)?,
        server_key: write("server.key", &server_key)?,
        server_bundle: write("server-bundle.pem", &format!("{server_pem}{server_key}"))?,
        client_cert: write("client.pem", &client_pem)?,
        client_key: write("client.key", &client_key)?,
        client_bundle: write("client-bundle.pem", &format!("{client_pem}{client_key}"))?,
    })
}

/// A running peer chain. Dropping it stops both processes.
pub struct PeerChain {
    pub kind: Kind,
    pub client: Child,
    pub server: Child,
    /// Client-side listener that resumes TLS sessions with the server side.
    pub entry: SocketAddr,
    /// Client-side listener that never resumes (a full handshake per connection).
    pub entry_full: SocketAddr,
    /// The server side's mutual-TLS port.
    pub server_public: SocketAddr,
}

impl PeerChain {
    pub fn pids(&self) -> Vec<u32> {
        vec![self.client.pid(), self.server.pid()]
    }

    pub fn stop(mut self) {
        self.client.stop();
        self.server.stop();
    }
}

/// Where a peer chain listens and connects: the app, the server side, and the client's two
/// entries (session resumption on, off).
#[derive(Clone, Copy)]
struct Ports {
    app: SocketAddr,
    srv: u16,
    resume: u16,
    full: u16,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Starts the `kind` chain in front of `app`, with its files in `dir`.
pub fn start(kind: Kind, dir: &Path, certs: &Certs, app: SocketAddr) -> anyhow::Result<PeerChain> {
    let bin = kind
        .binary()
        .with_context(|| format!("{} is not installed", kind.name()))?;
    let (srv, resume, full) = (free_port()?, free_port()?, free_port()?);
    let ports = Ports {
        app,
        srv,
        resume,
        full,
    };
    let (server_conf, client_conf) = match kind {
        Kind::Stunnel => stunnel_configs(certs, ports),
        Kind::Haproxy => haproxy_configs(certs, ports),
    };
    let name = kind.name();
    let spawn = |side: &str, conf: &str| -> anyhow::Result<Child> {
        let path = dir.join(format!("{name}-{side}.conf"));
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new(&bin);
        match kind {
            Kind::Stunnel => cmd.arg(&path),
            Kind::Haproxy => cmd.args(["-db", "-f"]).arg(&path),
        };
        Child::spawn(
            &format!("{name} ({side})"),
            cmd,
            &dir.join(format!("{name}-{side}.log")),
        )
    };
    let mut server = spawn("server", &server_conf)?;
    server.wait_listening(&[srv], START_TIMEOUT)?;
    let mut client = spawn("client", &client_conf)?;
    client.wait_listening(&[resume, full], START_TIMEOUT)?;
    Ok(PeerChain {
        kind,
        client,
        server,
        entry: local(resume),
        entry_full: local(full),
        server_public: local(srv),
    })
}

fn stunnel_configs(c: &Certs, ports: Ports) -> (String, String) {
    let (app, srv) = (ports.app, ports.srv);
    let (resume, full) = (ports.resume, ports.full);
    // `debug = err`: no log line per connection. TCP_NODELAY on both sockets, as meshproxy.
    let global = "foreground = yes\npid =\nsyslog = no\ndebug = err\n\
                  socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n";
    let tls = format!(
        "sslVersionMin = TLSv1.3\nciphersuites = {SUITES}\ncurves = {GROUPS}\n\
         CAfile = {}\nverifyChain = yes\n",
        p(&c.ca)
    );
    let server = format!(
        "{global}\n[db]\naccept = 127.0.0.1:{srv}\nconnect = {app}\ncert = {}\nkey = {}\n\
         requireCert = yes\n{tls}",
        p(&c.server_cert),
        p(&c.server_key)
    );
    let client_service = |name: &str, port: u16, resume: bool| {
        format!(
            "[{name}]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{srv}\n\
             cert = {}\nkey = {}\nsessionResume = {}\n{tls}",
            p(&c.client_cert),
            p(&c.client_key),
            if resume { "yes" } else { "no" }
        )
    };
    let client = format!(
        "{global}\n{}\n{}",
        client_service("web-resume", resume, true),
        client_service("web-full", full, false)
    );
    (server, client)
}

fn haproxy_configs(c: &Certs, ports: Ports) -> (String, String) {
    let (app, srv) = (ports.app, ports.srv);
    let (resume, full) = (ports.resume, ports.full);
    let global = format!(
        "global\n  maxconn 5000\n  ssl-default-bind-ciphersuites {SUITES}\n  \
         ssl-default-server-ciphersuites {SUITES}\n  ssl-default-bind-curves {GROUPS}\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n"
    );
    let server = format!(
        "{global}\nfrontend db\n  bind 127.0.0.1:{srv} ssl crt {} ca-file {} verify required \
         ssl-min-ver TLSv1.3\n  default_backend app\n\nbackend app\n  server app {app}\n",
        p(&c.server_bundle),
        p(&c.ca)
    );
    let tls_server = format!(
        "127.0.0.1:{srv} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3",
        p(&c.client_bundle),
        p(&c.ca)
    );
    let client = format!(
        "{global}\nfrontend web-resume\n  bind 127.0.0.1:{resume}\n  default_backend db-resume\n\n\
         backend db-resume\n  server db {tls_server}\n\n\
         frontend web-full\n  bind 127.0.0.1:{full}\n  default_backend db-full\n\n\
         backend db-full\n  server db {tls_server} no-ssl-reuse\n"
    );
    (server, client)
}

/// What a TLS client sees from `addr` with the given client certificate: protocol, cipher
/// suite and key exchange, from `openssl s_client -brief` (`None` without openssl).
pub fn negotiated(addr: SocketAddr, cert: &Path, key: &Path, ca: &Path) -> Option<String> {
    let openssl = which("openssl")?;
    let out = Command::new(openssl)
        .args(["s_client", "-brief", "-connect", &addr.to_string()])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let proto = field("Protocol version:")?;
    let suite = field("Ciphersuite:").unwrap_or_default();
    let kx = field("Server Temp Key:")
        .or_else(|| field("Peer Temp Key:"))
        .unwrap_or_default();
    Some(format!("{proto} {suite} {kx}"))
}
