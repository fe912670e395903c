//! Write, read, list and delete in Consul's JSON shape, through the agent and the server.

use serde_json::json;

use super::{Env, delete, get, put};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_read_list_delete_round_trip() {
    let env = Env::start().await;
    let (agent, server) = (env.agent_http, env.server_http);

    // Absent: 404 (the proxy reads this as tcp) with an index to block on.
    let r = get(agent, "/v1/config/service-defaults/api").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.index() >= 1);
    let r = get(agent, "/v1/config/service-defaults").await;
    assert_eq!((r.status, r.json()), (200, json!([])));

    // Write through the agent, with cas=0 (create only).
    let r = put(
        agent,
        "/v1/config?cas=0",
        r#"{"Kind":"service-defaults","Name":"api","Protocol":"http","Meta":{"team":"pay"}}"#,
    )
    .await;
    assert_eq!((r.status, r.text().trim()), (200, "true"), "{}", r.text());
    // A second create-only write fails the check: 200 false, as Consul answers.
    let r = put(
        agent,
        "/v1/config?cas=0",
        r#"{"Kind":"service-defaults","Name":"api","Protocol":"grpc"}"#,
    )
    .await;
    assert_eq!((r.status, r.text().trim()), (200, "false"));
    put(
        agent,
        "/v1/config",
        r#"{"Kind":"service-defaults","Name":"db"}"#,
    )
    .await;

    // Read back from both, in Consul's shape.
    for addr in [agent, server] {
        let r = get(addr, "/v1/config/service-defaults/api").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["Kind"], "service-defaults");
        assert_eq!(v["Name"], "api");
        assert_eq!(v["Protocol"], "http");
        assert_eq!(v["Meta"]["team"], "pay");
        let modify = v["ModifyIndex"].as_u64().unwrap();
        assert!(modify > 0 && v["CreateIndex"] == v["ModifyIndex"]);
        assert!(r.index() >= modify);
    }
    let v = get(agent, "/v1/config/service-defaults/api").await.json();
    let modify = v["ModifyIndex"].as_u64().unwrap();

    // Replace with the right cas; the create index stays.
    let body = r#"{"Kind":"service-defaults","Name":"api","Protocol":"grpc"}"#;
    let r = put(agent, &format!("/v1/config?cas={modify}"), body).await;
    assert_eq!(r.text().trim(), "true");
    let v2 = get(agent, "/v1/config/service-defaults/api").await.json();
    assert_eq!(v2["Protocol"], "grpc");
    assert_eq!(v2["CreateIndex"], v["CreateIndex"]);
    assert!(v2["ModifyIndex"].as_u64().unwrap() > modify);

    // List: both names, sorted.
    let list = get(server, "/v1/config/service-defaults").await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "db"]);
    assert!(
        list[1].get("Protocol").is_none(),
        "an unset protocol stays unset (tcp), omitted as Consul does: {}",
        list[1]
    );

    // Delete: a stale cas fails, the right one succeeds, a missing entry is fine.
    let r = delete(
        agent,
        &format!("/v1/config/service-defaults/api?cas={modify}"),
    )
    .await;
    assert_eq!((r.status, r.text().trim()), (200, "false"));
    let current = v2["ModifyIndex"].as_u64().unwrap();
    let r = delete(
        agent,
        &format!("/v1/config/service-defaults/api?cas={current}"),
    )
    .await;
    assert_eq!((r.status, r.text().trim()), (200, "true"));
    assert_eq!(
        get(agent, "/v1/config/service-defaults/api").await.status,
        404
    );
    let r = delete(agent, "/v1/config/service-defaults/api").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Unknown kinds are refused with the supported list.
    let r = get(agent, "/v1/config/proxy-defaults/global").await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("service-defaults, service-intentions"),
        "{}",
        r.text()
    );

    env.shutdown().await;
}
