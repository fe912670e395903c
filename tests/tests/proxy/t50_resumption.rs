//! TLS session resumption on the proxy's real listeners, both directions: on by default (a
//! client that kept the session from its first connection resumes on the next one), and never
//! with `--no-tls-resumption` (every connection is a full mutual-TLS handshake, which is what
//! the benchmark's connection rate must measure).
//!
//! Inbound: a rustls client holding web's leaf and a session store connects to db's sidecar
//! three times. Outbound: the upstream `cache` is served by a rustls server of this test,
//! registered as cache's sidecar and holding cache's leaf from the agent, which records how
//! each handshake web's sidecar made with it went. Both sides report
//! `rustls::HandshakeKind`, so the test reads the protocol outcome rather than inferring it
//! from timings or byte counts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_control::spiffe::SpiffeId;
use mesh_tests::process::{eventually, free_port};
use meshproxy::tls::SpiffeServerVerifier;
use rustls::HandshakeKind;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

use super::harness::{Echo, Proxy, meshd_dev, ok, register, set_intention, wait_ca};

/// Connections per direction and mode.
const CONNECTIONS: usize = 3;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// (certificate chain, key) of `service`'s leaf, from the agent.
fn leaf(http: SocketAddr, service: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let v = ok(
        "GET",
        http,
        &format!("/v1/agent/connect/ca/leaf/{service}"),
        None,
    );
    let chain = CertificateDer::pem_slice_iter(v["CertPEM"].as_str().unwrap().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        PrivateKeyDer::from_pem_slice(v["PrivateKeyPEM"].as_str().unwrap().as_bytes()).unwrap();
    (chain, key)
}

fn roots(http: SocketAddr) -> Arc<RootCertStore> {
    let v = ok("GET", http, "/v1/agent/connect/ca/roots", None);
    let mut store = RootCertStore::empty();
    for r in v["Roots"].as_array().unwrap() {
        let der =
            CertificateDer::from_pem_slice(r["RootCert"].as_str().unwrap().as_bytes()).unwrap();
        store.add(der).unwrap();
    }
    Arc::new(store)
}

/// A mutual-TLS client with web's leaf and rustls's default in-memory session store, which
/// every connection made with it shares.
fn web_client(http: SocketAddr) -> Arc<rustls::ClientConfig> {
    let p = provider();
    let (chain, key) = leaf(http, "web");
    // The proxy's own verifier: the server must present db's SPIFFE ID under the mesh's roots.
    let td = ok("GET", http, "/v1/agent/connect/ca/roots", None)["TrustDomain"]
        .as_str()
        .unwrap()
        .to_string();
    let verifier = SpiffeServerVerifier::new(
        roots(http),
        SpiffeId::service(&td, "dc1", "db"),
        p.signature_verification_algorithms,
    );
    let config = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// One connection to db's sidecar: TLS, "ping" echoed by db's app (reading the reply also
/// reads any session ticket the proxy sent). `None` if it did not get through (yet).
fn inbound_once(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Option<HandshakeKind> {
    let name = ServerName::try_from("db.mesh.invalid").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).ok()?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"ping").ok()?;
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).ok()?;
    (&b == b"ping").then_some(())?;
    tls.conn.handshake_kind()
}

/// The upstream `cache`: a rustls server with cache's leaf that requires a client certificate
/// from the mesh CA, echoes 4 bytes per connection, and records each handshake's kind. rustls's
/// default server settings resume sessions, so what it records shows the *client's* choice.
struct FakeUpstream {
    kinds: Arc<Mutex<Vec<HandshakeKind>>>,
}

impl FakeUpstream {
    fn start(http: SocketAddr, listener: TcpListener) -> Self {
        let p = provider();
        let (chain, key) = leaf(http, "cache");
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(http), p.clone())
            .build()
            .unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(p)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let k = kinds.clone();
        // Ends with the test process; the agent's TCP health check connects here every second
        // (and closes at once), so every connection gets its own thread.
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { continue };
                let (config, k) = (config.clone(), k.clone());
                std::thread::spawn(move || {
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let mut b = [0u8; 4];
                    if tls.read_exact(&mut b).is_ok() && tls.write_all(&b).is_ok() {
                        let _ = tls.flush();
                        if let Some(kind) = tls.conn.handshake_kind() {
                            k.lock().unwrap().push(kind);
                        }
                    }
                });
            }
        });
        Self { kinds }
    }

    fn kinds(&self) -> Vec<HandshakeKind> {
        self.kinds.lock().unwrap().clone()
    }
}

