//! `PUT /v1/connect/ca/configuration`: a leaf-only setting is stored without a new root and
//! applies to the next leaf; a change of the root's key or lifetime rotates.

use mesh_tests::http_raw::{self, Reply};
use mesh_tests::inproc::TestCluster;

use super::{active_root, issue_leaf, root_entries, roots, seconds_left};

async fn get_config(http: std::net::SocketAddr) -> serde_json::Value {
    let r = http_raw::get(http, "/v1/connect/ca/configuration")
        .await
        .expect("GET configuration");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn put_config(http: std::net::SocketAddr, body: &serde_json::Value) -> Reply {
    http_raw::send(
        http,
        http::Method::PUT,
        "/v1/connect/ca/configuration",
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
    .expect("PUT configuration answers")
}

/// Sends the current configuration back with `Config[key] = value`.
async fn change_config(http: std::net::SocketAddr, key: &str, value: serde_json::Value) -> Reply {
    let mut body = body_of(&get_config(http).await);
    body["Config"][key] = value;
    put_config(http, &body).await
}

/// The root list, asserting it holds `want` roots (`what` says why).
async fn roots_counted(http: std::net::SocketAddr, want: usize, what: &str) -> serde_json::Value {
    let list = roots(http).await;
    assert_eq!(root_entries(&list).len(), want, "{what}: {list}");
    list
}

/// The configuration as a client would send it back: `Provider` and `Config`.
fn body_of(config: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "Provider": config["Provider"], "Config": config["Config"] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaf_ttl_change_does_not_rotate_but_root_key_changes_do() {
    let cluster = TestCluster::start(1).await.expect("cluster starts");
    let server = cluster.server(0);
    let http = cluster.handle(0).http_addr;

    let config = get_config(http).await;
    assert_eq!(config["Provider"], "consul");
    assert_eq!(config["Config"]["LeafCertTTL"], "72h", "{config}");
    let default_leaf = issue_leaf(server, "web");
    let left = seconds_left(&default_leaf.cert_pem);
    assert!(
        (71 * 3600..=72 * 3600).contains(&left),
        "default leaf lives {left}s"
    );

    let root_before = active_root(&roots(http).await);

    // Only LeafCertTTL changes: stored, no rotation, next leaf lives about an hour.
    let r = change_config(http, "LeafCertTTL", "1h".into()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = roots_counted(http, 1, "a LeafCertTTL change rotated").await;
    assert_eq!(active_root(&after)["ID"], root_before["ID"]);
    assert_eq!(get_config(http).await["Config"]["LeafCertTTL"], "1h");
    let leaf = issue_leaf(server, "web");
    let left = seconds_left(&leaf.cert_pem);
    assert!(
        (55 * 60..=3600).contains(&left),
        "leaf after LeafCertTTL=1h lives {left}s more"
    );

    // A key the built-in CA cannot issue (P-384) is refused with the reason; nothing rotates.
    let r = change_config(http, "PrivateKeyBits", 384.into()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("unsupported root key"), "{}", r.text());
    roots_counted(http, 1, "a refused change rotated").await;
    assert_eq!(get_config(http).await["Config"]["PrivateKeyBits"], 256);

    // RootCertTTL changes: a new root.
    let r = change_config(http, "RootCertTTL", "43800h".into()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after_ttl = roots_counted(http, 2, "RootCertTTL did not rotate").await;
    assert_ne!(active_root(&after_ttl)["ID"], root_before["ID"]);
    let config = get_config(http).await;
    assert_eq!(config["Config"]["RootCertTTL"], "43800h");
    // The leaf TTL set earlier survived the rotations.
    assert_eq!(config["Config"]["LeafCertTTL"], "1h");

    // An invalid leaf TTL is refused and changes nothing.
    let r = change_config(http, "LeafCertTTL", "soon".into()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(get_config(http).await["Config"]["LeafCertTTL"], "1h");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configuration_read_back_can_be_put_unchanged() {
    // What a Consul client does: GET, edit, PUT the whole object back (CreateIndex included).
    let cluster = TestCluster::start(1).await.expect("cluster starts");
    let http = cluster.handle(0).http_addr;
    let mut config = get_config(http).await;
    config["Config"]["LeafCertTTL"] = "2h".into();
    let r = put_config(http, &config).await;
    assert_eq!(
        r.status,
        200,
        "echoing the GET body back: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(get_config(http).await["Config"]["LeafCertTTL"], "2h");
    assert_eq!(root_entries(&roots(http).await).len(), 1);
    cluster.shutdown().await;
}
