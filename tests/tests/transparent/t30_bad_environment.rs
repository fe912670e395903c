//! Acceptance 5: a bad environment (not root, missing cgroup, missing eBPF object, a proxy
//! inside the cgroup it would capture, a second instance on the same cgroup that cannot take
//! the first one's listeners over) gives one clear
//! error line and leaves nothing attached.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::python::run_bounded;

use crate::harness::*;

/// Runs `cmd` to completion and returns (exit code, stderr lines).
fn refused(cmd: &mut std::process::Command) -> (Option<i32>, Vec<String>) {
    cmd.env("MESH_LOG", "info");
    let r = run_bounded(cmd, Duration::from_secs(30)).expect("run meshproxy");
    let lines = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (r.status.and_then(|s| s.code()), lines)
}

fn unused_admin() -> SocketAddr {
    format!("127.0.0.1:{}", mesh_tests::process::free_port())
        .parse()
        .unwrap()
}

#[test]
fn not_root_missing_cgroup_and_missing_object_are_one_line_each() {
    let _serial = exclusive();
    let pods = pods();
    // Nothing listens there: the refusals come before any agent call.
    let agent: SocketAddr = "127.0.0.1:9".parse().unwrap();

    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
    let base = proxy_command(agent, "svc-a", &pods.a, unused_admin(), &[]);
    cmd.arg(base.get_program()).args(base.get_args());
    let (code, lines) = refused(&mut cmd);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("needs root"), "{lines:?}");
    assert!(lines[0].contains("uid 65534"), "{lines:?}");

    let mut missing = pods.a.clone();
    missing.cgroup =
        std::path::Path::new(mesh_tests::pod::CGROUP2_ROOT).join("mesh-test-no-such-cgroup");
    let (code, lines) = refused(&mut proxy_command(
        agent,
        "svc-a",
        &missing,
        unused_admin(),
        &[],
    ));
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--cgroup"), "{lines:?}");
    assert!(lines[0].contains("mesh-test-no-such-cgroup"), "{lines:?}");

    let mut cmd = proxy_command_with_object(
        agent,
        "svc-a",
        &pods.a,
        unused_admin(),
        &[],
        std::path::Path::new("/nonexistent/mesh-ebpf"),
    );
    let (code, lines) = refused(&mut cmd);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("cargo xtask build-ebpf"), "{lines:?}");

    // Inside the cgroup it would capture, the proxy could not tell the apps' connects from
    // its own (the programs skip its cgroup): refused rather than capturing nothing.
    let base = proxy_command(agent, "svc-a", &pods.a, unused_admin(), &[]);
    let mut cmd = pods
        .a
        .command(base.get_program().to_str().unwrap())
        .expect("command in pod A");
    cmd.args(base.get_args());
    let (code, lines) = refused(&mut cmd);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--cgroup"), "{lines:?}");
    assert!(lines[0].contains("runs in that cgroup itself"), "{lines:?}");

    assert_no_programs_left();
}

#[test]
fn a_second_instance_on_the_same_cgroup_is_refused_and_the_first_keeps_working() {
    let mesh = Mesh::start(8080);
    let (pods, http) = (&mesh.pods, mesh.http);
    let plain_b = Echo::start(&pods.b, 9000);
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &[]);
    let loaded = loaded_mesh_programs().len();
    // A second proxy for the pod takes the first one's listeners over (t80); without that
    // offer (an older proxy, or its socket file removed) the pod's lock refuses it.
    let offer = {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&pods.a.cgroup).unwrap().ino();
        format!("/run/meshproxy/handoff-cgroup-{ino}.sock")
    };
    // The offer is opened just after the proxy reports ready: wait for it, then remove it.
    mesh_tests::process::eventually(
        "the first proxy's handoff offer",
        Duration::from_secs(10),
        || std::fs::remove_file(&offer).ok(),
    )
    .unwrap_or_else(|e| panic!("{offer}: {e}"));

    let (code, lines) = refused(&mut proxy_command(
        http,
        "svc-a",
        &pods.a,
        unused_admin(),
        &[],
    ));
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("already runs"), "{lines:?}");
    assert_eq!(
        loaded_mesh_programs().len(),
        loaded,
        "the refused instance left programs"
    );

    // The first instance still captures: pass-through via its outbound listener.
    let out = client(&pods.a, pods.b.addr(9000), "still-here");
    assert_echoed(&out, "still-here", &[&proxy_a]);
    assert!(
        proxy_a.log().contains("passing through"),
        "{}",
        proxy_a.log()
    );
    assert_eq!(plain_b.accepted(), 1);
}

/// A verifier rejection (a real one: `cargo xtask build-ebpf` also builds
/// `mesh-ebpf-rejected`, an object whose `mesh_connect4` reads past its context) is one line
/// naming the program and the verifier's reason, and nothing is attached.
#[test]
fn a_verifier_rejection_is_one_line_and_leaves_nothing_attached() {
    let _serial = exclusive();
    let rejected = ebpf_object().with_file_name("mesh-ebpf-rejected");
    assert!(
        rejected.is_file(),
        "{} is missing: run `cargo xtask build-ebpf`",
        rejected.display()
    );
    let pods = pods();
    let before = loaded_mesh_programs();
    // Nothing listens there: the refusal comes before any agent call.
    let agent: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (code, lines) = refused(&mut proxy_command_with_object(
        agent,
        "svc-a",
        &pods.a,
        unused_admin(),
        &[],
        &rejected,
    ));
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("verifier rejected program mesh_connect4"),
        "{lines:?}"
    );
    assert!(lines[0].contains("invalid bpf_context access"), "{lines:?}");
    assert_eq!(
        loaded_mesh_programs(),
        before,
        "a rejected load left programs"
    );
    assert_no_programs_left();
}
