//! Issue 14, acceptance 2: restarts under load lose nothing. An unmodified client in pod A
//! opens new connections to B's app (well over 200/s, each one a full mutual-TLS chain
//! through both proxies) while 20 long-lived connections stream through them; meanwhile B's
//! proxy is replaced 5 times in a row (each new `meshproxy run` takes the listeners over from
//! the running one, which then drains). Not one new connection may be refused or reset, and
//! every long-lived one must echo back exactly what it sent (SHA-256).

use std::time::{Duration, Instant};

use mesh_tests::load::{Load, assert_nothing_lost};

use crate::harness::*;

const APP_PORT: u16 = 8080;
const RESTARTS: usize = 5;
/// How long the load runs: enough for 5 restarts (each new proxy is ready in well under a
/// second) with load before, between and after them.
const LOAD_SECONDS: f64 = 12.0;

#[test]
fn five_restarts_under_load_refuse_nothing_and_streams_complete() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http) = (&scene.pods, scene.http);
    let flags = ["--drain-timeout", "60s"];
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &flags);
    let mut proxies_b = vec![Proxy::start(http, "svc-b", &pods.b, &flags)];
    let dst = pods.b.addr(APP_PORT);
    assert_echoed(&client(&pods.a, dst, "warm"), "warm", &[&proxy_a]);

    let mut load = Load::start(
        pods.a.command("python3").expect("command in pod"),
        dst,
        LOAD_SECONDS,
        20,
    );
    let started = Instant::now();
    // Load alone for a moment, then the restarts, each once the previous proxy serves.
    let mut took = Vec::new();
    assert!(
        load.alone_for(Duration::from_secs(1)),
        "the load ended early"
    );
    for _ in 0..RESTARTS {
        let t = Instant::now();
        let next = Proxy::start(http, "svc-b", &pods.b, &flags);
        took.push(t.elapsed());
        let prev = proxies_b.last().unwrap();
        assert!(
            next.log()
                .contains("received the listeners of the running proxy"),
            "{}",
            next.log()
        );
        // The predecessor drains (it was told once the new one served).
        mesh_tests::process::eventually("the old proxy drains", Duration::from_secs(10), || {
            prev.log()
                .contains("a new proxy took over the listeners")
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", prev.log()));
        proxies_b.push(next);
    }
    assert!(
        started.elapsed() < Duration::from_secs_f64(LOAD_SECONDS),
        "restarts took too long ({took:?}) to all fall within the load"
    );
    let r = load.finish();
    let b_logs: Vec<&Proxy> = proxies_b.iter().collect();
    println!("restart under load: {r} (restarts ready after {took:?})");
    assert_nothing_lost(&r, 200.0, 20, &logs(&b_logs));
    // Each old proxy exits once its last stream has ended.
    for p in &mut proxies_b[..RESTARTS] {
        p.wait_exit(Duration::from_secs(20));
    }
}
