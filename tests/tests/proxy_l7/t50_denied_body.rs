//! A denied request whose body is still arriving (issue 10 point 4): a small rest is drained
//! and the keep-alive connection stays usable; a large, slow or unknown-length rest gets
//! `Connection: close` on the 403 and a clean close (FIN, never a reset, so the response is
//! never lost). Clients: raw TCP sockets, Python's `http.client` (keep-alive, reconnects only
//! when told to), curl with two URLs on one command line, and an HTTP/2 client whose other
//! streams must not notice a denied stream with a body.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::L7Chain;
use crate::apps::HttpApp;

/// Rounds of each client scenario: every one must succeed (0 failures of the second request).
const ROUNDS: usize = 5;

fn chain(h2: bool) -> (HttpApp, L7Chain) {
    let app = HttpApp::start(h2);
    let chain = L7Chain::start(app.port(), Some(if h2 { "http2" } else { "http" }), &[]);
    chain.set_permissions(json!([{"Action": "allow", "HTTP": {"PathPrefix": "/ok"}}]));
    (app, chain)
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `s`; `None` on EOF,
/// error or 10 s without a complete response. Returns (head lower-cased, body).
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(String, String)> {
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 8192];
    // Bounded by the deadline.
    while Instant::now() < deadline {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).into_owned();
                pending.drain(..end + 4 + len);
                return Some((head, body));
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    None
}

