//! Acceptance: stop every server and restart them: the replicated state is identical
//! (compared by state digest), and the cluster serves writes again.

use std::time::Duration;

use mesh_tests::process::{Meshd, eventually, http};

use crate::{ProcCluster, put_intention};

#[test]
fn full_restart_keeps_identical_state() {
    let mut c = ProcCluster::start(3).unwrap();
    let a = c.servers[0].http_addr;
    for i in 0..30 {
        assert_eq!(
            put_intention(a, &format!("svc{i}"), "db", "allow").unwrap(),
            200
        );
    }
    let reg = r#"{"Node":"n1","Address":"127.0.0.1","Service":{"Service":"web","Port":8080}}"#;
    let r = http("PUT", a, "/v1/catalog/register", Some(reg)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http("PUT", c.servers[1].http_addr, "/v1/connect/ca/rotate", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Each server's embedded agent registers its own node: the state is at rest only once
    // all three have (otherwise a late registration lands after `before`).
    eventually(
        "every server's node in the catalog",
        Duration::from_secs(20),
        || {
            let r = http("GET", a, "/v1/catalog/nodes", None).ok()?;
            let nodes: serde_json::Value = r.json().ok()?;
            let names: Vec<&str> = nodes
                .as_array()?
                .iter()
                .filter_map(|n| n["Node"].as_str())
                .collect();
            ["s1", "s2", "s3"]
                .iter()
                .all(|s| names.contains(s))
                .then_some(())
        },
    )
    .unwrap();
    let before = c.wait_converged().unwrap();

    for s in &mut c.servers {
        assert!(s.stop(), "{} did not exit cleanly on SIGTERM", s.name);
    }
    let mut restarted = Vec::new();
    for s in &c.servers {
        restarted.push(Meshd::spawn(&s.name, &s.args).unwrap());
    }
    c.servers = restarted;
    c.wait_leader(None).unwrap();
    let after = c.wait_converged().unwrap();
    assert_eq!(before, after, "state changed across a full restart");
    // Each server individually, from its own state.
    for i in 0..3 {
        assert_eq!(c.digest(i).as_deref(), Some(before.as_str()));
    }
    // And the cluster still takes writes.
    let status = eventually("a write after restart", Duration::from_secs(20), || {
        put_intention(c.servers[2].http_addr, "after", "db", "deny")
            .ok()
            .filter(|s| *s == 200)
    })
    .unwrap();
    assert_eq!(status, 200);
}
