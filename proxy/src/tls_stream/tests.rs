//! The stream against stock rustls (tokio-rustls) peers over real sockets, in both roles.

use super::*;
use crate::identity::Identity;
use crate::identity::TlsOptions;
use crate::identity::tests::{identity, identity_trusting, new_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected TCP pair on loopback: (client end, server end).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("db.default.dc1.internal.mesh").unwrap()
}

/// `web` (client, dialling db) and `db` (server) of one root.
fn pair() -> (Identity, Identity) {
    let root = new_root(1);
    (identity(&root, "web", "db"), identity(&root, "db", "web"))
}

/// Either end of a connection: ours or tokio-rustls's.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Handshakes one connection; `ours_client`/`ours_server` pick the implementation per side.
async fn connect_pair(
    web: &Identity,
    db: &Identity,
    ours_client: bool,
    ours_server: bool,
) -> (Box<dyn Duplex>, Box<dyn Duplex>) {
    let (c, s) = tcp_pair().await;
    let (_, client_cfg) = web.client("db").unwrap();
    let server_cfg = db.server.clone();
    let client = async move {
        if ours_client {
            let mut tls = connect(client_cfg, name(), c).await.unwrap();
            // Our client queues its last flight; the server's accept below waits for it.
            tls.flush().await.unwrap();
            Box::new(tls) as Box<dyn Duplex>
        } else {
            let tls = tokio_rustls::TlsConnector::from(client_cfg);
            Box::new(tls.connect(name(), c).await.unwrap())
        }
    };
    let server = async move {
        if ours_server {
            let tls = accept(server_cfg, s).await.unwrap();
            let peer = crate::tls::peer_spiffe_id(tls.session().peer_certificates()).unwrap();
            assert_eq!(peer.service, "web");
            Box::new(tls) as Box<dyn Duplex>
        } else {
            let tls = tokio_rustls::TlsAcceptor::from(server_cfg);
            Box::new(tls.accept(s).await.unwrap())
        }
    };
    tokio::join!(client, server)
}

/// Our client's last flight leaves with its first bytes: until the client writes, the server's
/// handshake is not complete; the first write completes it and arrives, with no flush.
#[tokio::test]
async fn the_client_last_flight_leaves_with_its_first_bytes() {
    let (web, db) = pair();
    let (c, s) = tcp_pair().await;
    let (_, client_cfg) = web.client("db").unwrap();
    let mut server = tokio::spawn(accept(db.server.clone(), s));
    let mut client = connect(client_cfg, name(), c).await.unwrap();
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut server).await;
    assert!(
        early.is_err(),
        "the server finished without the client's Finished"
    );
    client.write_all(b"ping").await.unwrap();
    let mut server = server
        .await
        .unwrap()
        .expect("the server's handshake completes");
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

/// A client that only reads (a server-speaks-first protocol) sends its last flight with that
/// read, so the server completes and its greeting arrives.
#[tokio::test]
async fn a_client_that_reads_first_completes_the_handshake() {
    let (web, db) = pair();
    let (c, s) = tcp_pair().await;
    let (_, client_cfg) = web.client("db").unwrap();
    let server = tokio::spawn(async move {
        let mut tls = accept(db.server.clone(), s).await.unwrap();
        tls.write_all(b"220 greeting").await.unwrap();
        tls.flush().await.unwrap();
        tls
    });
    let mut client = connect(client_cfg, name(), c).await.unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_exact(&mut got),
    )
    .await
    .expect("the greeting arrives")
    .unwrap();
    assert_eq!(&got, b"220 greeting");
    drop(server.await.unwrap());
}

/// The interop combinations: (ours as client, ours as server).
const ROLES: [(bool, bool); 3] = [(true, false), (false, true), (true, true)];

#[tokio::test]
async fn request_half_close_and_full_reply_in_every_role() {
    let (web, db) = pair();
    for (oc, os) in ROLES {
        let (mut client, mut server) = connect_pair(&web, &db, oc, os).await;
        let srv = tokio::spawn(async move {
            let mut req = Vec::new();
            server.read_to_end(&mut req).await.unwrap();
            // A reply several records long, after the client's half-close.
            let reply: Vec<u8> = req.iter().cycle().take(100_000).copied().collect();
            server.write_all(&reply).await.unwrap();
            server.shutdown().await.unwrap();
            reply
        });
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == srv.await.unwrap(), "client {oc}, server {os}");
    }
}

