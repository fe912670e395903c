//! Readiness (issue 10 point 2): `meshd dev` says it is ready (its `listening` and `ready`
//! lines) in under 2 s, and at that moment, without waiting, the CA exists, `/v1/status/leader`
//! answers and the agent's intentions carry the trust domain. A `meshd server` says
//! `listening` at once (its peers need its ports) and `ready` only once its cluster has a
//! leader and a CA; until then `/v1/status/leader` answers `""`.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mesh_tests::dev::dev_args;
use mesh_tests::process::{Meshd, bin, free_port, http, kill_and_reap, meshd_command, server_args};

#[test]
fn dev_is_ready_in_under_two_seconds_with_its_ca() {
    // Build first: the clock starts when the process is launched.
    bin("meshd");
    let started = Instant::now();
    let dev = Meshd::spawn("dev", &dev_args()).unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "meshd dev took {took:?} to be ready"
    );
    // Everything a sidecar needs is there the moment the line is out: no waiting below.
    let roots = http("GET", dev.http_addr, "/v1/agent/connect/ca/roots", None)
        .unwrap()
        .json()
        .unwrap();
    assert!(
        roots["ActiveRootID"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{roots}"
    );
    let td = roots["TrustDomain"].as_str().unwrap().to_string();
    assert!(td.ends_with(".consul"), "{roots}");
    let leader = http("GET", dev.http_addr, "/v1/status/leader", None)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(leader.as_str(), Some(dev.rpc_addr.to_string().as_str()));
    let intentions = http(
        "GET",
        dev.http_addr,
        "/v1/agent/connect/intentions/db",
        None,
    )
    .unwrap();
    assert_eq!(intentions.status, 200, "{}", intentions.body);
    assert_eq!(intentions.json().unwrap()["TrustDomain"], td.as_str());
}

/// A `meshd server` whose stdout lines are read one by one.
struct Lines {
    child: Child,
    rx: Receiver<String>,
}

impl Lines {
    fn spawn(args: &[String]) -> Self {
        let mut child = meshd_command(args).spawn().expect("spawn meshd");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Ends at the child's exit (EOF).
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, rx }
    }

    fn next(&self, within: Duration) -> Option<String> {
        self.rx.recv_timeout(within).ok()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

#[test]
fn a_cluster_server_is_listening_at_once_and_ready_with_its_cluster() {
    let dirs = [mesh_tests::data_dir(), mesh_tests::data_dir()];
    let rpc = [free_port(), free_port()];
    let web = [free_port(), free_port()];
    let args = |i: usize| {
        server_args(
            &format!("s{}", i + 1),
            dirs[i].path(),
            rpc[i],
            web[i],
            2,
            &[rpc[1 - i]],
        )
    };
    let s1 = Lines::spawn(&args(0));
    let line = s1.next(Duration::from_secs(30)).expect("s1 listening line");
    assert!(
        line.contains(" listening ") && line.contains("rpc="),
        "{line}"
    );
    // Alone, s1 cannot form its cluster: not ready, no leader reported, no `ready` line.
    let http_addr = format!("127.0.0.1:{}", web[0]).parse().unwrap();
    let leader = http("GET", http_addr, "/v1/status/leader", None).unwrap();
    assert_eq!(leader.json().unwrap(), "", "{}", leader.body);
    assert!(
        s1.next(Duration::from_millis(500)).is_none(),
        "s1 said more than listening before its peer came"
    );

    let s2 = Lines::spawn(&args(1));
    let line = s2.next(Duration::from_secs(30)).expect("s2 listening line");
    assert!(line.contains(" listening "), "{line}");
    for (name, s) in [("s1", &s1), ("s2", &s2)] {
        let ready = s
            .next(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{name} never said ready"));
        assert!(ready.contains(" ready "), "{ready}");
        let td = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("trust_domain="))
            .unwrap_or_else(|| panic!("no trust domain in {ready:?}"));
        assert!(td.ends_with(".consul"), "{ready}");
    }
    let leader = http("GET", http_addr, "/v1/status/leader", None).unwrap();
    let leader = leader.json().unwrap();
    assert!(
        rpc.iter()
            .any(|p| leader.as_str() == Some(format!("127.0.0.1:{p}").as_str())),
        "{leader}"
    );
}
