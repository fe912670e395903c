//! The control plane across a real network (issue 13 point 6): seven hosts, each its own
//! network namespace with its own address on one bridge the test creates (nothing touches
//! the root namespace). Three server hosts run `meshd server` on their addresses with mutual
//! TLS and ACLs; two client hosts run an agent that gets its certificate through
//! auto-encrypt, a sidecar and an echo app; two rogue hosts try to get in.
//!
//! One test, in steps, because the cluster is the expensive part:
//! 1. the apps on the two client hosts talk through the mesh; intentions written on one
//!    server take effect on both hosts (deny, then allow again);
//! 2. captures on every server and client link show no plaintext RPC: every TCP stream to or
//!    from the RPC port is TLS records from its SYN on (a handshake first), and marker strings
//!    planted in service names, service metadata and intention descriptions are nowhere on the
//!    wire except where Consul's data plane also sends them in clear: the SNI of the sidecars'
//!    ClientHello names the destination service (which proves the search finds the marker);
//! 3. SIGKILL of the leader's `meshd`: another leader within 5 s, new connections between the
//!    apps still work, every acknowledged intention write is there;
//! 4. the killed server restarts and catches up; a follower whose data directory is wiped
//!    rejoins and catches up;
//! 5. rogue hosts (plaintext, another CA) cannot join, write or get a certificate.
//!
//! Needs root (network namespaces, cgroups, `AF_PACKET`); CI runs as root.

mod rogue;
mod site;
mod wire;

use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::time::{Duration, Instant};

use mesh_tests::pod::{Capture, require_root};
use mesh_tests::process::eventually;

use site::{PUBLIC, RPC, SERVERS, Site};

fn random_hex() -> String {
    format!("{:016x}", RandomState::new().build_hasher().finish())
}

