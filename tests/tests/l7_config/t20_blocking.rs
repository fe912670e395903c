//! Blocking queries on `/v1/config/service-defaults/:name` through the agent: the proxy's
//! watch of its own service's protocol.

use std::time::{Duration, Instant};

use super::{Env, get, put};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_query_wakes_on_change() {
    let env = Env::start().await;
    let agent = env.agent_http;

    let first = get(agent, "/v1/config/service-defaults/api").await;
    assert_eq!(first.status, 404);
    let index = first.index();

    // Nothing changes: the query waits its full wait and answers with the same index.
    let started = Instant::now();
    let r = get(
        agent,
        &format!("/v1/config/service-defaults/api?index={index}&wait=1s"),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(r.status, 404);
    assert_eq!(r.index(), index);
    assert!(
        waited >= Duration::from_millis(950),
        "returned early after {waited:?}"
    );

    // A write wakes a waiting query well before its 60 s wait.
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let r = get(
            agent,
            &format!("/v1/config/service-defaults/api?index={index}&wait=60s"),
        )
        .await;
        (r, started.elapsed())
    });
    let w = put(
        agent,
        "/v1/config",
        r#"{"Kind":"service-defaults","Name":"api","Protocol":"http2"}"#,
    )
    .await;
    assert_eq!(w.text().trim(), "true");
    let (r, took) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("blocking query woke")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Protocol"], "http2");
    assert!(r.index() > index);
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // And a change to another kind (intentions) does not wake a service-defaults query.
    let index = r.index();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        get(
            agent,
            &format!("/v1/config/service-defaults/api?index={index}&wait=2s"),
        )
        .await
    });
    let w = put(agent, "/v1/config", super::API_INTENTIONS).await;
    assert_eq!(w.text().trim(), "true", "{}", w.text());
    let r = waiter.await.unwrap();
    assert_eq!(
        r.index(),
        index,
        "an unrelated write must not move the index"
    );
    assert!(started.elapsed() >= Duration::from_millis(1900));

    env.shutdown().await;
}
