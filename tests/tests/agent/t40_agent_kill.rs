//! Agent death: when a `meshd agent` is SIGKILLed, the servers' liveness detector turns its
//! node's `serfHealth` critical, so its sidecar drops out of `?passing` health answers within
//! the documented bound, and `meshctl members` shows the node failed.

use std::time::Duration;

use mesh_control::server::liveness::{FAIL_AFTER, TICK};
use mesh_tests::process::meshctl;
use tokio::time::Instant;

use crate::{ProcServers, health_ids, ok, spawn_agent, wait_json};

/// `FAIL_AFTER + TICK` plus a Raft commit and the health read (`server/liveness.rs`), rounded
/// up for a loaded machine.
const DROP_BOUND: Duration = Duration::from_secs(10);
/// The agent heartbeats every second, each with a 2 s timeout, so its last heartbeat reached
/// the leader at most this long before the kill: the node cannot be judged dead earlier than
/// `FAIL_AFTER - HEARTBEAT_GAP` after the kill.
const HEARTBEAT_GAP: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_drops_out_of_passing_and_shows_failed() {
    let servers = ProcServers::start(1).await;
    let s = servers.http(0);
    let agent_dir = mesh_tests::data_dir();
    let mut agent = spawn_agent("client-kill", &servers.rpc_addrs(), agent_dir.path(), &[]);
    let a = agent.http_addr;

    let reg = r#"{"Name":"web","Port":8080,"Connect":{"SidecarService":{
        "Checks":[{"TTL":"60s","Status":"passing"}]}}}"#;
    ok(a, "PUT", "/v1/agent/service/register", Some(reg)).await;
    let passing = "/v1/health/connect/web?passing";
    wait_json(
        s,
        passing,
        "the agent's sidecar in the server's /v1/health/connect/web?passing",
        Duration::from_secs(15),
        |v| health_ids(v) == ["web-sidecar-proxy"] && v[0]["Node"]["Node"] == "client-kill",
    )
    .await;
    let members = ok(s, "GET", "/v1/agent/members", None).await.json();
    let status = |m: &serde_json::Value| {
        m.as_array()
            .and_then(|a| a.iter().find(|m| m["Name"] == "client-kill"))
            .map(|m| m["Status"].clone())
    };
    assert_eq!(status(&members), Some(1.into()), "alive before: {members}");

    agent.kill();
    let killed = Instant::now();
    wait_json(
        s,
        passing,
        "the killed agent's sidecar to leave ?passing",
        Duration::from_secs(20),
        |v| health_ids(v).is_empty(),
    )
    .await;
    let took = killed.elapsed();
    eprintln!("t40: killed agent left ?passing {took:?} after SIGKILL");
    assert!(
        took <= DROP_BOUND,
        "dropped out of ?passing {took:?} after the kill (bound {DROP_BOUND:?}, \
         FAIL_AFTER {FAIL_AFTER:?} + TICK {TICK:?} + commit)"
    );
    assert!(
        took >= FAIL_AFTER - HEARTBEAT_GAP,
        "judged dead {took:?} after the kill, before FAIL_AFTER ({FAIL_AFTER:?}) of silence"
    );
    // Still registered, just not passing.
    let all = ok(s, "GET", "/v1/health/connect/web", None).await.json();
    assert_eq!(health_ids(&all), ["web-sidecar-proxy"], "{all}");

    let members = ok(s, "GET", "/v1/agent/members", None).await.json();
    assert_eq!(status(&members), Some(4.into()), "failed after: {members}");
    let out = meshctl(&s.to_string(), &["members"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "meshctl members: {out:?}");
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("client-kill"))
        .unwrap_or_else(|| panic!("client-kill not in meshctl members:\n{stdout}"));
    assert!(
        line.split_whitespace().any(|w| w == "failed"),
        "not shown failed: {line}"
    );

    drop(servers);
}