#[tokio::test]
async fn handshake_exposes_the_peer_and_the_negotiated_session() {
    let (web, db) = pair();
    let (c, s) = tcp_pair().await;
    let (_, cfg) = web.client("db").unwrap();
    let client = async {
        let mut tls = connect(cfg, name(), c).await?;
        tls.flush().await.map(|()| tls)
    };
    let (client, server) = tokio::join!(client, accept(db.server.clone(), s));
    let (client, server) = (client.unwrap(), server.unwrap());
    let server_id = crate::tls::peer_spiffe_id(client.session().peer_certificates()).unwrap();
    assert_eq!(server_id.service, "db");
    assert!(!client.session().is_handshaking() && !server.session().is_handshaking());
    assert_eq!(
        client.session().negotiated_cipher_suite(),
        server.session().negotiated_cipher_suite()
    );
    assert!(client.session().negotiated_cipher_suite().is_some());
}

/// A deterministic byte stream and a checksum over it.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn checksum(sum: u64, data: &[u8]) -> u64 {
    data.iter().fold(sum, |s, &b| {
        s.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(b))
    })
}

/// Sends `total` pattern bytes then shuts down; returns their checksum.
async fn send_pattern<W: AsyncWrite + Unpin>(mut w: W, seed: u64, total: usize) -> u64 {
    let mut p = Pattern(seed);
    let mut buf = vec![0u8; 200_000];
    let (mut sent, mut sum) = (0, 0);
    while sent < total {
        let n = buf.len().min(total - sent);
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        sum = checksum(sum, &buf[..n]);
        sent += n;
    }
    w.shutdown().await.unwrap();
    sum
}

/// Reads to EOF; returns (bytes, checksum).
async fn receive<R: AsyncRead + Unpin>(mut r: R) -> (usize, u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut sum) = (0, 0);
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (got, sum);
        }
        sum = checksum(sum, &buf[..n]);
        got += n;
    }
}

#[tokio::test]
async fn bulk_both_ways_at_once_keeps_every_byte() {
    const EACH: usize = 256 << 20;
    let (web, db) = pair();
    for (oc, os) in [(true, false), (false, true)] {
        let (client, server) = connect_pair(&web, &db, oc, os).await;
        let (cr, cw) = tokio::io::split(client);
        let (sr, sw) = tokio::io::split(server);
        let (up, down, at_server, at_client) = tokio::join!(
            send_pattern(cw, 1, EACH),
            send_pattern(sw, 2, EACH),
            receive(sr),
            receive(cr),
        );
        assert_eq!(at_server, (EACH, up), "client {oc}, server {os}");
        assert_eq!(at_client, (EACH, down), "client {oc}, server {os}");
    }
}

#[tokio::test]
async fn a_fin_without_close_notify_is_a_truncation() {
    let (web, db) = pair();
    for clean in [true, false] {
        let (c, s) = tcp_pair().await;
        let (_, cfg) = web.client("db").unwrap();
        let peer = async move {
            let mut tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name(), c)
                .await
                .unwrap();
            tls.write_all(b"all of it").await.unwrap();
            tls.flush().await.unwrap();
            if clean {
                tls.shutdown().await.unwrap();
            } else {
                // FIN on the TCP socket under the session: no close_notify.
                tls.into_inner().0.shutdown().await.unwrap();
            }
        };
        let (_, ours) = tokio::join!(peer, accept(db.server.clone(), s));
        let mut ours = ours.unwrap();
        let mut got = Vec::new();
        let r = ours.read_to_end(&mut got).await;
        assert_eq!(got, b"all of it", "the data before the close is delivered");
        match r {
            Ok(_) => assert!(clean, "a bare FIN must not read as a clean EOF"),
            Err(e) => {
                assert!(!clean, "{e}");
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            }
        }
    }
}

