//! The CA's private keys live in the replicated state but never leave a server over HTTP.

use mesh_tests::http_raw;
use mesh_tests::inproc::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_http_answer_carries_a_private_key() {
    let cluster = TestCluster::start(1).await.expect("cluster starts");
    let http = cluster.handle(0).http_addr;
    // The keys are there to leak: the state holds one per root.
    let keys = cluster.server(0).state.read(|s| {
        s.ca.roots
            .iter()
            .filter(|r| r.private_key_pem.contains("PRIVATE KEY"))
            .count()
    });
    assert_eq!(keys, 1);

    let rotate = super::rotate(http).await;
    let mut answers = vec![("PUT /v1/connect/ca/rotate".to_string(), rotate)];
    for path in [
        "/v1/connect/ca/roots",
        "/v1/connect/ca/roots?stale",
        "/v1/connect/ca/configuration",
        "/v1/internal/state-hash",
    ] {
        let r = http_raw::get(http, path).await.expect(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        answers.push((format!("GET {path}"), r));
    }
    for (what, r) in &answers {
        let text = r.text();
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} leaks a private key: {text}"
        );
        assert!(
            !text.to_ascii_lowercase().contains("privatekeypem"),
            "{what}: {text}"
        );
    }
    // The roots answer did carry the certificates (the grep above looked at real content).
    assert!(answers[1].1.text().contains("BEGIN CERTIFICATE"));
    cluster.shutdown().await;
}
