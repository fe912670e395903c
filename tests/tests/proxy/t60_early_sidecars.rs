//! Sidecars started in the first second of a control plane accept peers once allowed (issue 10
//! point 2).
//!
//! `meshd dev` used to print its ready line about half a second before its CA existed; a sidecar
//! started then got (and the agent cached, and the proxy kept) an intentions snapshot with an
//! empty trust domain and refused every peer as foreign until the intentions changed. Now the
//! line comes once the CA exists, the servers withhold the intentions topic until then, the
//! agent refuses to cache a snapshot without one, and the proxy recomputes its policy when
//! roots or intentions change. Each round starts a fresh control plane, two sidecars a varying
//! delay after it is ready (the delay is the variable under test, not a wait for something),
//! then writes the allow intention and measures how long until traffic passes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mesh_tests::process::{Meshd, eventually, free_port, server_args};

use crate::harness::{Echo, Proxy, meshd_dev, register, set_intention};

const ROUNDS: u32 = 20;
/// Allowed time from the allow intention's write to the first echoed byte.
const TRAFFIC_WITHIN: Duration = Duration::from_secs(2);

/// One echo through web's upstream listener; `Err` says what happened instead.
fn echo_once(upstream: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&upstream, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").map_err(|e| format!("write: {e}"))?;
    let mut got = [0u8; 4];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    (&got == b"ping")
        .then_some(())
        .ok_or_else(|| format!("echoed {got:?}"))
}

/// Registers db and web, starts both sidecars without waiting, then waits for both to be
/// ready and web to see db healthy; returns (db, web, upstream).
fn start_sidecars(http: SocketAddr, echo: &Echo) -> (Proxy, Proxy, SocketAddr) {
    let up = free_port();
    register(http, "db", echo.port(), free_port(), &[]);
    register(http, "web", free_port(), free_port(), &[("db", up)]);
    let db = Proxy::spawn(http, "db", &[]);
    let web = Proxy::spawn(http, "web", &[]);
    db.wait_ready();
    web.wait_ready();
    eventually("web sees a healthy db", Duration::from_secs(30), || {
        let n = web.config()["Upstreams"][0]["Instances"]
            .as_array()
            .map_or(0, Vec::len);
        (n > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n--- web log ---\n{}", web.log()));
    (db, web, format!("127.0.0.1:{up}").parse().unwrap())
}

/// Both proxies enforce the mesh's trust domain (the one of their own identity); traffic is
/// denied before the allow intention and passes within [`TRAFFIC_WITHIN`] after it. Returns
/// the time to the first echo.
fn allow_and_measure(http: SocketAddr, db: &Proxy, web: &Proxy, upstream: SocketAddr) -> Duration {
    for p in [db, web] {
        let c = p.config();
        let td = c["Intentions"]["TrustDomain"].as_str().unwrap_or_default();
        assert!(
            !td.is_empty() && Some(td) == c["Identity"]["TrustDomain"].as_str(),
            "{} proxy enforces trust domain {td:?}: {c}\n--- log ---\n{}",
            p.name,
            p.log()
        );
    }
    assert!(
        echo_once(upstream).is_err(),
        "default deny let traffic through"
    );
    set_intention(http, "web", "db", "allow");
    let written = Instant::now();
    let r = eventually("traffic after the allow intention", TRAFFIC_WITHIN, || {
        echo_once(upstream).ok()
    });
    let took = written.elapsed();
    if let Err(e) = r {
        panic!(
            "{e}\n--- db log ---\n{}\n--- web log ---\n{}",
            db.log(),
            web.log()
        );
    }
    took
}

#[test]
fn sidecars_started_right_after_dev_is_ready_accept_once_allowed() {
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        // 0, 52, 105, ... 1000 ms after the ready line: deterministic, spread over the window
        // in which the old ready line came before the CA.
        let delay = Duration::from_millis(u64::from(round) * 1000 / u64::from(ROUNDS - 1));
        let meshd = meshd_dev();
        let ready_at = Instant::now();
        let echo = Echo::start();
        let until = ready_at + delay;
        // The delay under test (not a wait for a condition): how long after the ready line
        // the sidecars start.
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let (db, web, upstream) = start_sidecars(meshd.http_addr, &echo);
        let took = allow_and_measure(meshd.http_addr, &db, &web, upstream);
        eprintln!(
            "round {round:2}: sidecars {:4} ms after ready, traffic {:4} ms after the allow",
            delay.as_millis(),
            took.as_millis()
        );
        times.push(took);
    }
    let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    eprintln!(
        "{ROUNDS} rounds: time to traffic min {} ms, max {} ms",
        min.as_millis(),
        max.as_millis()
    );
}

/// The same with `meshd server --bootstrap-expect 1`, whose `listening` line comes before it
/// has a leader or a CA: sidecars started at that line exercise the servers' withholding of
/// the intentions topic, the agent's 503 and the proxy's retries.
#[test]
fn sidecars_started_before_the_ca_exists_accept_once_allowed() {
    for round in 0..4u32 {
        let dir = mesh_tests::data_dir();
        let args = server_args("s1", dir.path(), free_port(), free_port(), 1, &[]);
        let server = Meshd::spawn("s1", &args).expect("meshd server starts");
        let echo = Echo::start();
        let (db, web, upstream) = start_sidecars(server.http_addr, &echo);
        let took = allow_and_measure(server.http_addr, &db, &web, upstream);
        eprintln!(
            "server round {round}: traffic {} ms after the allow",
            took.as_millis()
        );
    }
}
