//! Bytes through web's upstream listener → web proxy → mTLS → db proxy → db's echo server and
//! back, with half-close, over a config with a dead first address (failover).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::harness::{Pattern, StreamHash, roundtrip};
use crate::support::{Mesh, id};

#[test]
fn bytes_flow_both_ways_with_half_close() {
    let mesh = Mesh::start();

    // Small round trips: the dead first address is skipped whichever instance round-robin
    // starts with.
    for i in 0..4 {
        let msg = format!("hello {i}");
        let back = roundtrip(mesh.web_to_db, msg.as_bytes()).expect("roundtrip");
        assert_eq!(back, msg.as_bytes(), "round trip {i}");
    }

    // 8 MiB each way, written while the echo streams back; the client half-closes and still
    // reads everything, then the server's EOF.
    let mut s = TcpStream::connect(mesh.web_to_db).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let reader = {
        let mut r = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut h = StreamHash::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(h.finish()),
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
    };
    let (mut p, mut sent) = (Pattern::new(7), StreamHash::default());
    let mut chunk = vec![0u8; 256 * 1024];
    for _ in 0..32 {
        p.fill(&mut chunk);
        s.write_all(&chunk).unwrap();
        sent.update(&chunk);
    }
    s.shutdown(Shutdown::Write).unwrap();
    let got = reader.join().unwrap().expect("read until EOF");
    assert_eq!(got, sent.finish(), "echoed stream differs");
    assert_eq!(sent.finish().1, 8 << 20);

    // The admin API shows the static policy and the upstream's expected identity.
    let db = mesh.db.config();
    assert_eq!(db["Intentions"]["AllowedSources"][0], id("web"), "{db}");
    assert_eq!(db["Identity"]["SpiffeID"], id("db"));
    let web = mesh.web.config();
    assert_eq!(
        web["Upstreams"][0]["ExpectedServerIdentity"],
        id("db"),
        "{web}"
    );
    assert_eq!(
        web["Upstreams"][0]["Instances"].as_array().map(Vec::len),
        Some(2)
    );
}
