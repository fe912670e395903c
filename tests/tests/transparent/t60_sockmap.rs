//! `--sockmap` (issue 5): the pod's loopback hops (app → outbound listener, proxy → app) go
//! socket to socket through a sockhash and an `sk_msg` program instead of the TCP stack.
//! Traffic must stay byte-exact (a multi-MiB stream, half-close), the programs' counters must
//! show the bypass really happened (and stay 0 without the flag), and a proxy that exits
//! (SIGTERM or SIGKILL) must leave nothing loaded, even with accelerated connections open.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use mesh_tests::pod::Cgroup;
use mesh_tests::process::eventually;

use crate::harness::*;

const APP_PORT: u16 = 8080;
const PLAIN_PORT: u16 = 9000;
const STREAM_BYTES: usize = 8 << 20;
/// Each `sendall` chunk of the stream client is one `sendmsg`, so at least one redirect.
const STREAM_CHUNKS: f64 = (STREAM_BYTES / 65_536) as f64;

/// The stream came back byte for byte.
fn assert_stream_intact(out: &serde_json::Value, a: &Proxy, b: &Proxy) {
    assert_eq!(out.get("error"), None, "{out}{}", logs(&[a, b]));
    assert_eq!(out["echo_len"].as_u64(), Some(STREAM_BYTES as u64), "{out}");
    assert_eq!(out["echo_sha256"], out["sent_sha256"], "{out}");
}

#[test]
fn sockmap_bypasses_both_loopback_hops_and_keeps_streams_intact() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let (proxy_a, proxy_b) = scene.proxies(&["--sockmap"]);
    for p in [&proxy_a, &proxy_b] {
        assert!(
            p.log().contains("sockmap acceleration on"),
            "{}",
            logs(&[&proxy_a, &proxy_b])
        );
    }
    let dst = pods.b.addr(APP_PORT);

    let out = client_stream(&pods.a, dst, STREAM_BYTES, 0x5eed);
    assert_stream_intact(&out, &proxy_a, &proxy_b);

    // Half-close on a short exchange: send, shut down writing, read the whole reply. The
    // wire between the pods still carries TLS only.
    let marker = "SOCKMAP-HALF-CLOSE-41c7";
    let capture = Capture::start(&pods.a, marker);
    let out = client(&pods.a, dst, marker);
    let counts = capture.finish();
    assert_echoed(&out, marker, &[&proxy_a, &proxy_b]);
    assert_eq!(out["peername"].as_str(), Some(dst.to_string().as_str()));
    assert!(counts["tls_records"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!(
        counts["marker"].as_u64(),
        Some(0),
        "plaintext on the veth: {counts}"
    );

    // B's app got exactly the client's bytes, from its proxy (a loopback peer).
    let seen = app_b.wait_seen(2);
    let mut sizes: Vec<usize> = seen.iter().map(|s| s.bytes.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![marker.len(), STREAM_BYTES]);
    assert!(seen.iter().all(|s| s.peer.ip().is_loopback()), "{seen:?}");
    let small = seen.iter().find(|s| s.bytes.len() == marker.len()).unwrap();
    assert_eq!(small.bytes, marker.as_bytes());

    // The bypass happened on both pods' hops: both ends of each hop went into the sockhash
    // and messages were handed socket to socket. A: at least one redirect per chunk the
    // client sent; B: the proxy's writes to the app and the app's echo.
    for (name, p) in [("A", &proxy_a), ("B", &proxy_b)] {
        let inserted = p.ebpf_event("sockmap_inserted");
        assert!(inserted >= 4.0, "proxy {name}: {inserted} sockets inserted");
    }
    let a = proxy_a.ebpf_event("sockmap_redirected");
    assert!(a >= STREAM_CHUNKS, "proxy A: {a} messages redirected");
    let b = proxy_b.ebpf_event("sockmap_redirected");
    assert!(b > 0.0, "proxy B: {b} messages redirected");
}

#[test]
fn without_the_flag_no_socket_enters_the_sockhash() {
    let scene = Scene::start("allow", APP_PORT);
    // A clean slate: an earlier test's sockhash lives until its last socket is closed.
    assert_no_programs_left();
    let (proxy_a, proxy_b) = scene.proxies(&[]);
    let out = client(&scene.pods.a, scene.pods.b.addr(APP_PORT), "no-sockmap");
    assert_echoed(&out, "no-sockmap", &[&proxy_a, &proxy_b]);

    // The counters are live (the connect was redirected) but the sockmap ones stay 0.
    assert!(proxy_a.ebpf_event("redirected") >= 1.0);
    for p in [&proxy_a, &proxy_b] {
        assert!(!p.log().contains("sockmap acceleration on"));
        assert_eq!(p.ebpf_event("sockmap_inserted"), 0.0);
        assert_eq!(p.ebpf_event("sockmap_redirected"), 0.0);
    }
    assert!(!loaded_mesh_programs().iter().any(|n| n == "mesh_sk_msg"));
}

/// A refused mesh connection still reaches the app as a reset, with the app's end in the
/// sockhash (the reset comes through TCP while reads go through the psock first).
#[test]
fn deny_intention_still_resets_the_client() {
    let scene = Scene::start("deny", APP_PORT);
    let (proxy_a, proxy_b) = scene.proxies(&["--sockmap"]);
    let out = client(
        &scene.pods.a,
        scene.pods.b.addr(APP_PORT),
        "must-not-arrive",
    );
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("ConnectionResetError"),
        "expected a reset, got {out}{}",
        logs(&[&proxy_a, &proxy_b])
    );
    assert!(proxy_a.ebpf_event("sockmap_inserted") >= 2.0);
    assert_eq!(
        scene.app_b.accepted(),
        0,
        "a denied connection reached B's app"
    );
}

