//! `meshctl` against real servers: remove-peer, and clear one-line errors with non-zero exit
//! codes for an unreachable agent, an unknown peer and malformed input.

use std::time::Duration;

use mesh_tests::process::{eventually, free_port, meshctl};

use crate::ProcCluster;

#[test]
fn remove_peer_and_errors() {
    let mut c = ProcCluster::start(3).unwrap();
    let leader = c.wait_leader(None).unwrap();
    let victim = ["s1", "s2", "s3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let addr = c.servers[c.index_of(&leader)].http_addr.to_string();

    let out = meshctl(
        &addr,
        &["operator", "raft", "remove-peer", "--id", "no-such-server"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    let out = meshctl(&addr, &["operator", "raft", "remove-peer", "--id", victim]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let i = c.index_of(victim);
    c.servers[i].kill();
    let text = eventually(
        "list-peers without the removed server",
        Duration::from_secs(20),
        || {
            let out = meshctl(
                &addr,
                &["operator", "raft", "list-peers", "--format", "json"],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let names: Vec<&str> = v["Servers"]
                .as_array()?
                .iter()
                .filter_map(|s| s["Node"].as_str())
                .collect();
            (names.len() == 2 && !names.contains(&victim)).then(|| v.to_string())
        },
    )
    .unwrap();
    assert!(text.contains(&leader));

    // Two voters left still form a quorum: writes work.
    let out = meshctl(&addr, &["intention", "create", "--allow", "web", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = meshctl(&addr, &["intention", "create", "--allow", "web", "db"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "duplicate create without --replace must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = meshctl(&addr, &["intention", "check", "web", "db"]);
    assert_eq!(out.status.code(), Some(0));
    // The first line is the verdict (the explanation follows).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("Allowed")
    );
    let out = meshctl(&addr, &["intention", "check", "api", "db"]);
    assert_eq!(out.status.code(), Some(2), "default deny");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("Denied")
    );

    // Unreachable agent: one line, exit 1.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = meshctl(&dead, &["intention", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Malformed input: a usage error (clap exits 2) and a bad config file (exit 1).
    let out = meshctl(&addr, &["intention", "create", "web"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "{not json").unwrap();
    let out = meshctl(
        &addr,
        &[
            "connect",
            "ca",
            "set-config",
            "--config-file",
            bad.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    // An invalid intention is refused by the server with its reason (400).
    let out = meshctl(&addr, &["intention", "create", "--allow", "", "db"]);
    assert_eq!(out.status.code(), Some(1));
}
