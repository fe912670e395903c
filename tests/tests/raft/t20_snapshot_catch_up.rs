//! Servers that missed compacted history catch up from a snapshot: a brand-new server added
//! after the log was purged, and a server whose data directory was wiped.

use mesh_tests::eventually::eventually;
use mesh_tests::inproc::{CONVERGE_TIMEOUT, TestCluster, intention_cmd};
use tokio::task::JoinSet;

/// Snapshot (and compact) every this many applied entries.
const K: u64 = 50;
/// Concurrent writers while filling the log.
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_and_wiped_servers_catch_up_from_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |c| c.snapshot_threshold = K)
        .await
        .expect("cluster starts");
    let leader = cluster.leader().await;

    // 3K writes through the leader, a few at a time.
    let total = 3 * K as usize;
    let mut sources: Vec<String> = (0..total).map(|i| format!("svc-{i:03}")).collect();
    let mut set = JoinSet::new();
    for chunk in sources.chunks(total.div_ceil(WRITERS)) {
        let server = cluster.server(leader).clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            for s in chunk {
                server
                    .write(intention_cmd(&s, "db"))
                    .await
                    .unwrap_or_else(|e| panic!("write {s}: {e}"));
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("writer task");
    }

    // The leader has snapshotted and purged the log the snapshot covers.
    let purged = eventually(
        "a snapshot and a purged log on the leader",
        CONVERGE_TIMEOUT,
        || {
            let m = cluster.server(leader).raft.metrics().borrow().clone();
            let r = match (m.snapshot, m.purged) {
                (Some(_), Some(p)) => Ok(p.index),
                (s, p) => Err(format!("snapshot {s:?}, purged {p:?}")),
            };
            async move { r }
        },
    )
    .await;
    assert!(purged > 0);

    // A fresh server: the entries up to `purged` exist in no log any more, so it can only get
    // them by installing a snapshot.
    let s4 = cluster.add_server("s4").await.expect("s4 starts");
    cluster.wait_voters(4).await;
    let digest = cluster.wait_converged().await;
    let m4 = cluster.server(s4).raft.metrics().borrow().clone();
    let snap = m4.snapshot.expect("s4 has a snapshot after catching up");
    assert!(
        snap.index >= purged,
        "s4's snapshot ends at {} but the leader had purged up to {purged}",
        snap.index
    );
    sources.sort();
    assert_eq!(super::intention_sources(cluster.server(s4)), sources);
    let (peers, _) = cluster.server(s4).peers();
    assert_eq!(peers.iter().filter(|p| p.voter).count(), 4, "{peers:?}");

    // A wiped follower: same name (so same node ID) and addresses, empty disk. Writes made while
    // it is down are caught up too.
    let victim = cluster
        .followers()
        .await
        .into_iter()
        .find(|i| *i != s4)
        .expect("an original follower");
    cluster.stop(victim).await;
    let leader = cluster.leader().await;
    for i in 0..3 {
        cluster
            .write_intention(
                leader,
                &format!("while-down-{i}"),
                "3 of 4 voters still commit",
            )
            .await;
        sources.push(format!("while-down-{i}"));
    }
    sources.sort();
    cluster.restart(victim, true).await.expect("restart wiped");
    let after = cluster.wait_converged().await;
    assert_ne!(
        after, digest,
        "the writes while it was down changed the state"
    );
    let s = cluster.server(victim);
    assert_eq!(super::intention_sources(s), sources);
    assert!(
        s.raft.metrics().borrow().snapshot.is_some(),
        "the wiped server caught up without a snapshot"
    );
    assert!(
        !s.state.read(|st| st.ca.roots.is_empty()),
        "CA state restored"
    );
    cluster.wait_voters(4).await;

    // And the cluster still takes writes with the rejoined member.
    let leader = cluster.leader().await;
    cluster
        .write_intention(leader, "after-rejoin", "write after the rejoin")
        .await;
    cluster.wait_converged().await;
    assert!(mesh_tests::inproc::has_intention(
        cluster.server(victim),
        "after-rejoin"
    ));
    cluster.shutdown().await;
}
