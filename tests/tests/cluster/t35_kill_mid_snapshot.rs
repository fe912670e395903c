//! A server SIGKILLed while it writes, snapshotting every few entries (so some kills land while
//! the snapshot file is replaced or the log purged behind it), restarts from what is on disk
//! with every acknowledged write, several times over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::process::{Meshd, eventually, free_port, http, server_args};

use crate::{put_intention, wait_active_root};

/// Acknowledged writes to wait for before each kill (cumulative).
const KILL_AFTER: [usize; 3] = [15, 40, 70];

#[test]
fn kill_9_while_snapshotting_loses_no_acknowledged_write() {
    let dir = mesh_tests::data_dir();
    let mut args = server_args("s1", dir.path(), free_port(), free_port(), 1, &[]);
    args.extend(["--snapshot-threshold".to_string(), "3".to_string()]);
    let mut server = Meshd::spawn("s1", &args).unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for (round, &target) in KILL_AFTER.iter().enumerate() {
        wait_active_root(server.http_addr).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), server.http_addr);
            std::thread::spawn(move || {
                let started = Instant::now();
                // Bounded: 2,000 attempts or 60 s; stops at the first failure (the kill).
                for n in 0..2_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let src = format!("r{round}-w{n}");
                    match put_intention(addr, &src, "db", "allow") {
                        Ok(200) => acked.lock().unwrap().push(src),
                        _ => break,
                    }
                }
            })
        };
        eventually("acknowledged writes", Duration::from_secs(60), || {
            (acked.lock().unwrap().len() >= target).then_some(())
        })
        .unwrap();
        server.kill();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            dir.path().join("raft.snapshot").exists(),
            "round {round}: a snapshot file after {target} writes"
        );
        server = Meshd::spawn("s1", &args).unwrap_or_else(|e| panic!("round {round}: {e:#}"));
    }
    let want = acked.lock().unwrap().clone();
    let got: Vec<String> = eventually(
        "the intentions after restart",
        Duration::from_secs(30),
        || {
            let r = http("GET", server.http_addr, "/v1/connect/intentions", None).ok()?;
            let list: serde_json::Value = (r.status == 200).then(|| r.json().ok())??;
            Some(
                list.as_array()?
                    .iter()
                    .filter_map(|i| i["SourceName"].as_str().map(str::to_owned))
                    .collect(),
            )
        },
    )
    .unwrap();
    let missing: Vec<&String> = want.iter().filter(|s| !got.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {missing:?}",
        missing.len(),
        want.len()
    );
}
