//! Acceptance: a 3-server cluster starts from the README's instructions (its own CA and server
//! certificates from `meshctl tls`, mutual TLS on the RPC port, ACLs on) and `meshctl operator
//! raft list-peers` shows exactly one leader.

use std::time::Duration;

use mesh_tests::process::{Meshd, eventually, meshctl_as};

/// The `meshd`/`meshctl` lines of the README block marked `cluster-commands`.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- cluster-commands")
        .expect("README has the cluster-commands block");
    let block = &readme[start..];
    let body_start = block.find("```sh\n").expect("sh block") + 6;
    let body_end = body_start + block[body_start..].find("```").expect("block end");
    block[body_start..body_end]
        .lines()
        .filter(|l| l.starts_with("meshd ") || l.starts_with("meshctl "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn readme_three_server_cluster_has_one_leader() {
    let commands = readme_commands();
    let (tls, commands): (Vec<_>, Vec<_>) = commands
        .into_iter()
        .partition(|c| c.get(1).map(String::as_str) == Some("tls"));
    assert_eq!(
        tls.len(),
        4,
        "the CA and three server certificates: {tls:?}"
    );
    assert_eq!(
        commands.len(),
        5,
        "three servers, the ACL bootstrap and one list-peers: {commands:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    // The certificates, made in the directory the servers' relative paths name.
    for cmd in &tls {
        let out = std::process::Command::new(mesh_tests::process::bin("meshctl"))
            .args(&cmd[1..])
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        mesh_tests::process::stdout_ok(&out, "meshctl tls");
    }
    let mut servers = Vec::new();
    for cmd in &commands[..3] {
        let mut args: Vec<String> = cmd[1..].to_vec();
        let name = args[args.iter().position(|a| a == "--node").unwrap() + 1].clone();
        // Same flags as the README; only the data directory moves into the test's temp dir,
        // and the certificate files are found there.
        let d = args.iter().position(|a| a == "--data-dir").unwrap() + 1;
        args[d] = tmp.path().join(&name).display().to_string();
        for i in 0..args.len() - 1 {
            if args[i].starts_with("--tls-") {
                args[i + 1] = tmp.path().join(&args[i + 1]).display().to_string();
            }
        }
        assert!(args.iter().any(|a| a == "--tls-ca-file"), "{args:?}");
        servers.push(Meshd::spawn(&name, &args).expect("server starts"));
    }
    let [bootstrap, list_peers] = [&commands[3], &commands[4]];
    let run = |cmd: &Vec<String>, token: Option<&str>| {
        assert_eq!(cmd[1], "--http-addr");
        let args: Vec<&str> = cmd[3..].iter().map(String::as_str).collect();
        meshctl_as(&cmd[2], token, &args)
    };
    // ACLs are on by default: the first step is the bootstrap (once a leader exists), whose
    // SecretID the README exports as MESH_HTTP_TOKEN.
    let root = eventually("acl bootstrap to succeed", Duration::from_secs(30), || {
        let out = run(bootstrap, None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success().then_some(())?;
        text.lines()
            .find_map(|l| l.strip_prefix("SecretID:"))
            .map(|s| s.trim().to_string())
    })
    .unwrap();
    // Without the token the peers are refused (operator:read), with Consul's text.
    let anonymous = run(list_peers, None);
    assert!(!anonymous.status.success());
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(err.contains("lacks permission 'operator:read'"), "{err}");

    let out = eventually(
        "list-peers to show 3 voters and a leader",
        Duration::from_secs(30),
        || {
            let out = run(list_peers, Some(&root));
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let voters = text.lines().filter(|l| l.contains(" true ")).count();
            (out.status.success() && voters == 3 && text.contains("leader")).then_some(text)
        },
    )
    .unwrap();
    let leaders = out.lines().filter(|l| l.contains(" leader ")).count();
    let followers = out.lines().filter(|l| l.contains(" follower ")).count();
    assert_eq!((leaders, followers), (1, 2), "list-peers output:\n{out}");
    for name in ["s1", "s2", "s3"] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    // Every server answers the same, including through a follower (linearizable read). A
    // follower answers once it has heard from the leader, which may be just after the server
    // asked above saw the election: wait for that, with a deadline.
    for s in &servers {
        let addr = s.http_addr.to_string();
        let mut last = String::new();
        let leaders = eventually(
            "list-peers through every server",
            Duration::from_secs(15),
            || {
                let out = meshctl_as(&addr, Some(&root), &["operator", "raft", "list-peers"]);
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let n = last.lines().filter(|l| l.contains(" leader ")).count();
                (out.status.success() && n > 0).then_some(n)
            },
        )
        .ok();
        assert_eq!(leaders, Some(1), "{addr}: {last}");
    }
}