/// One plain connection through web's upstream listener for `cache`: "ping" echoed.
fn outbound_once(addr: SocketAddr) -> Option<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"ping").ok()?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).ok()?;
    (&b == b"ping").then_some(())
}

/// Runs CONNECTIONS connections each way through sidecars started with `flags`; returns the
/// handshake kinds seen inbound (by the client) and outbound (by the upstream server).
fn handshakes(flags: &[&str]) -> (Vec<HandshakeKind>, Vec<HandshakeKind>) {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    wait_ca(http);
    let echo = Echo::start();
    let cache_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (db_public, cache_up) = (free_port(), free_port());
    register(http, "db", echo.port(), db_public, &[]);
    register(
        http,
        "web",
        free_port(),
        free_port(),
        &[("cache", cache_up)],
    );
    register(
        http,
        "cache",
        free_port(),
        cache_listener.local_addr().unwrap().port(),
        &[],
    );
    set_intention(http, "web", "db", "allow");
    let cache = FakeUpstream::start(http, cache_listener);
    let db = Proxy::start(http, "db", flags);
    let web = Proxy::start(http, "web", flags);
    // `/config` says which mode the proxies run in.
    let want = serde_json::Value::Bool(flags.is_empty());
    assert_eq!(db.config()["Flags"]["tls"]["resumption"], want);
    assert_eq!(web.config()["Flags"]["tls"]["resumption"], want);

    // Inbound. The first connection waits for the allow intention to reach db's proxy.
    let client = web_client(http);
    let db_addr: SocketAddr = format!("127.0.0.1:{db_public}").parse().unwrap();
    let mut inbound = vec![
        eventually(
            "web's connection through db's sidecar",
            Duration::from_secs(20),
            || inbound_once(&client, db_addr),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- db log ---\n{}", db.log())),
    ];
    for _ in 1..CONNECTIONS {
        inbound.push(inbound_once(&client, db_addr).expect("inbound connection"));
    }

    // Outbound. The first connection waits for cache's health check to pass and reach web.
    let up: SocketAddr = format!("127.0.0.1:{cache_up}").parse().unwrap();
    eventually(
        "a connection through web's upstream listener",
        Duration::from_secs(30),
        || outbound_once(up),
    )
    .unwrap_or_else(|e| panic!("{e}\n--- web log ---\n{}", web.log()));
    for _ in 1..CONNECTIONS {
        outbound_once(up).expect("outbound connection");
    }
    // The server thread records a connection after echoing; wait for all of them.
    let outbound = eventually(
        "upstream recorded every handshake",
        Duration::from_secs(10),
        || {
            let k = cache.kinds();
            (k.len() >= CONNECTIONS).then_some(k)
        },
    )
    .unwrap();
    (inbound, outbound)
}

fn is_full(k: &HandshakeKind) -> bool {
    matches!(
        k,
        HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest
    )
}

#[test]
fn sessions_resume_by_default() {
    let (inbound, outbound) = handshakes(&[]);
    for (dir, kinds) in [("inbound", &inbound), ("outbound", &outbound)] {
        assert!(is_full(&kinds[0]), "{dir}: first handshake {kinds:?}");
        assert!(
            kinds[1..].iter().all(|k| *k == HandshakeKind::Resumed),
            "{dir}: later handshakes resume by default: {kinds:?}"
        );
    }
}

#[test]
fn no_tls_resumption_makes_every_handshake_full() {
    let (inbound, outbound) = handshakes(&["--no-tls-resumption"]);
    for (dir, kinds) in [("inbound", &inbound), ("outbound", &outbound)] {
        assert_eq!(kinds.len(), CONNECTIONS, "{dir}: {kinds:?}");
        assert!(
            kinds.iter().all(is_full),
            "{dir}: every handshake is full with --no-tls-resumption: {kinds:?}"
        );
    }
}
