//! Fail static: with every server SIGKILLed, a `meshd agent` keeps answering roots, leaf and
//! authorize from its cache with the same content; when the servers come back (same ports, same
//! data) the agent resyncs without a restart: a new intention reaches its authorize answer, and
//! a service registered on it during the outage reaches the catalog (anti-entropy).

use std::time::Duration;

use mesh_tests::eventually::eventually;
use tokio::time::Instant;

use crate::{ProcServers, authorize, call, ok, put_intention, spawn_agent, try_call, wait_json};

/// The agent's reconnect backoff tops out at 2 s (cache stream) and its anti-entropy retry at
/// 5 s (`control/src/agent/{cache,sync}.rs`); a change must show within these bounds once a
/// server answers again.
const RESYNC_INTENTION_BOUND: Duration = Duration::from_secs(5);
const RESYNC_CATALOG_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_from_cache_without_servers_and_resyncs_after_restart() {
    let mut servers = ProcServers::start(3).await;
    let agent_dir = mesh_tests::data_dir();
    let mut agent = spawn_agent("client-fs", &servers.rpc_addrs(), agent_dir.path(), &[]);
    let a = agent.http_addr;
    let s0 = servers.http(0);

    ok(
        a,
        "PUT",
        "/v1/agent/service/register",
        Some(r#"{"Name":"web","Port":8080}"#),
    )
    .await;
    // Through the agent (forwarded to a server).
    put_intention(a, "web", "db", "allow").await;
    put_intention(a, "api", "db", "deny").await;

    let roots = ok(a, "GET", "/v1/agent/connect/ca/roots", None)
        .await
        .json();
    let td = roots["TrustDomain"]
        .as_str()
        .expect("TrustDomain")
        .to_string();
    assert!(!td.is_empty(), "{roots}");
    let leaf = ok(a, "GET", "/v1/agent/connect/ca/leaf/web", None)
        .await
        .json();
    assert_eq!(leaf["Service"], "web", "{leaf}");
    // The cache follows the servers: wait until both intentions are in it.
    let (web_ok, api_denied) = eventually(
        "the agent's authorize answers to reflect allow web->db and deny api->db",
        Duration::from_secs(10),
        || {
            let td = td.clone();
            async move {
                let w = authorize(a, &td, "web", "db").await;
                let x = authorize(a, &td, "api", "db").await;
                let by_intention = x["Reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(r#""api" => "db""#));
                if w["Authorized"] == true && x["Authorized"] == false && by_intention {
                    Ok((w, x))
                } else {
                    Err(format!("web: {w}, api: {x}"))
                }
            }
        },
    )
    .await;
    // The registration reached the catalog before the outage.
    wait_json(
        s0,
        "/v1/catalog/services",
        "web in the catalog",
        Duration::from_secs(10),
        |v| v.get("web").is_some(),
    )
    .await;

    servers.kill_all();
    // The agent has noticed: requests it must forward now fail.
    eventually(
        "a forwarded request through the agent to fail with every server dead",
        Duration::from_secs(15),
        || async move {
            let r = try_call(a, "GET", "/v1/catalog/services", None).await?;
            if r.status == 200 {
                Err("still 200".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;

    // Fail static: the same answers, from the cache.
    let roots_now = ok(a, "GET", "/v1/agent/connect/ca/roots", None)
        .await
        .json();
    assert_eq!(
        roots_now, roots,
        "roots changed while every server was down"
    );
    let leaf_now = ok(a, "GET", "/v1/agent/connect/ca/leaf/web", None)
        .await
        .json();
    assert_eq!(leaf_now, leaf, "leaf changed while every server was down");
    assert_eq!(authorize(a, &td, "web", "db").await, web_ok);
    assert_eq!(authorize(a, &td, "api", "db").await, api_denied);

    // A registration during the outage is accepted locally.
    ok(
        a,
        "PUT",
        "/v1/agent/service/register",
        Some(r#"{"Name":"late","Port":9090}"#),
    )
    .await;
    let local = ok(a, "GET", "/v1/agent/services", None).await.json();
    assert!(local.get("late").is_some(), "{local}");

    servers.restart_all().await;
    let ready = Instant::now();
    let s0 = servers.http(0);

    // A new intention written after the restart reaches the agent without restarting it.
    put_intention(s0, "api", "db", "allow").await;
    let written = Instant::now();
    let td2 = td.clone();
    let allowed = eventually(
        "the agent's authorize answer for api->db to become allowed",
        Duration::from_secs(20),
        || {
            let td = td2.clone();
            async move {
                let x = authorize(a, &td, "api", "db").await;
                if x["Authorized"] == true {
                    Ok(x)
                } else {
                    Err(format!("{x}"))
                }
            }
        },
    )
    .await;
    let took = written.elapsed();
    eprintln!("t10: new intention reached the agent {took:?} after the write");
    assert!(
        took <= RESYNC_INTENTION_BOUND,
        "intention reached the agent after {took:?} (bound {RESYNC_INTENTION_BOUND:?}): {allowed}"
    );
    assert_eq!(authorize(a, &td, "web", "db").await["Authorized"], true);

    // Anti-entropy: the service registered during the outage reaches the catalog.
    wait_json(
        s0,
        "/v1/catalog/services",
        "the service registered during the outage in the servers' catalog",
        Duration::from_secs(20),
        |v| v.get("late").is_some() && v.get("web").is_some(),
    )
    .await;
    let took = ready.elapsed();
    eprintln!("t10: outage registration in the catalog {took:?} after the servers were back");
    assert!(
        took <= RESYNC_CATALOG_BOUND,
        "anti-entropy took {took:?} after the servers returned (bound {RESYNC_CATALOG_BOUND:?})"
    );
    let r = call(s0, "GET", "/v1/catalog/service/late", None).await;
    assert_eq!(r.json()[0]["Node"], "client-fs", "{}", r.text());

    // All of this from the agent process started at the beginning: it was never restarted.
    let child = agent.child.as_mut().expect("agent child");
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the agent process exited during the test"
    );
    drop(agent);
    drop(servers);
}
