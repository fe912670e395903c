//! Issue 14, acceptance 2, for agent-mode sidecars (no transparent mode): a client makes new
//! connections (well over 200/s) through web's upstream listener, web's proxy, mutual TLS and
//! db's proxy to the echo app, while 20 long-lived connections stream through the same path;
//! meanwhile db's and web's sidecars are each replaced 5 times, alternately. Each new
//! `meshproxy run --sidecar-for` takes the running one's listeners over (the public one for
//! db, the upstream one for web) and the old one drains: not one new connection may fail and
//! every stream must echo back exactly what it sent.

use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::load::{Load, assert_nothing_lost};
use mesh_tests::process::eventually;
use mesh_tests::sidecar::Proxy;

use super::harness::{Chain, meshd_dev};

const RESTARTS: usize = 5;
const LOAD_SECONDS: f64 = 12.0;

/// Starts the successor of `old` and waits until `old` has handed over and started draining.
fn replace(old: &Proxy, http: std::net::SocketAddr) -> Proxy {
    let next = Proxy::start(http, &old.name, &["--drain-timeout", "60s"]);
    assert!(
        next.log()
            .contains("received the listeners of the running proxy"),
        "{}",
        next.log()
    );
    eventually("the old sidecar drains", Duration::from_secs(10), || {
        old.log()
            .contains("a new proxy took over the listeners")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", old.log()));
    next
}

#[test]
fn sidecar_restarts_under_load_refuse_nothing_and_streams_complete() {
    let meshd = meshd_dev();
    let chain = Chain::start(meshd.http_addr);
    chain.allow(Duration::from_secs(15));
    let Chain {
        echo: _echo,
        db,
        web,
        upstream,
        http,
    } = chain;
    let mut load = Load::start(Command::new("python3"), upstream, LOAD_SECONDS, 20);
    let started = Instant::now();
    assert!(
        load.alone_for(Duration::from_secs(1)),
        "the load ended early"
    );
    let (mut db, mut web) = (db, web);
    let mut old = Vec::new();
    for _ in 0..RESTARTS {
        let next = replace(&db, http);
        old.push(std::mem::replace(&mut db, next));
        let next = replace(&web, http);
        old.push(std::mem::replace(&mut web, next));
    }
    assert!(
        started.elapsed() < Duration::from_secs_f64(LOAD_SECONDS),
        "the restarts took longer than the load ({:?})",
        started.elapsed()
    );
    let r = load.finish();
    println!("sidecar restarts under load: {r}");
    let context: String = old
        .iter()
        .chain([&db, &web])
        .map(|p| format!("\n--- {} ({}) ---\n{}", p.name, p.pid(), p.log()))
        .collect();
    assert_nothing_lost(&r, 200.0, 20, &context);
    for p in &mut old {
        assert!(
            p.wait_exit(Duration::from_secs(20)).is_some(),
            "an old sidecar still runs after its streams ended\n{}",
            p.log()
        );
    }
}
