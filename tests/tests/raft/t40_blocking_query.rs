//! Blocking queries (`?index=&wait=`) on a follower: they return as soon as the watched index
//! passes the one given, and after the wait with the same index when nothing changed.

use std::time::Duration;

use mesh_tests::http_raw;
use mesh_tests::inproc::TestCluster;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_query_wakes_on_change_and_times_out_without_one() {
    let cluster = TestCluster::start(3).await.expect("cluster starts");
    let (leader, follower) = cluster.leader_and_follower().await;
    let addr = cluster.handle(follower).http_addr;

    cluster.write_intention(leader, "first", "write").await;
    let first = http_raw::get(addr, "/v1/connect/intentions")
        .await
        .expect("read");
    assert_eq!(first.status, 200, "{}", first.text());
    let x = first.index();

    // Block on X, then change the intentions: the query answers long before its 5 s wait.
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let r = http_raw::get(addr, &format!("/v1/connect/intentions?index={x}&wait=5s")).await;
        (r, started.elapsed())
    });
    let wrote = cluster.write_intention(leader, "second", "write").await;
    let (reply, took) = waiter.await.expect("waiter task");
    let reply = reply.expect("blocking query answers");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        took < Duration::from_secs(3),
        "blocking query took {took:?} to notice a change (wait was 5s)"
    );
    assert!(
        reply.index() > x,
        "index {} did not pass {x}",
        reply.index()
    );
    assert_eq!(
        reply.index(),
        wrote.index,
        "X-Consul-Index is the write's index"
    );
    assert!(reply.text().contains("\"second\""), "{}", reply.text());

    // Nothing changes: the query waits its full 300 ms and returns the same index.
    let y = reply.index();
    let started = Instant::now();
    let idle = http_raw::get(
        addr,
        &format!("/v1/connect/intentions?index={y}&wait=300ms"),
    )
    .await
    .expect("idle blocking query answers");
    let took = started.elapsed();
    assert_eq!(idle.status, 200, "{}", idle.text());
    assert!(
        took >= Duration::from_millis(300),
        "returned early, after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "overslept: {took:?}");
    assert_eq!(idle.index(), y);
    cluster.shutdown().await;
}