/// After a `Connection: close` response: the server's FIN comes (read returns 0), never a
/// reset, within 10 s.
fn closed_cleanly(s: &mut TcpStream, pending: &[u8]) -> Result<(), String> {
    if !pending.is_empty() {
        return Err(format!(
            "bytes after the response: {:?}",
            String::from_utf8_lossy(pending)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                return Err(format!(
                    "unexpected bytes: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("not a clean close: {e}")),
        }
    }
    Err("no close within 10 s".into())
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn says_close(head: &str) -> bool {
    head.lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"))
}

/// A denied POST whose body comes in two parts, then an allowed GET on the same socket.
fn small_body_split_round(upstream: SocketAddr, round: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(upstream).map_err(|e| e.to_string())?;
    let body = vec![b'a'; 3000];
    s.write_all(
        format!(
            "POST /denied HTTP/1.1\r\nHost: db\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    s.write_all(&body[..1000]).map_err(|e| e.to_string())?;
    // The shape under test: the rest of the body arrives later than the head (well inside
    // the proxy's 1 s drain bound), not a wait for anything.
    std::thread::sleep(Duration::from_millis(150));
    s.write_all(&body[1000..]).map_err(|e| e.to_string())?;
    s.write_all(format!("GET /ok/after-{round} HTTP/1.1\r\nHost: db\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    let (h1, _) = read_response(&mut s, &mut pending).ok_or("no first response")?;
    if status(&h1) != 403 || says_close(&h1) {
        return Err(format!("first response: {h1}"));
    }
    let (h2, b2) = read_response(&mut s, &mut pending)
        .ok_or_else(|| format!("no second response on the same connection (first: {h1})"))?;
    if status(&h2) != 200 || b2.trim() != format!("ok GET /ok/after-{round}") {
        return Err(format!("second response: {h2}\n{b2}"));
    }
    Ok(())
}

/// A denied request with a body over the bound (declared, or chunked): 403 with
/// `Connection: close`, all of the body accepted, then a clean close.
fn large_body_round(upstream: SocketAddr, chunked: bool) -> Result<(), String> {
    let mut s = TcpStream::connect(upstream).map_err(|e| e.to_string())?;
    let total = 1024 * 1024;
    let head = if chunked {
        "POST /denied HTTP/1.1\r\nHost: db\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /denied HTTP/1.1\r\nHost: db\r\nContent-Length: {total}\r\n\r\n")
    };
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    w.set_write_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(head.as_bytes())?;
        let chunk = vec![b'b'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            if chunked {
                w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                w.write_all(&chunk)?;
                w.write_all(b"\r\n")?;
            } else {
                w.write_all(&chunk)?;
            }
        }
        if chunked {
            w.write_all(b"0\r\n\r\n")?;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut pending = Vec::new();
    let (h, b) = read_response(&mut s, &mut pending).ok_or("no response")?;
    if status(&h) != 403 || !says_close(&h) || !b.contains("mesh intentions") {
        return Err(format!("response: {h}\n{b}"));
    }
    let written = writer.join().map_err(|_| "writer panicked")?;
    let closed = closed_cleanly(&mut s, &pending);
    // The client may see EPIPE/reset on its writes only if the server reset the connection.
    written.map_err(|e| format!("writing the body failed: {e}"))?;
    closed
}

/// A small declared body whose rest comes after the drain bound: 403 with `Connection: close`
/// (sent when the bound passes), then a clean close once the client has sent the rest.
fn slow_body_round(upstream: SocketAddr) -> Result<Duration, String> {
    let mut s = TcpStream::connect(upstream).map_err(|e| e.to_string())?;
    s.write_all(b"POST /denied HTTP/1.1\r\nHost: db\r\nContent-Length: 10\r\n\r\n01234")
        .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let mut pending = Vec::new();
    let (h, _) = read_response(&mut s, &mut pending).ok_or("no response")?;
    let took = sent.elapsed();
    if status(&h) != 403 || !says_close(&h) {
        return Err(format!("response: {h}"));
    }
    s.write_all(b"56789").map_err(|e| e.to_string())?;
    closed_cleanly(&mut s, &pending)?;
    Ok(took)
}

#[test]
fn denied_bodies_keep_or_announce_the_connection_http1() {
    let (app, chain) = chain(false);
    chain.wait_status("/ok/ready", 200);
    let up = chain.upstream;

    for round in 0..ROUNDS {
        small_body_split_round(up, round).unwrap_or_else(|e| {
            panic!(
                "small split body, round {round}: {e}\n--- db log ---\n{}",
                chain.db.log()
            )
        });
    }
    for round in 0..ROUNDS {
        for chunked in [false, true] {
            large_body_round(up, chunked).unwrap_or_else(|e| {
                panic!(
                    "large body (chunked: {chunked}), round {round}: {e}\n--- db log ---\n{}",
                    chain.db.log()
                )
            });
        }
    }
    let took = slow_body_round(up)
        .unwrap_or_else(|e| panic!("slow body: {e}\n--- db log ---\n{}", chain.db.log()));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "the 403 to a stalled body came after {took:?}, not at the 1 s drain bound"
    );
    // None of the denied bodies reached the application.
    assert!(
        app.seen.requests().iter().all(|r| !r.contains("/denied")),
        "{:?}",
        app.seen.requests()
    );

    // Python's http.client: keep-alive, reconnects on its own only after `Connection: close`.
    // 4000 bytes are drained (same connection), 200 KiB get the close (a new connection).
    let script = r#"
import http.client, sys
host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection(host, port, timeout=20)
fails, reused, reconnected = 0, 0, 0
for i in range(rounds):
    for size in (4000, 200 * 1024):
        try:
            conn.request("POST", "/denied", body=b"x" * size)
            r = conn.getresponse(); r.read()
            assert r.status == 403, r.status
            close = (r.getheader("Connection") or "").lower() == "close"
            sock_before = conn.sock
            conn.request("GET", "/ok/py-%d-%d" % (i, size))
            r2 = conn.getresponse(); body = r2.read()
            assert r2.status == 200, (r2.status, body)
            if close:
                reconnected += 1
            elif conn.sock is sock_before:
                reused += 1
            assert close == (size > 64 * 1024), (size, close)
        except Exception as e:
            fails += 1
            print("round %d size %d: %r" % (i, size, e), file=sys.stderr)
            conn.close()
print("fails=%d reused=%d reconnected=%d" % (fails, reused, reconnected))
sys.exit(1 if fails else 0)
"#;
    let out = mesh_tests::python::run_bounded(
        Command::new(mesh_tests::python::base_python())
            .args(["-c", script])
            .arg(up.ip().to_string())
            .arg(up.port().to_string())
            .arg(ROUNDS.to_string()),
        Duration::from_secs(120),
    )
    .expect("run python3");
    assert!(
        out.success(),
        "python http.client: {}\n{}\n--- db log ---\n{}",
        out.describe(),
        out.text(),
        chain.db.log()
    );
    assert_eq!(
        out.stdout.trim(),
        format!("fails=0 reused={ROUNDS} reconnected={ROUNDS}"),
        "{}",
        out.text()
    );

    // curl with two URLs on one command line reuses the connection after a drained 403
    // (num_connects 0 for the second transfer) and opens a new one after `Connection: close`.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let large = dir.path().join("large");
    std::fs::write(&small, vec![b's'; 2000]).unwrap();
    std::fs::write(&large, vec![b'l'; 300 * 1024]).unwrap();
    for round in 0..ROUNDS {
        for (file, want) in [(&small, "403 1\n200 0\n"), (&large, "403 1\n200 1\n")] {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "-H", "Expect:"])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()))
                .args(["-o", "/dev/null", "-o", "/dev/null"])
                .args(["-w", "%{http_code} %{num_connects}\n"])
                .args([
                    chain.url("/denied"),
                    chain.url(&format!("/ok/curl-{round}")),
                ])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                want,
                "curl round {round} with {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_denied_http2_stream_with_a_body_leaves_the_other_streams_alone() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let (_app, chain) = chain(true);
    crate::curl(&["--http2-prior-knowledge", &chain.url("/ok/warm")]);
    mesh_tests::process::eventually("h2 allowed", Duration::from_secs(20), || {
        (crate::curl(&["--http2-prior-knowledge", &chain.url("/ok/warm")]).status == 200)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(chain.upstream)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;
        let get = |path: String| {
            http::Request::get(format!("http://db{path}"))
                .body(StreamBody::new(tokio_stream::iter(Vec::<Chunk>::new())).boxed_unsync())
                .unwrap()
        };
        for round in 0..ROUNDS {
            // A denied upload that never finishes, with an allowed request beside it.
            let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
            tx.send(Ok(Frame::data(Bytes::from(vec![b'u'; 100 * 1024]))))
                .await
                .unwrap();
            let upload = http::Request::post("http://db/denied")
                .body(
                    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync(),
                )
                .unwrap();
            let denied = send.send_request(upload);
            let allowed = send.send_request(get(format!("/ok/h2-{round}")));
            let (denied, allowed) = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(denied, allowed)
            })
            .await
            .expect("both answered within 10 s");
            let denied = denied.expect("denied stream answered");
            assert_eq!(denied.status(), 403);
            let allowed = allowed.expect("allowed stream answered");
            assert_eq!(allowed.status(), 200);
            let body = allowed.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("ok GET /ok/h2-{round}\n"));
            // The rest of the upload after the 403: the stream is gone, the connection is not.
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"more")))).await;
            drop(tx);
            let after = tokio::time::timeout(
                Duration::from_secs(10),
                send.send_request(get(format!("/ok/h2-after-{round}"))),
            )
            .await
            .expect("answered within 10 s")
            .expect("the connection still serves new streams");
            assert_eq!(after.status(), 200);
        }
    });
}
