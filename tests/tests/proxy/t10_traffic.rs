//! Bytes through web → web's proxy → mTLS → db's proxy → echo, both ways, with half-close and a
//! 1 GiB transfer checked by hash (issue #4, acceptance 1); SIGTERM drains a live connection.
//!
//! The 1 GiB is echoed, so 2 GiB cross both proxies. It stays fast in the dev profile because
//! the root `Cargo.toml` optimizes meshproxy and its TLS stack even in dev builds, and because
//! the test's own side does no per-byte work in unoptimized code: the payload is slices of one
//! pseudo-random block picked by a cheap PRNG, hashed with std's SipHash (compiled optimized).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use mesh_tests::process::eventually;

use super::harness::{Chain, Pattern, StreamHash, meshd_dev, roundtrip, set_intention};

/// Bytes echoed through the chain: the acceptance's 1 GiB.
const TOTAL: usize = 1 << 30;
/// Size of each write.
const CHUNK: usize = 256 * 1024;
/// The block the chunks are cut from.
const BLOCK: usize = 4 << 20;

/// The payload: `TOTAL / CHUNK` chunks, each a slice of one pseudo-random block at an offset
/// from a xorshift PRNG (so consecutive chunks differ and a reordered, dropped or repeated
/// chunk changes the hash), written with `send` as it is produced.
fn payload(seed: u64, mut send: impl FnMut(&[u8])) {
    let mut block = vec![0u8; BLOCK];
    Pattern::new(seed).fill(&mut block);
    let mut x = seed | 1;
    for _ in 0..TOTAL / CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (BLOCK - CHUNK) as u64) as usize;
        send(&block[off..off + CHUNK]);
    }
}

#[test]
fn allowed_traffic_flows_both_ways_with_half_close_and_large_transfer() {
    let meshd = meshd_dev();
    let chain = Chain::start(meshd.http_addr);
    set_intention(meshd.http_addr, "web", "db", "allow");

    // The allow reaches db's proxy through its blocking query: poll until a connection passes.
    eventually("allowed connection echoes", Duration::from_secs(15), || {
        roundtrip(chain.upstream, b"hello")
            .ok()
            .filter(|b| b == b"hello")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n--- db ---\n{}\n--- web ---\n{}",
            chain.db.log(),
            chain.web.log()
        )
    });

    // Half-close: the client shuts down its write side after the request and still reads the
    // whole echo, sent by the app after it saw EOF.
    let mut s = TcpStream::connect(chain.upstream).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"first part, ").unwrap();
    s.write_all(b"second part").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).unwrap();
    assert_eq!(back, "first part, second part");

    // Interactive exchange on one connection (request/response, no half-close in between).
    let mut s = TcpStream::connect(chain.upstream).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..20 {
        let msg = format!("ping {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    drop(s);

    // 1 GiB each way, written and read concurrently, compared by hash and length.
    let started = Instant::now();
    let mut s = TcpStream::connect(chain.upstream).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut h = StreamHash::default();
        payload(42, |chunk| {
            w.write_all(chunk).unwrap();
            h.update(chunk);
        });
        w.shutdown(Shutdown::Write).unwrap();
        h.finish()
    });
    let mut h = StreamHash::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sent = writer.join().unwrap();
    let took = started.elapsed();
    assert_eq!(h.finish(), sent, "echoed stream differs from what was sent");
    assert_eq!(sent.1, TOTAL as u64);
    eprintln!(
        "1 GiB echoed through the chain in {took:?} ({:.0} MiB/s each way)",
        1024.0 / took.as_secs_f64()
    );

    // Metrics saw it: bytes on both proxies, handshakes, an allow decision on db.
    let db_in = chain.db.metric(
        "meshproxy_bytes_total",
        &["direction=\"inbound\"", "flow=\"client_to_server\""],
    );
    assert!(db_in >= TOTAL as f64, "db inbound bytes {db_in}");
    assert!(
        chain.db.metric(
            "meshproxy_authorization_decisions_total",
            &["decision=\"allow\"", "reason=\"intention_allow\""]
        ) >= 1.0
    );
    assert!(
        chain
            .web
            .metric("meshproxy_tls_handshake_seconds_count", &["outbound"])
            >= 1.0
    );
    assert!(chain.db.metrics().contains("meshproxy_leaf_expiry_seconds"));
    // The admin view never carries key material.
    let cfg = chain.db.config().to_string();
    assert!(!cfg.contains("PRIVATE KEY"), "{cfg}");
}

#[test]
fn sigterm_drains_live_connections_then_exits() {
    let meshd = meshd_dev();
    let mut chain = Chain::start(meshd.http_addr);
    chain.allow(Duration::from_secs(15));

    // A live connection through web's proxy, then SIGTERM to web's proxy.
    let mut s = chain.live_connection(b"before", Duration::from_secs(10));
    let mut buf = [0u8; 6];
    let pid = chain.web.pid();
    let term = std::thread::spawn(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    });
    term.join().unwrap();
    // New connections are refused once the listener is closed...
    eventually("upstream listener closed", Duration::from_secs(5), || {
        TcpStream::connect(chain.upstream).is_err().then_some(())
    })
    .unwrap();
    // ...while the live one keeps working until it ends.
    s.write_all(b"during").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"during");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let (ok, took) = chain.web.terminate(Duration::from_secs(10));
    assert!(ok, "clean exit after drain");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        chain.web.log().contains("drained; exiting"),
        "{}",
        chain.web.log()
    );
}