/// Prints how long the scene has run at each step (the suite's timings, with `--nocapture`).
fn step(start: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

#[test]
fn a_cluster_across_network_namespaces() {
    require_root().unwrap();
    let t0 = Instant::now();
    // Upper case in metadata and descriptions, lower case in service names; the wire is
    // searched ignoring case.
    let marker = format!("MARKER-{}", random_hex());
    let (svc_a, svc_b) = (
        format!("a-{}", marker.to_ascii_lowercase()),
        format!("b-{}", marker.to_ascii_lowercase()),
    );
    let mut site = Site::new();
    let links = ["s1", "s2", "s3", "c1", "c2"];
    let captures: Vec<Capture> = links
        .iter()
        .map(|h| Capture::start(site.lan.host(h)).unwrap())
        .collect();
    site.start_servers();
    step(t0, "servers up, ACLs bootstrapped");
    let a = site.client("c1", &svc_a, &svc_b, &marker);
    let b = site.client("c2", &svc_b, &svc_a, &marker);
    step(t0, "agents (auto-encrypt) and sidecars up");

    // 1. Through the mesh, across hosts; intentions from one server enforced on both hosts.
    for (src, dst) in [(&svc_a, &svc_b), (&svc_b, &svc_a)] {
        site.intention(0, src, dst, "allow", &marker);
    }
    a.wait_call(true, "a's app → b's app through both sidecars");
    b.wait_call(true, "b's app → a's app through both sidecars");
    assert!(b.app_seen().0 >= 1 && a.app_seen().0 >= 1);
    for (src, dst) in [(&svc_a, &svc_b), (&svc_b, &svc_a)] {
        site.intention(2, src, dst, "deny", &marker);
    }
    a.wait_call(false, "a → b refused by b's sidecar (deny written on s3)");
    b.wait_call(false, "b → a refused by a's sidecar (deny written on s3)");
    let seen = (a.app_seen(), b.app_seen());
    assert!(a.call(b"denied").is_empty() && b.call(b"denied").is_empty());
    assert_eq!(
        (a.app_seen(), b.app_seen()),
        seen,
        "a denied call reached an app"
    );
    for (src, dst) in [(&svc_a, &svc_b), (&svc_b, &svc_a)] {
        site.intention(1, src, dst, "allow", &marker);
    }
    a.wait_call(true, "a → b allowed again (allow written on s2)");
    b.wait_call(true, "b → a allowed again (allow written on s2)");
    step(t0, "1. mesh traffic across hosts, intentions on both hosts");

    // Acknowledged writes, spread over the servers, for step 3.
    for i in 0..10 {
        site.intention(i % 3, &format!("ack-{i}"), &svc_b, "deny", &marker);
    }

    // 2. The wire.
    let frames: Vec<Vec<Vec<u8>>> = captures.into_iter().map(Capture::finish).collect();
    for (link, frames) in links.iter().zip(&frames) {
        // The control plane: not a marker anywhere, except in the data plane (below).
        let leak = frames
            .iter()
            .filter(|f| !wire::on_port(f, PUBLIC))
            .find(|f| !wire::find_all(f, &marker).is_empty());
        assert!(
            leak.is_none(),
            "{marker} in plaintext on {link}'s link: {leak:?}"
        );
        let rpc = wire::streams(frames, RPC);
        assert!(!rpc.is_empty(), "no RPC connection captured on {link}");
        let mut app_data = 0;
        for (flow, bytes) in &rpc {
            let records = wire::tls_records(bytes);
            assert_eq!(records.not_tls, None, "not TLS on {link}: {flow:?}");
            let first = records.records.first().map(|(t, _)| *t);
            assert!(
                bytes.is_empty() || first == Some(22),
                "{flow:?} starts with {first:?}"
            );
            app_data += records.count(23);
        }
        assert!(app_data > 0, "no TLS application data on {link}");
        // The data plane (sidecar to sidecar) names the destination service in the SNI of its
        // ClientHello, as Consul's does (`<svc>.default.dc1.internal.<trust domain>`): there
        // and nowhere else. On the client links it is the proof that the search finds the
        // marker where it does cross in plaintext.
        let mut in_hello = 0;
        for (flow, bytes) in &wire::streams(frames, PUBLIC) {
            let records = wire::tls_records(bytes);
            assert_eq!(records.not_tls, None, "not TLS on {link}: {flow:?}");
            let hello = records.records.first().filter(|(t, _)| *t == 22);
            for at in wire::find_all(bytes, &marker) {
                assert!(
                    hello.is_some_and(|(_, r)| r.contains(&at)),
                    "{marker} outside a ClientHello on {link}: {flow:?} at {at}"
                );
                in_hello += 1;
            }
        }
        if link.starts_with('c') {
            assert!(
                in_hello > 0,
                "no ClientHello naming {marker} seen on {link}"
            );
        }
        eprintln!(
            "{link}: {} frames, {} RPC streams, {app_data} TLS application-data records",
            frames.len(),
            rpc.len()
        );
    }
    drop(frames);
    step(t0, "2. no plaintext RPC on any link");

    // 3. SIGKILL of the leader's meshd.
    let leader = site.leader();
    let before = site.intentions(leader).unwrap();
    assert_eq!(
        before.iter().filter(|i| i[0].starts_with("ack-")).count(),
        10
    );
    let old = site.servers[leader].rpc_addr().to_string();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let killed = Instant::now();
    site.servers[leader].meshd.as_mut().unwrap().kill();
    eventually(
        "a new leader on both survivors",
        Duration::from_secs(5),
        || {
            others
                .iter()
                .all(|&i| site.servers[i].leader().is_some_and(|l| l != old))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e} (killed {})", SERVERS[leader]));
    let failover = killed.elapsed();
    a.wait_call(true, "a → b after the leader died");
    b.wait_call(true, "b → a after the leader died");
    for &i in &others {
        site.wait_intentions(
            i,
            &before,
            "every acknowledged write",
            Duration::from_secs(10),
        );
    }
    step(
        t0,
        &format!(
            "3. new leader {failover:?} after SIGKILL of {}",
            SERVERS[leader]
        ),
    );

    // 4. The killed server comes back with its data; then a follower's data directory is
    // wiped, and it rejoins from nothing.
    site.servers[leader].start();
    let within = Duration::from_secs(30);
    site.wait_intentions(leader, &before, "the restarted server to catch up", within);
    // The wiped one: a follower that ran all along (not the one just restarted), stopped
    // (SIGTERM, a clean exit) before its data directory goes.
    let now = site.leader();
    let wiped = (0..3)
        .find(|i| *i != now && *i != leader)
        .or_else(|| (0..3).find(|i| *i != now))
        .unwrap();
    let stopping = Instant::now();
    let clean = site.servers[wiped].meshd.as_mut().unwrap().stop();
    assert!(
        clean,
        "{} did not stop cleanly in {:?}:\n{}",
        SERVERS[wiped],
        stopping.elapsed(),
        site.servers[wiped].logs()
    );
    std::fs::remove_dir_all(&site.servers[wiped].data).unwrap();
    site.servers[wiped].start();
    site.wait_intentions(wiped, &before, "the wiped server to catch up", within);
    for (i, name) in SERVERS.iter().enumerate() {
        assert_eq!(site.peers(i).len(), 3, "{name} peers");
    }
    step(
        t0,
        &format!(
            "4. {} restarted, {} wiped: caught up",
            SERVERS[leader], SERVERS[wiped]
        ),
    );

    // 5. Rogue hosts.
    rogue::rogues_cannot_join_write_or_get_a_certificate(&site);
    step(t0, "5. rogues refused");

    // Nothing is left behind: every namespace and cgroup the test made is gone.
    let made = site.lan.paths();
    drop((a, b));
    drop(site);
    let left: Vec<_> = made.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
