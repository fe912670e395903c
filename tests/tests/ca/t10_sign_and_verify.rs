//! Leaves signed by any server of a 3-server cluster verify against the published roots, and
//! CSRs naming another identity are refused.

use mesh_control::ca::{CaError, generate_csr};
use mesh_control::server::ServerError;
use mesh_control::spiffe::SpiffeId;
use mesh_tests::inproc::TestCluster;

use super::{assert_not_verified, bundle, issue_leaf, openssl_verify, roots, uri_sans, write_pem};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaf_signed_by_a_follower_verifies_against_the_roots() {
    let cluster = TestCluster::start(3).await.expect("cluster starts");
    let follower = cluster.followers().await[0];
    let server = cluster.server(follower);
    let td = server.state.read(|s| s.ca.trust_domain.clone());
    assert!(td.ends_with(".consul"), "trust domain {td:?}");

    // Signed on a follower: the root key is part of the replicated state.
    let leaf = issue_leaf(server, "web");
    let want = format!("spiffe://{td}/ns/default/dc/dc1/svc/web");
    assert_eq!(leaf.service_uri, want);
    assert_eq!(uri_sans(&leaf.cert_pem), [want]);

    let list = roots(cluster.handle(follower).http_addr).await;
    assert_eq!(list["TrustDomain"], td.as_str());
    assert_eq!(leaf.root_id, list["ActiveRootID"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let roots_pem = write_pem(dir.path(), "roots.pem", &bundle(&list));
    let leaf_pem = write_pem(dir.path(), "leaf.pem", &leaf.cert_pem);
    let out = openssl_verify(&["-CAfile", &roots_pem, &leaf_pem])
        .await
        .unwrap_or_else(|e| panic!("openssl rejects the leaf: {e}"));
    assert!(out.contains("OK"), "{out}");

    // The check really checks: a leaf does not verify against a foreign root.
    let foreign = TestCluster::start(1).await.expect("second cluster");
    let other = roots(foreign.handle(0).http_addr).await;
    let foreign_pem = write_pem(dir.path(), "foreign.pem", &bundle(&other));
    assert_not_verified(
        &foreign_pem,
        &leaf_pem,
        "a leaf verified against another cluster's root",
    )
    .await;
    foreign.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csrs_for_another_identity_are_refused() {
    let cluster = TestCluster::start(1).await.expect("cluster starts");
    let server = cluster.server(0);
    let td = server.state.read(|s| s.ca.trust_domain.clone());

    // A CSR for "db" presented by a caller authorized for "web".
    let (db_csr, _) = generate_csr(&SpiffeId::service(&td, "dc1", "db")).unwrap();
    // A CSR for another trust domain.
    let (foreign_csr, _) = generate_csr(&SpiffeId::service(
        "11111111-2222-3333-4444-555555555555.consul",
        "dc1",
        "web",
    ))
    .unwrap();
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    // (what, CSR, the CA error it must get, what the message must name); each is a 400.
    type Expected = fn(&CaError) -> bool;
    let refusals: [(&str, &str, Expected, Vec<&str>); 3] = [
        (
            "a CSR for db must not be signed for web",
            &db_csr,
            |e| matches!(e, CaError::WrongSpiffeId { .. }),
            vec!["/svc/db", "/svc/web"],
        ),
        (
            "a CSR for another trust domain must not be signed",
            &foreign_csr,
            |e| matches!(e, CaError::WrongTrustDomain { .. }),
            vec!["11111111-2222", &td],
        ),
        (
            "garbage is refused as malformed, not signed",
            garbage,
            |e| matches!(e, CaError::MalformedCsr { .. }),
            vec![],
        ),
    ];
    for (what, csr, expected, names) in refusals {
        let err = server.sign_csr("web", "dc1", csr).expect_err(what);
        assert!(
            matches!(&err, ServerError::Ca(e) if expected(e)),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        for name in names {
            assert!(msg.contains(name), "{what}: {msg}");
        }
        assert_eq!(err.http_status(), 400, "{what}");
    }

    // The right CSR still works (the refusals above were about the CSRs, not the CA).
    let leaf = super::issue_leaf(server, "web");
    assert!(leaf.service_uri.ends_with("/svc/web"));
    cluster.shutdown().await;
}
