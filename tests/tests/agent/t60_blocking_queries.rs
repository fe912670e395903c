//! Blocking queries answered by the agent from its cache: roots with nothing changing answer
//! after the wait with the same index; cached connect health answers soon after a registration
//! with a larger index.

use std::time::Duration;

use mesh_tests::eventually::eventually;
use tokio::time::Instant;

use crate::{InprocEnv, health_ids, ok, wait_node_in_catalog};

/// `?wait=1s` plus Consul's jitter of up to wait/16, and scheduling slack.
const ROOTS_WAIT_MAX: Duration = Duration::from_millis(2500);
/// A registration reaches the catalog (anti-entropy, one Raft commit) and the agent's watch.
const WAKE_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_queries_on_the_agent() {
    let env = InprocEnv::start("client-block", |_| {}).await;
    let a = env.http;

    let first = ok(a, "GET", "/v1/agent/connect/ca/roots", None).await;
    let idx = first.index();
    let started = Instant::now();
    let same = ok(
        a,
        "GET",
        &format!("/v1/agent/connect/ca/roots?index={idx}&wait=1s"),
        None,
    )
    .await;
    let took = started.elapsed();
    eprintln!("t60: roots blocking query with no change took {took:?}");
    assert_eq!(same.index(), idx, "nothing changed, same X-Consul-Index");
    assert_eq!(same.json(), first.json());
    assert!(
        took >= Duration::from_secs(1) && took <= ROOTS_WAIT_MAX,
        "roots blocking query with no change answered after {took:?}"
    );

    // The agent's own node registration is done, so the next health change is ours.
    wait_node_in_catalog(env.server_http, "client-block").await;
    let empty = ok(a, "GET", "/v1/health/connect/web?cached", None).await;
    assert_eq!(empty.headers["X-Cache"], "HIT");
    assert!(health_ids(&empty.json()).is_empty(), "{}", empty.text());
    let idx = empty.index();
    let waiter = tokio::spawn(async move {
        let r = ok(
            a,
            "GET",
            &format!("/v1/health/connect/web?cached&index={idx}&wait=30s"),
            None,
        )
        .await;
        (r, Instant::now())
    });
    let reg = r#"{"Name":"web","Port":8080,"Connect":{"SidecarService":{
        "Checks":[{"TTL":"60s","Status":"passing"}]}}}"#;
    let registered = Instant::now();
    ok(a, "PUT", "/v1/agent/service/register", Some(reg)).await;
    let (r, woke) = waiter.await.expect("waiter");
    assert!(
        woke >= registered,
        "woke before the registration: {}",
        r.text()
    );
    let took = woke.duration_since(registered);
    eprintln!("t60: cached health query woke {took:?} after the registration");
    assert!(
        r.index() > idx,
        "woke with index {} <= {idx}: {}",
        r.index(),
        r.text()
    );
    assert!(
        took <= WAKE_BOUND,
        "blocking health query woke {took:?} after the registration (bound {WAKE_BOUND:?})"
    );
    // And the cached answer soon lists the new sidecar.
    eventually(
        "the sidecar in the agent's cached /v1/health/connect/web",
        Duration::from_secs(10),
        || async move {
            let r = crate::try_call(a, "GET", "/v1/health/connect/web?cached", None).await?;
            let ids = health_ids(&r.json());
            if ids == ["web-sidecar-proxy"] {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;

    env.shutdown().await;
}
