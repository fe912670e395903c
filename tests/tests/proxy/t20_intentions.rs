//! Intentions enforced by db's proxy: default deny and explicit deny keep every byte from the
//! application; an allow lets the next connection through; deleting it closes a live one.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mesh_tests::process::eventually;

use super::harness::{Chain, delete_intention, meshd_dev, roundtrip, set_intention};

/// A connection through web's upstream that the far side refuses: nothing echoes back.
fn assert_refused(chain: &Chain, what: &str) {
    let back = roundtrip(chain.upstream, b"must not arrive").unwrap_or_default();
    assert!(back.is_empty(), "{what}: got {back:?} back");
}

#[test]
fn denied_connections_never_reach_the_app_and_allow_lets_the_next_one_through() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let chain = Chain::start(http);

    // No intention: the default policy (deny) decides.
    for _ in 0..3 {
        assert_refused(&chain, "default deny");
    }
    let line = eventually("db logs the denial", Duration::from_secs(5), || {
        chain
            .db
            .log()
            .lines()
            .find(|l| l.contains("inbound connection denied"))
            .map(str::to_string)
    })
    .unwrap();
    assert!(line.contains("/svc/web"), "names the source: {line}");
    assert!(
        line.contains("destination=db"),
        "names the destination: {line}"
    );
    assert!(
        line.contains("default policy (deny)"),
        "names the reason: {line}"
    );
    assert_eq!(chain.echo.seen(), (0, 0), "the app saw something");

    // An explicit deny intention.
    set_intention(http, "web", "db", "deny");
    eventually(
        "db logs the deny intention",
        Duration::from_secs(10),
        || {
            assert_refused(&chain, "deny intention");
            chain
                .db
                .log()
                .contains("Matched L4 intention \"web\" => \"db\" (deny")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()));
    assert_eq!(chain.echo.seen(), (0, 0), "the app saw something");
    assert!(
        chain.db.metric(
            "meshproxy_authorization_decisions_total",
            &["decision=\"deny\"", "reason=\"intention_deny\""]
        ) >= 1.0
    );

    // Allow: the next connection goes through.
    set_intention(http, "web", "db", "allow");
    eventually("allowed connection echoes", Duration::from_secs(10), || {
        roundtrip(chain.upstream, b"now allowed")
            .ok()
            .filter(|b| b == b"now allowed")
    })
    .unwrap();
    assert!(chain.echo.seen().0 >= 1);
}

#[test]
fn deleting_the_allow_closes_a_live_connection() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let chain = Chain::start(http);
    chain.allow(Duration::from_secs(10));
    let mut live = chain.live_connection(b"ping", Duration::from_secs(5));

    let deleted = Instant::now();
    delete_intention(http, "web", "db");
    // The connection is closed by db's proxy: EOF or reset, not a read timeout.
    let mut one = [0u8; 1];
    let closed = match live.read(&mut one) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    let took = deleted.elapsed();
    assert!(closed, "live connection still open after {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    let log = chain.db.log();
    assert!(
        log.lines().any(|l| l.contains("closing live connection")
            && l.contains("/svc/web")
            && l.contains("default policy (deny)")),
        "{log}"
    );
    eprintln!("live connection closed {took:?} after the intention was deleted");
    // And new connections are refused again.
    assert!(
        roundtrip(chain.upstream, b"y")
            .unwrap_or_default()
            .is_empty()
    );
}

#[test]
fn keep_denied_connections_flag_keeps_them() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let chain = Chain::start_with(http, &["--keep-denied-connections"]);
    chain.allow(Duration::from_secs(10));
    let mut live = chain.live_connection(b"ping", Duration::from_secs(5));
    let mut buf = [0u8; 4];
    delete_intention(http, "web", "db");
    eventually(
        "db reports the kept connection",
        Duration::from_secs(5),
        || {
            chain
                .db
                .log()
                .contains("keeping it open (--keep-denied-connections)")
                .then_some(())
        },
    )
    .unwrap();
    live.write_all(b"pong").unwrap();
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong", "the live connection still works");
}