/// The proxies in a cgroup of their own (neither a pod's nor above them): the app's socket
/// in pod A enters the sockhash through the pod cgroup's `mesh_sock_ops`, the proxy's through
/// `mesh_sockmap_ops` on the proxies' cgroup. B's app runs in the test's cgroup, which no
/// program watches: only the proxy's end of B's hop is in the map, so that hop falls back to
/// TCP (no redirect) and must stay intact.
#[test]
fn proxies_in_their_own_cgroup_and_a_hop_with_one_end_in_the_map() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http) = (&scene.pods, scene.http);
    let proxies = Cgroup::create("proxies").expect("proxies' cgroup");
    let proxy_a = Proxy::start_in(http, "svc-a", &pods.a, &["--sockmap"], Some(&proxies));
    let proxy_b = Proxy::start_in(http, "svc-b", &pods.b, &["--sockmap"], Some(&proxies));
    let dst = pods.b.addr(APP_PORT);

    let out = client_stream(&pods.a, dst, STREAM_BYTES, 0xcafe);
    assert_stream_intact(&out, &proxy_a, &proxy_b);

    let a = proxy_a.ebpf_event("sockmap_redirected");
    assert!(a >= STREAM_CHUNKS, "proxy A: {a} messages redirected");
    assert!(proxy_b.ebpf_event("sockmap_inserted") >= 1.0);
    assert_eq!(proxy_b.ebpf_event("sockmap_redirected"), 0.0);
}

/// Connects through the mesh, gets the echo, then holds the connection until EOF: an app
/// with an accelerated connection open when its proxy dies.
const HOLD_PY: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"hold")
got = b""
while len(got) < 4:
    got += s.recv(100)
print(got.decode(), flush=True)
try:
    while s.recv(65536):
        pass
except OSError:
    pass
print("eof", flush=True)
"#;

#[test]
fn exit_with_accelerated_connections_open_leaves_no_program_and_direct_paths_return() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, app_b) = (&scene.pods, &scene.app_b);
    let plain_b = Echo::start(&pods.b, PLAIN_PORT);
    let to_app = pods.b.addr(APP_PORT);
    let to_plain = pods.b.addr(PLAIN_PORT);
    // SIGTERM drains live connections for up to --drain-timeout, then closes them.
    // --fail-open: this test is about what a sockmap leaves behind when its proxy exits; a
    // fail-closed capture stays pinned (t20) and its sockhash with it.
    let flags = ["--sockmap", "--drain-timeout", "1s", "--fail-open"];
    for signal in ["TERM", "KILL"] {
        let (mut proxy_a, mut proxy_b) = scene.proxies(&flags);
        let loaded = loaded_mesh_programs();
        // The kernel keeps 15 characters of a name.
        for name in ["mesh_sk_msg", "mesh_sockmap_op"] {
            assert!(loaded.iter().any(|n| n == name), "{name} not in {loaded:?}");
        }

        let mut cmd = pods.a.command("python3").expect("command in pod");
        let mut hold = cmd
            .args([
                "-c",
                HOLD_PY,
                &to_app.ip().to_string(),
                &to_app.port().to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the holding client");
        let mut lines = BufReader::new(hold.stdout.take().unwrap()).lines();
        // Bounded: the client's socket timeout (30 s) ends it with an error otherwise.
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("hold"),
            "{}",
            logs(&[&proxy_a, &proxy_b])
        );
        assert!(proxy_a.ebpf_event("sockmap_redirected") >= 1.0);
        assert!(proxy_b.ebpf_event("sockmap_redirected") >= 1.0);

        proxy_a.stop(signal);
        proxy_b.stop(signal);
        // The app's end sees the connection end and closes, which releases the last
        // sockhash entries (each holds mesh_sk_msg, which holds the map).
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("eof"),
            "after SIG{signal}"
        );
        eventually("the holding client exits", Duration::from_secs(10), || {
            hold.try_wait().ok().flatten()
        })
        .unwrap();
        assert_no_programs_left();

        assert_direct_both_ways(pods, app_b, to_plain, to_app, &format!("after SIG{signal}"));
    }
    assert!(plain_b.accepted() >= 2);
}