#[tokio::test]
async fn key_updates_mid_stream_in_both_directions() {
    let (web, db) = pair();
    let (c, s) = tcp_pair().await;
    let (_, cfg) = web.client("db").unwrap();
    let peer = async move {
        tokio_rustls::TlsConnector::from(cfg)
            .connect(name(), c)
            .await
            .unwrap()
    };
    let (peer, ours) = tokio::join!(peer, accept(db.server.clone(), s));
    let (mut peer, mut ours) = (peer, ours.unwrap());
    for round in 0u8..4 {
        let msg = vec![round; 40_000];
        // The stock peer updates its keys (asking us to update ours) before sending.
        peer.get_mut().1.refresh_traffic_keys().unwrap();
        peer.write_all(&msg).await.unwrap();
        peer.flush().await.unwrap();
        let mut got = vec![0u8; msg.len()];
        ours.read_exact(&mut got).await.unwrap();
        assert!(got == msg, "round {round}: peer to us");
        // Our side updates its keys before replying.
        ours.refresh_traffic_keys().unwrap();
        ours.write_all(&msg).await.unwrap();
        ours.flush().await.unwrap();
        let mut back = vec![0u8; msg.len()];
        peer.read_exact(&mut back).await.unwrap();
        assert!(back == msg, "round {round}: us to peer");
    }
    ours.shutdown().await.unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

/// The failure kind of our side of a refused handshake.
fn kind(r: io::Result<impl Sized>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => crate::tls::handshake_failure_kind(&e),
    }
}

#[tokio::test]
async fn refusals_keep_their_failure_kinds() {
    let root = new_root(1);
    let other = new_root(2);
    let db = identity(&root, "db", "web");

    // A client of another root (trusting ours, so only our server refuses).
    let elsewhere = identity_trusting(&other, "web", "db", &[&root, &other], TlsOptions::default());
    let (c, s) = tcp_pair().await;
    let (_, cfg) = elsewhere.client("db").unwrap();
    let (_, ours) = tokio::join!(
        tokio_rustls::TlsConnector::from(cfg).connect(name(), c),
        accept(db.server.clone(), s)
    );
    assert_eq!(kind(ours), "unknown_issuer");

    // Our client dialling db meets api: the wrong SPIFFE ID.
    let api = identity(&root, "api", "web");
    let web = identity(&root, "web", "db");
    let (c, s) = tcp_pair().await;
    let (_, cfg) = web.client("db").unwrap();
    let (ours, _) = tokio::join!(
        connect(cfg, name(), c),
        tokio_rustls::TlsAcceptor::from(api.server.clone()).accept(s)
    );
    assert_eq!(kind(ours), "wrong_identity");

    // A bare TCP close before any handshake byte.
    let (c, s) = tcp_pair().await;
    drop(c);
    assert_eq!(kind(accept(db.server.clone(), s).await), "eof");
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    // A third-party client: openssl s_client offers no certificate.
    let root = new_root(1);
    let db = identity(&root, "db", "web");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_3",
            "-quiet",
            "-connect",
            &addr.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (s, _) = l.accept().await.unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        accept(db.server.clone(), s),
    )
    .await
    .unwrap();
    assert_eq!(kind(r), "no_client_certificate");
    drop(client);
}

#[tokio::test]
async fn garbage_after_the_handshake_is_an_error() {
    let (web, db) = pair();
    let (c, s) = tcp_pair().await;
    let (_, cfg) = web.client("db").unwrap();
    let (peer, ours) = tokio::join!(
        tokio_rustls::TlsConnector::from(cfg).connect(name(), c),
        accept(db.server.clone(), s)
    );
    let (mut peer, mut ours) = (peer.unwrap(), ours.unwrap());
    peer.write_all(b"fine").await.unwrap();
    peer.flush().await.unwrap();
    let mut b = [0u8; 4];
    ours.read_exact(&mut b).await.unwrap();
    // Raw bytes on the socket: a record header with a bogus content type and length.
    peer.get_mut()
        .0
        .write_all(&[0x17, 0x03, 0x03, 0x00, 0x20])
        .await
        .unwrap();
    peer.get_mut().0.write_all(&[0xAB; 0x20]).await.unwrap();
    let e = ours.read(&mut [0u8; 64]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // The session stays failed, and the peer was told with an alert.
    assert!(ours.write_all(b"x").await.is_err());
    let told = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await
    });
    assert!(told.await.unwrap().is_err());
}
