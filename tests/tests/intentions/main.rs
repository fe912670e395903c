//! Intention precedence through a real server's HTTP API: Consul's documented precedence table
//! (single namespace: exact/exact 9, */exact 8, exact/* 6, */* 5) decides
//! `/v1/connect/intentions/check`, and the result does not depend on the order of the writes.
//! The exhaustive table and the property test over random sets live next to the pure code in
//! `control/src/intentions/tests.rs`.
//!
//! t10: `meshctl intention check` / `match --explain` as processes against `meshd dev`, and the
//! proxy's decision log in the same words.

mod t10_explain;
mod t20_fanout;

use mesh_control::server::ServerHandle;
use mesh_tests::process::http;

async fn start() -> (ServerHandle, tempfile::TempDir) {
    mesh_tests::inproc::start_single("intentions").await
}

/// Runs blocking HTTP calls off the async workers.
async fn call(
    addr: std::net::SocketAddr,
    method: &'static str,
    path: String,
    body: Option<String>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let r = http(method, addr, &path, body.as_deref()).unwrap();
        (r.status, r.body)
    })
    .await
    .unwrap()
}

async fn put(addr: std::net::SocketAddr, src: &str, dst: &str, action: &str) {
    let (status, body) = call(
        addr,
        "PUT",
        format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
        Some(format!("{{\"Action\":\"{action}\"}}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn allowed(addr: std::net::SocketAddr, src: &str, dst: &str) -> bool {
    let (status, body) = call(
        addr,
        "GET",
        format!("/v1/connect/intentions/check?source={src}&destination={dst}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["Allowed"]
        .as_bool()
        .unwrap()
}

/// The rows of the precedence table, each as an intention that contradicts the row above it.
const TABLE: [(&str, &str, &str, u64); 4] = [
    ("web", "db", "allow", 9),
    ("*", "db", "deny", 8),
    ("web", "*", "allow", 6),
    ("*", "*", "deny", 5),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn precedence_table_decides_check() {
    let (h, _dir) = start().await;
    let addr = h.http_addr;
    // Nothing written: default deny.
    assert!(!allowed(addr, "web", "db").await);
    // Written lowest precedence first, then in reverse, on two destinations: same answers.
    for (src, dst, action, _) in TABLE.iter().rev() {
        put(addr, src, dst, action).await;
    }
    let (status, body) = call(addr, "GET", "/v1/connect/intentions".into(), None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let precedences: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Precedence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        precedences,
        vec![9, 8, 6, 5],
        "listed by precedence, highest first"
    );
    assert!(
        allowed(addr, "web", "db").await,
        "exact/exact (9) allow wins"
    );
    assert!(
        !allowed(addr, "api", "db").await,
        "*/exact (8) deny beats exact/* and */*"
    );
    assert!(
        allowed(addr, "web", "cache").await,
        "exact/* (6) allow beats */* deny"
    );
    assert!(!allowed(addr, "api", "cache").await, "*/* (5) deny");
    // Flip the top row: the decision follows the highest precedence only.
    put(addr, "web", "db", "deny").await;
    assert!(!allowed(addr, "web", "db").await);
    // Remove it: */exact deny now decides web -> db.
    let (status, _) = call(
        addr,
        "DELETE",
        "/v1/connect/intentions/exact?source=web&destination=db".into(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!allowed(addr, "web", "db").await);
    put(addr, "*", "db", "allow").await;
    assert!(
        allowed(addr, "web", "db").await,
        "*/exact (8) allow now beats exact/* and */*"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_order_does_not_change_decisions() {
    let orders: [[usize; 4]; 3] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]];
    let mut answers = Vec::new();
    for order in orders {
        let (h, _dir) = start().await;
        for i in order {
            let (src, dst, action, _) = TABLE[i];
            put(h.http_addr, src, dst, action).await;
        }
        let mut row = Vec::new();
        for (src, dst) in [
            ("web", "db"),
            ("api", "db"),
            ("web", "cache"),
            ("api", "cache"),
        ] {
            row.push(allowed(h.http_addr, src, dst).await);
        }
        answers.push(row);
        h.shutdown().await;
    }
    assert_eq!(answers[0], vec![true, false, true, false]);
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
}
