//! `--encrypt-key-file` (issue 13 point 4): with a key, CA private keys are sealed before they
//! enter the Raft log and snapshots, so the store (`raft.redb`, `raft.snapshot`) holds no
//! `PRIVATE KEY` (also after a rotation and a snapshot); a server restarted with another key,
//! with none, or with a key file others can read refuses to start with a message that says what
//! to do (and never the key);
//! a new server with another key (or none) refuses to form a cluster with one that has it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_tests::process::{
    Meshd, bin, eventually, free_port, http, meshd_refused, server_args, stdout_ok,
};

use super::wait_active_root;

/// `meshctl keygen -out <dir>/<name>`: a new key file, which must be 0600.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = std::process::Command::new(bin("meshctl"))
        .args(["keygen", "-out"])
        .arg(&path)
        .output()
        .unwrap();
    stdout_ok(&out, "meshctl keygen -out");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    path
}

/// `server_args` for a one-server cluster, with `--encrypt-key-file key` when given.
fn args_with_key(
    name: &str,
    data: &Path,
    rpc: u16,
    web: u16,
    expect: usize,
    join: &[u16],
    key: Option<&Path>,
) -> Vec<String> {
    let mut a = server_args(name, data, rpc, web, expect, join);
    // Snapshot (and compact) after a few entries, so the snapshot holds the roots too.
    a.extend(["--snapshot-threshold".to_string(), "3".to_string()]);
    if let Some(k) = key {
        a.extend(["--encrypt-key-file".to_string(), k.display().to_string()]);
    }
    a
}

/// How many times `needle` occurs in the bytes of `file` (what `strings | grep -c` counts, at
/// least); none in a file that does not exist (no snapshot taken yet).
fn occurrences(file: &Path, needle: &str) -> usize {
    let bytes = std::fs::read(file).unwrap_or_default();
    bytes
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// Rotates the CA of the server `s` and waits for a leaf from the new root (signing opens the
/// sealed key in memory); the new root's ID.
fn rotate_and_sign(s: &Meshd) -> String {
    let first = wait_active_root(s.http_addr).unwrap();
    let r = http("PUT", s.http_addr, "/v1/connect/ca/rotate", Some("")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let second = wait_active_root(s.http_addr).unwrap();
    assert_ne!(first, second);
    let leaf = eventually(
        "a leaf from the rotated root",
        Duration::from_secs(30),
        || {
            let r = http("GET", s.http_addr, "/v1/agent/connect/ca/leaf/web", None).ok()?;
            let v = r.json().ok()?;
            (v["RootID"].as_str()? == second).then_some(v)
        },
    )
    .unwrap();
    assert!(
        leaf["CertPEM"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    second
}

/// The server's store (the log's `raft.redb` and the snapshot's `raft.snapshot`) in `data`
/// holds no CA key in clear and at least `sealed` sealed ones.
fn assert_sealed(data: &Path, sealed: usize) {
    let files = [data.join("raft.redb"), data.join("raft.snapshot")];
    for f in &files {
        assert_eq!(
            occurrences(f, "PRIVATE KEY"),
            0,
            "a CA key in clear in {}",
            f.display()
        );
    }
    assert!(
        files
            .iter()
            .map(|f| occurrences(f, "mesh-sealed-v1:"))
            .sum::<usize>()
            >= sealed,
        "both roots' keys, sealed"
    );
}

#[test]
fn meshd_dev_seals_its_ca_keys_too() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "key");
    let data = dir.path().join("dev");
    let args: Vec<String> = vec![
        "dev".to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--bind".into(),
        format!("127.0.0.1:{}", free_port()),
        "--http-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--encrypt-key-file".into(),
        key.display().to_string(),
    ];
    let mut dev = Meshd::spawn("dev", &args).unwrap();
    rotate_and_sign(&dev);
    assert!(dev.stop(), "meshd dev stops cleanly");
    assert_sealed(&data, 2);
}

#[test]
fn sealed_ca_keys_never_reach_the_store_and_the_key_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "key");
    let other = keygen(dir.path(), "other");
    let data = dir.path().join("s1");
    let (rpc, web) = (free_port(), free_port());
    let args = args_with_key("s1", &data, rpc, web, 1, &[], Some(&key));
    let mut s1 = Meshd::spawn("s1", &args).unwrap();
    let second = rotate_and_sign(&s1);
    // Writes enough for a snapshot past both roots, then the store's bytes.
    for i in 0..4 {
        let body = format!("{{\"Node\":\"n{i}\",\"Address\":\"127.0.0.1\"}}");
        let r = http("PUT", s1.http_addr, "/v1/catalog/register", Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(s1.stop(), "s1 stops cleanly");
    assert_sealed(&data, 2);

    let key_text = std::fs::read_to_string(&key).unwrap();
    let refusals = [
        (
            Some(other.as_path()),
            "does not open with this server's --encrypt-key-file",
        ),
        (
            None,
            "this server has none: start it with the cluster's --encrypt-key-file",
        ),
    ];
    for (k, expected) in refusals {
        let stderr = meshd_refused(&args_with_key("s1", &data, rpc, web, 1, &[], k));
        assert!(stderr.contains(expected), "{k:?}: {stderr}");
        assert!(
            !stderr.contains(key_text.trim()) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let stderr = meshd_refused(&args);
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The right key: the same active root, and it still signs.
    let s1 = Meshd::spawn("s1", &args).unwrap();
    assert_eq!(wait_active_root(s1.http_addr).unwrap(), second);
    eventually("a leaf after the restart", Duration::from_secs(30), || {
        let r = http("GET", s1.http_addr, "/v1/agent/connect/ca/leaf/db", None).ok()?;
        (r.status == 200).then_some(())
    })
    .unwrap();
}

#[test]
fn a_server_with_another_key_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "key");
    let other = keygen(dir.path(), "other");
    let rpc1 = free_port();
    let s1 = Meshd::spawn(
        "s1",
        &args_with_key(
            "s1",
            &dir.path().join("s1"),
            rpc1,
            free_port(),
            1,
            &[],
            Some(&key),
        ),
    )
    .unwrap();
    wait_active_root(s1.http_addr).unwrap();

    // `--bootstrap-expect 2`: a refused server could not start a cluster of its own either.
    let joiner = |name: &str, k: Option<&Path>| {
        args_with_key(
            name,
            &dir.path().join(name),
            free_port(),
            free_port(),
            2,
            &[rpc1],
            k,
        )
    };
    let refusals = [
        (
            "s2",
            Some(other.as_path()),
            "it uses a different encryption key",
        ),
        ("s3", None, "this server has none"),
    ];
    for (name, k, expected) in refusals {
        let stderr = meshd_refused(&joiner(name, k));
        assert!(
            stderr.contains(&format!(
                "refusing to form a cluster with server 127.0.0.1:{rpc1}"
            )) && stderr.contains(expected),
            "{name}: {stderr}"
        );
    }
    // The same key joins: the refusals were about the key, not the join.
    let _s4 = Meshd::spawn("s4", &joiner("s4", Some(&key))).unwrap();
    let voters = eventually("s4 to join", Duration::from_secs(30), || {
        let r = http("GET", s1.http_addr, "/v1/operator/raft/configuration", None).ok()?;
        let names: Vec<String> = r.json().ok()?["Servers"]
            .as_array()?
            .iter()
            .filter_map(|s| s["Node"].as_str().map(str::to_string))
            .collect();
        names.contains(&"s4".to_string()).then_some(names)
    })
    .unwrap();
    assert_eq!(voters.len(), 2, "only s1 and s4: {voters:?}");
}
