//! Data directories hold the CA's private keys and the cluster's secrets (issue 13 point 4):
//! everything a server writes there is private (directories 0700, files 0600), and `meshd
//! server` / `meshd agent` refuse to start on a data directory, or a file in it, that group
//! or others can reach, printing the path, its mode and the `chmod` that fixes it. The test
//! runs that exact command through `sh` and the process starts again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_tests::process::{free_port, http, meshd_refused, spawn_agent};

use crate::ProcCluster;

/// Every path under `dir` (itself included) with its permission bits and whether it is a
/// directory.
fn walk(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push((p, meta.permissions().mode() & 0o7777, meta.is_dir()));
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts that a refusal names `path`, its `mode` and the `chmod` to `private`, runs that
/// command as printed through `sh`, and checks it made `path` private.
fn refused_then_fixed(stderr: &str, path: &Path, wide: u32, private: u32) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    let named = format!("{} has mode {wide:04o}", path.display());
    assert!(stderr.contains(&named), "{named:?} not in {stderr}");
    let fix = stderr
        .lines()
        .find_map(|l| l.split_once("Fix it with: ").map(|(_, f)| f.trim()))
        .unwrap_or_else(|| panic!("no fix in {stderr}"));
    assert_eq!(fix, format!("chmod {private:o} {}", path.display()));
    assert_eq!(mode(path), wide, "the refusal changed nothing");
    let out = Command::new("sh").args(["-c", fix]).output().unwrap();
    assert!(out.status.success(), "{fix}: {out:?}");
    assert_eq!(mode(path), private, "{fix}");
}

#[test]
fn a_server_writes_only_private_files_and_refuses_open_ones_until_chmod() {
    let mut c = ProcCluster::start(1).unwrap();
    let data = c.dirs[0].path().to_path_buf();
    let trust_domain = c.trust_domain(0).unwrap();
    // A service registered through the embedded agent is persisted in `agent/services/`.
    let web = r#"{"Name":"web","Port":8080,"Check":{"CheckID":"web-ttl","TTL":"60s"}}"#;
    let r = http(
        "PUT",
        c.servers[0].http_addr,
        "/v1/agent/service/register",
        Some(web),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    let tree = walk(&data);
    let service_file = data.join("agent").join("services").join("web.json");
    for want in [&data.join("raft.redb"), &data.join("agent"), &service_file] {
        assert!(tree.iter().any(|(p, ..)| p == want), "{want:?} in {tree:?}");
    }
    for (path, m, is_dir) in &tree {
        let private = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*m, private, "{} has mode {m:o}", path.display());
    }

    c.stop(0);
    for (path, wide, private) in [
        (data.clone(), 0o755, 0o700),
        (data.join("raft.redb"), 0o644, 0o600),
        (service_file.clone(), 0o640, 0o600),
        (data.join("agent"), 0o701, 0o700),
    ] {
        set_mode(&path, wide);
        let stderr = meshd_refused(&c.servers[0].args);
        refused_then_fixed(&stderr, &path, wide, private);
    }
    // An operator's file dropped in with the default umask is refused too.
    let note = data.join("NOTES");
    std::fs::write(&note, b"backed up on Monday").unwrap();
    set_mode(&note, 0o644);
    refused_then_fixed(&meshd_refused(&c.servers[0].args), &note, 0o644, 0o600);

    // Fixed: the same cluster, with its service.
    c.restart(0);
    assert_eq!(c.trust_domain(0).unwrap(), trust_domain);
    let services = http("GET", c.servers[0].http_addr, "/v1/agent/services", None).unwrap();
    assert!(
        services.json().unwrap()["web"].is_object(),
        "{}",
        services.body
    );
}

#[test]
fn an_agent_refuses_an_open_data_dir_until_chmod() {
    let dir = mesh_tests::data_dir();
    let data = dir.path().join("a1");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o750);
    // No server needs to be up: the data directory is checked before anything else.
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args: Vec<String> = [
        "agent",
        "--node",
        "a1",
        "--server",
        &server.to_string(),
        "--http-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        &data.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    refused_then_fixed(&meshd_refused(&args), &data, 0o750, 0o700);
    // Fixed, it starts (it reports its listener only after opening its data directory).
    let _agent = spawn_agent("a1", &[server], &data, &[]);
    let tree = walk(&data);
    assert!(
        tree.iter().any(|(p, ..)| *p == data.join("services")),
        "{tree:?}"
    );
    for (path, m, is_dir) in tree {
        assert_eq!(m, if is_dir { 0o700 } else { 0o600 }, "{}", path.display());
    }
}
