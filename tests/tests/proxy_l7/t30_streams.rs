//! Byte-level behaviour of the HTTP/1.1 L7 path: a WebSocket-style upgrade becomes a tunnel,
//! a slow chunked upload streams through (the app sees the first chunk before the client has
//! sent the last), and a malformed request gets 400 without harming the proxy.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_tests::process::eventually;
use serde_json::json;

use crate::apps::HttpApp;
use crate::{L7Chain, curl, raw_exchange, read_until};

/// db's HTTP/1.1 app behind a chain that denies `/denied` and allows the rest.
fn allow_all() -> (HttpApp, L7Chain) {
    L7Chain::http1(
        json!([
            {"Action": "deny", "HTTP": {"PathPrefix": "/denied"}},
            {"Action": "allow", "HTTP": {"PathPrefix": "/"}},
        ]),
        "/",
    )
}

fn has(b: &[u8], s: &str) -> bool {
    String::from_utf8_lossy(b).contains(s)
}

#[test]
fn upgrade_tunnels_bytes_both_ways() {
    let (_app, chain) = allow_all();

    let mut s = TcpStream::connect(chain.upstream).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: db\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let head = read_until(&mut s, |b| has(b, "\r\n\r\n"));
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // After the switch the proxy copies raw bytes: several round trips on one connection.
    for msg in ["hello", "second message", "\u{1}binary\u{0}bytes"] {
        s.write_all(msg.as_bytes()).unwrap();
        let echoed = read_until(&mut s, |b| b.len() >= msg.len());
        assert_eq!(String::from_utf8_lossy(&echoed), msg);
    }

    // An upgrade to a denied path is refused like any request, and nothing is tunnelled.
    let got = raw_exchange(
        chain.upstream,
        b"GET /denied HTTP/1.1\r\nHost: db\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        |b| has(b, "mesh intentions"),
    );
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
}

#[test]
fn slow_upload_streams_and_malformed_requests_get_400() {
    let (app, chain) = allow_all();

    // Chunked upload: the first chunk must reach the app while the client still holds the
    // last one; a proxy that buffered the whole body would never let the app see it.
    let mut s = TcpStream::connect(chain.upstream).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: db\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .unwrap();
    eventually(
        "app sees the first chunk before the last is sent",
        Duration::from_secs(10),
        || app.seen.first_chunk.load(Ordering::SeqCst).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()));
    s.write_all(b"4\r\nlast\r\n0\r\n\r\n").unwrap();
    let got = read_until(&mut s, |b| has(b, "got 9"));
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("got 9"), "{got}");

    // Malformed header bytes: 400 from the proxy, never a crash.
    for raw in [
        &b"GET /x HTTP/1.1\r\nHost: db\r\nBad Header: 1\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: db\r\nX-Ctl: a\x01b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: db\r\n: no-name\r\n\r\n",
    ] {
        let got = raw_exchange(chain.upstream, raw, |b| has(b, "\r\n\r\n"));
        assert!(got.starts_with("HTTP/1.1 400"), "{raw:?}: {got:?}");
    }
    assert!(!app.seen.requests().iter().any(|l| l.contains("/x")));
    // ... and it keeps serving.
    let r = curl(&[&chain.url("/after")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(chain.db.log().lines().all(|l| !l.contains("panicked")));
}
