//! A partitioned minority cannot commit; the majority goes on; after healing every server
//! converges and nothing the minority tried to write survives.

use std::time::Duration;

use mesh_control::server::ServerError;
use mesh_tests::inproc::{TestCluster, has_intention, intention_cmd};
use tokio::time::Instant;

const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

async fn cluster() -> TestCluster {
    TestCluster::start_with(3, |c| c.write_timeout = WRITE_TIMEOUT)
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_follower_cannot_write_while_majority_commits() {
    let mut cluster = cluster().await;
    let leader = cluster.leader().await;
    let followers = cluster.followers().await;
    let (isolated, other) = (followers[0], followers[1]);

    cluster
        .write_intention(leader, "before", "write before the partition")
        .await;
    cluster.wait_converged().await;

    let frozen = cluster.partition_frozen(isolated);

    // The majority commits, on the leader and forwarded from the other follower.
    cluster
        .write_intention(
            leader,
            "majority-1",
            "leader commits with the other follower",
        )
        .await;
    cluster
        .write_intention(
            other,
            "majority-2",
            "the other follower forwards to the leader",
        )
        .await;

    // The isolated follower cannot reach the leader: its write fails, at the latest once its
    // write timeout has passed without a reachable leader.
    let started = Instant::now();
    let res = tokio::time::timeout(
        WRITE_TIMEOUT + Duration::from_secs(3),
        cluster
            .server(isolated)
            .write(intention_cmd("minority", "db")),
    )
    .await
    .expect("a write on an isolated follower must fail, not hang");
    match res {
        Err(ServerError::NoLeader | ServerError::Forward { .. }) => {}
        other => panic!("write on the isolated follower: expected NoLeader/Forward, got {other:?}"),
    }
    assert!(
        started.elapsed() < WRITE_TIMEOUT + Duration::from_secs(2),
        "the failure took {:?}, longer than the write timeout",
        started.elapsed()
    );

    frozen.assert_unchanged(&cluster, "isolated");
    assert!(
        !has_intention(cluster.server(isolated), "majority-1"),
        "isolated follower saw a majority write"
    );

    cluster.heal();
    cluster.wait_converged().await;
    for i in cluster.running() {
        let s = cluster.server(i);
        let sources = super::intention_sources(s);
        assert_eq!(
            sources,
            ["before", "majority-1", "majority-2"],
            "intentions on {} after healing",
            cluster.name(i)
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_cannot_commit_and_majority_elects_a_new_one() {
    let mut cluster = cluster().await;
    let old = cluster.leader().await;
    let old_id = cluster.server(old).id;
    cluster
        .write_intention(old, "before", "write before the partition")
        .await;
    cluster.wait_converged().await;

    let frozen = cluster.partition_frozen(old);

    // The old leader still believes it leads, but no quorum will ever acknowledge its entry.
    let minority = {
        let server = cluster.server(old).clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let res = tokio::time::timeout(
                WRITE_TIMEOUT + Duration::from_secs(3),
                server.write(intention_cmd("minority", "db")),
            )
            .await;
            (res, started.elapsed())
        })
    };

    // The majority elects a new leader among themselves and commits.
    let new = cluster.leader().await;
    assert_ne!(new, old);
    assert_ne!(cluster.server(new).id, old_id);
    cluster
        .write_intention(new, "majority-1", "new leader commits")
        .await;
    let other = cluster.followers().await[0];
    cluster
        .write_intention(other, "majority-2", "follower of the new leader forwards")
        .await;

    let (res, took) = minority.await.expect("minority write task");
    match &res {
        Ok(Ok(r)) => panic!("the isolated old leader committed a write: {r:?}"),
        Ok(Err(e)) => eprintln!("write on the isolated old leader failed after {took:?}: {e}"),
        Err(_) => eprintln!("write on the isolated old leader still pending after {took:?}"),
    }
    frozen.assert_unchanged(&cluster, "minority");
    assert!(!has_intention(cluster.server(old), "minority"));

    cluster.heal();
    cluster.wait_converged().await;
    for i in cluster.running() {
        let sources = super::intention_sources(cluster.server(i));
        assert_eq!(
            sources,
            ["before", "majority-1", "majority-2"],
            "intentions on {} after healing (the minority's write must be gone)",
            cluster.name(i)
        );
    }
    cluster.shutdown().await;
}
