//! A server whose `raft.redb` was truncated to nothing (a full disk, a bad restore), cut
//! short, damaged or removed must not start a new cluster with a new trust domain over it
//! (issue 13 point 4): `meshd server` exits non-zero at once, saying what is wrong and what to
//! do, without a panic, and leaves the file alone; with the file restored, the server comes
//! back in its cluster, trust domain unchanged.

use std::os::unix::fs::PermissionsExt;

use mesh_tests::process::{free_port, meshd_refused, server_args};

use crate::ProcCluster;

#[test]
fn an_empty_store_is_refused_at_start() {
    let dir = mesh_tests::data_dir();
    let data = dir.path();
    // Private, as the server keeps it: the mode is not what is wrong here.
    mesh_control::data_dir::create_file(&data.join("raft.redb")).unwrap();

    let args = server_args("s1", data, free_port(), free_port(), 1, &[]);
    let stderr = meshd_refused(&args);
    assert!(
        stderr.contains("is empty") && stderr.contains("refusing to start a new cluster"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::metadata(data.join("raft.redb")).unwrap().len(), 0);
}

#[test]
fn a_truncated_damaged_or_removed_store_is_refused_and_the_cluster_survives_its_restore() {
    let mut c = ProcCluster::start(1).unwrap();
    let trust_domain = c.trust_domain(0).unwrap();
    c.stop(0);
    let store = c.dirs[0].path().join("raft.redb");
    let good = std::fs::read(&store).unwrap();
    let mut damaged = good.clone();
    damaged[..64].iter_mut().for_each(|b| *b ^= 0xa5);
    let cases = [
        (
            "truncated",
            Some(good[..good.len() / 2].to_vec()),
            "is damaged (File truncated",
        ),
        ("cut to a header", Some(good[..512].to_vec()), "is damaged"),
        ("damaged", Some(damaged), "is damaged (Not a redb database"),
        ("removed", None, "is missing"),
    ];
    for (what, bytes, says) in cases {
        match &bytes {
            Some(b) => std::fs::write(&store, b).unwrap(),
            None => std::fs::remove_file(&store).unwrap(),
        }
        let stderr = meshd_refused(&c.servers[0].args);
        assert!(
            stderr.contains(says)
                && stderr.contains(&store.display().to_string())
                && stderr.contains("refusing to start a new cluster")
                && stderr.contains("restore the data directory from a backup"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(std::fs::read(&store).ok(), bytes, "{what}: left as it was");
    }

    // Restored (as a backup would be: private).
    std::fs::write(&store, &good).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.restart(0);
    c.wait_leader(None).unwrap();
    assert_eq!(c.trust_domain(0).unwrap(), trust_domain);
}
