//! Acceptance: writes sent to followers are applied; SIGKILL the leader during a stream of
//! intention writes: a new leader is elected, every acknowledged write is present afterwards
//! and none is duplicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::process::{eventually, http};

use crate::{ProcCluster, put_intention};

#[test]
fn leader_kill_loses_no_acknowledged_write() {
    let mut c = ProcCluster::start(3).unwrap();
    let leader = c.wait_leader(None).unwrap();
    let leader_i = c.index_of(&leader);

    // Writes through a follower are applied.
    let follower_i = (leader_i + 1) % 3;
    assert_eq!(
        put_intention(
            c.servers[follower_i].http_addr,
            "via-follower",
            "db",
            "allow"
        )
        .unwrap(),
        200
    );

    let addrs: Vec<_> = c.servers.iter().map(|s| s.http_addr).collect();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicUsize::new(usize::MAX));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (acked, stop, seq, dead, addrs) = (
            acked.clone(),
            stop.clone(),
            seq.clone(),
            dead.clone(),
            addrs.clone(),
        );
        writers.push(std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: at most 5,000 attempts per writer and 60 s.
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let mut target = (w + n) % 3;
                if target == dead.load(Ordering::Relaxed) {
                    target = (target + 1) % 3;
                }
                let src = format!("w{n}");
                match put_intention(addrs[target], &src, "db", "allow") {
                    Ok(200) => acked.lock().unwrap().push(src),
                    // Back off while there is no leader (an election takes a few seconds).
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }
    eventually("40 acknowledged writes", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 40).then_some(())
    })
    .unwrap();
    dead.store(leader_i, Ordering::Relaxed);
    c.servers[leader_i].kill();
    let at_kill = acked.lock().unwrap().len();

    let new_leader = c.wait_leader(Some(&leader)).unwrap();
    assert_ne!(new_leader, leader);
    eventually(
        "40 more acknowledged writes after the kill",
        Duration::from_secs(30),
        || (acked.lock().unwrap().len() >= at_kill + 40).then_some(()),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let survivor = c.servers[c.index_of(&new_leader)].http_addr;
    let list = http("GET", survivor, "/v1/connect/intentions", None).unwrap();
    assert_eq!(list.status, 200, "{}", list.body);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in list.json().unwrap().as_array().unwrap() {
        *counts
            .entry(i["SourceName"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let acked = acked.lock().unwrap().clone();
    for src in acked
        .iter()
        .chain(std::iter::once(&"via-follower".to_string()))
    {
        assert_eq!(
            counts.get(src),
            Some(&1),
            "acknowledged write {src} missing or duplicated"
        );
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "duplicate intentions: {counts:?}"
    );
    // Both survivors hold the same state.
    c.wait_converged().unwrap();
}
