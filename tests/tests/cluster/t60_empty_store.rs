//! A server whose `raft.redb` was truncated to nothing (a full disk, a bad restore) must not
//! start a new cluster with a new trust domain over it (issue 13 point 4): `meshd server`
//! exits non-zero at once, saying what is wrong and what to do, and leaves the file alone.

use mesh_tests::process::{free_port, meshd_refused, server_args};

#[test]
fn an_empty_store_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("s1");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("raft.redb"), b"").unwrap();

    let args = server_args("s1", &data, free_port(), free_port(), 1, &[]);
    let stderr = meshd_refused(&args);
    assert!(
        stderr.contains("is empty") && stderr.contains("refusing to start a new cluster"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::metadata(data.join("raft.redb")).unwrap().len(), 0);
}
