//! Reads on a follower's HTTP API: linearizable by default (they see every write acknowledged
//! before them, without the client waiting), `?stale` answers from local state, and a follower
//! cut off from the leader refuses a default read but still answers a stale one.

use std::time::Duration;

use mesh_control::cli::client::{ApiClient, CliError};
use mesh_tests::http_raw;
use mesh_tests::inproc::TestCluster;

const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn sources(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("intention list is not an array: {list}"))
        .iter()
        .map(|i| i["SourceName"].as_str().expect("SourceName").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_are_linearizable_unless_stale() {
    let mut cluster = TestCluster::start_with(3, |c| c.write_timeout = WRITE_TIMEOUT)
        .await
        .expect("cluster starts");
    let (leader, follower) = cluster.leader_and_follower().await;
    let api = ApiClient::new(&cluster.handle(follower).http_addr.to_string(), None).unwrap();

    // Each acknowledged write is visible in the very next default read on the follower.
    for k in 0..10 {
        let name = format!("lin-{k}");
        cluster
            .write_intention(leader, &name, "write on the leader")
            .await;
        let list = api
            .get_json("/v1/connect/intentions")
            .await
            .expect("default read on a follower");
        assert!(
            sources(&list).contains(&name),
            "read after acknowledged write {name} missed it: {list}"
        );
    }

    let stale = api
        .get_json("/v1/connect/intentions?stale")
        .await
        .expect("?stale is accepted");
    assert_eq!(sources(&stale).len(), 10);

    // Cut the follower off; the majority commits one more intention.
    cluster.partition(follower);
    cluster
        .write_intention(leader, "during-partition", "majority commits")
        .await;

    let addr = cluster.handle(follower).http_addr;
    let default = http_raw::get(addr, "/v1/connect/intentions")
        .await
        .expect("an answer");
    assert_eq!(
        default.status,
        500,
        "a linearizable read without a reachable leader must fail, got {} {}",
        default.status,
        default.text()
    );
    match api.get_json("/v1/connect/intentions").await {
        Err(CliError::Status { status: 500, .. }) => {}
        other => panic!("ApiClient default read on a cut-off follower: {other:?}"),
    }

    let stale = http_raw::get(addr, "/v1/connect/intentions?stale")
        .await
        .expect("an answer");
    assert_eq!(stale.status, 200, "{}", stale.text());
    let local = sources(&stale.json());
    assert_eq!(
        local.len(),
        10,
        "stale read answers the local state: {local:?}"
    );
    assert!(
        !local.contains(&"during-partition".to_string()),
        "a cut-off follower cannot know the newest write"
    );

    cluster.heal();
    cluster.wait_converged().await;
    let list = api
        .get_json("/v1/connect/intentions")
        .await
        .expect("default read after healing");
    assert!(sources(&list).contains(&"during-partition".to_string()));
    cluster.shutdown().await;
}
