//! Rotation: a new root, cross-signed by the old one, becomes the only active root; leaves of
//! both generations keep verifying, and a workload that only trusts the old root accepts new
//! leaves through the cross-signed certificate.

use mesh_tests::inproc::TestCluster;

use super::{
    active_root, assert_not_verified, bundle, issue_leaf, openssl_verify, root_entries, roots,
    write_pem,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_cross_signs_and_keeps_old_leaves_valid() {
    let cluster = TestCluster::start(3).await.expect("cluster starts");
    let (leader, follower) = cluster.leader_and_follower().await;
    let http = cluster.handle(follower).http_addr;
    let dir = tempfile::tempdir().unwrap();

    let before = roots(http).await;
    let old_root = active_root(&before);
    assert_eq!(root_entries(&before).len(), 1);
    let old_leaf = issue_leaf(cluster.server(follower), "web");
    assert_eq!(old_leaf.root_id, old_root["ID"].as_str().unwrap());

    // Rotate through the HTTP API of a follower (forwarded to the leader).
    super::rotate(http).await;

    let after = roots(http).await;
    let entries = root_entries(&after);
    assert_eq!(entries.len(), 2, "old and new root: {after}");
    let new_root = active_root(&after);
    assert_ne!(new_root["ID"], old_root["ID"]);
    let old_now = entries
        .iter()
        .find(|r| r["ID"] == old_root["ID"])
        .expect("old root still listed");
    assert_eq!(old_now["Active"], false);
    assert!(old_now["RotatedOutAt"].as_i64().unwrap() > 0, "{old_now}");
    let inter = new_root["IntermediateCerts"]
        .as_array()
        .expect("IntermediateCerts");
    assert_eq!(inter.len(), 1, "{new_root}");
    let cross = inter[0].as_str().unwrap();
    // The leader's state agrees with what the follower answers.
    let leader_active = cluster
        .server(leader)
        .state
        .read(|s| s.ca.active().map(|r| r.root.id.clone()));
    assert_eq!(leader_active.as_deref(), new_root["ID"].as_str());

    let all_pem = write_pem(dir.path(), "roots.pem", &bundle(&after));
    let old_root_pem = write_pem(
        dir.path(),
        "old_root.pem",
        old_root["RootCert"].as_str().unwrap(),
    );
    let new_root_pem = write_pem(
        dir.path(),
        "new_root.pem",
        new_root["RootCert"].as_str().unwrap(),
    );
    let cross_pem = write_pem(dir.path(), "cross.pem", cross);
    let old_leaf_pem = write_pem(dir.path(), "old_leaf.pem", &old_leaf.cert_pem);

    // Leaves issued before the rotation still verify against the bundle.
    openssl_verify(&["-CAfile", &all_pem, &old_leaf_pem])
        .await
        .unwrap_or_else(|e| panic!("old leaf against all roots: {e}"));

    // New leaves come from the new root.
    let new_leaf = issue_leaf(cluster.server(follower), "web");
    assert_eq!(new_leaf.root_id, new_root["ID"].as_str().unwrap());
    let new_leaf_pem = write_pem(dir.path(), "new_leaf.pem", &new_leaf.cert_pem);
    openssl_verify(&["-CAfile", &new_root_pem, &new_leaf_pem])
        .await
        .unwrap_or_else(|e| panic!("new leaf against the new root: {e}"));
    // Someone who only trusts the old root accepts it with the cross-signed certificate ...
    openssl_verify(&[
        "-CAfile",
        &old_root_pem,
        "-untrusted",
        &cross_pem,
        &new_leaf_pem,
    ])
    .await
    .unwrap_or_else(|e| panic!("new leaf via the cross-signed cert: {e}"));
    // ... and not without it.
    assert_not_verified(
        &old_root_pem,
        &new_leaf_pem,
        "a new leaf verified against the old root alone",
    )
    .await;
    cluster.wait_converged().await;
    cluster.shutdown().await;
}
