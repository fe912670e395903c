//! A `service-intentions` entry is the intentions of its destination: it reaches the proxies'
//! feed with `Permissions`, the legacy API sees it, and the L4 authorize endpoint denies the
//! L7 source (Consul: an intention with permissions is a deny at L4).

use mesh_tests::eventually::eventually;
use serde_json::json;
use std::time::Duration;

use super::{API_INTENTIONS, Env, get, put};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intentions_entry_feeds_proxies_and_l4_denies_it() {
    let env = Env::start().await;
    let agent = env.agent_http;

    // A legacy intention for the same destination is replaced by the entry.
    let r = put(
        agent,
        "/v1/connect/intentions/exact?source=old&destination=api",
        r#"{"Action":"allow"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(agent, "/v1/config", API_INTENTIONS).await;
    assert_eq!((r.status, r.text().trim()), (200, "true"), "{}", r.text());

    // Read back in Consul's shape, sources in precedence order.
    let e = get(agent, "/v1/config/service-intentions/api").await.json();
    assert_eq!(e["Kind"], "service-intentions");
    let names: Vec<&str> = e["Sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops", "web"], "`old` is gone");
    assert_eq!(e["Sources"][0]["Precedence"], 9);
    assert_eq!(e["Sources"][0]["Type"], "consul");
    assert_eq!(
        e["Sources"][1]["Permissions"][2]["HTTP"]["Header"][1],
        json!({"Name": "X-Debug", "Present": true, "Invert": true})
    );

    // The legacy view shows the same intentions.
    let list = get(agent, "/v1/connect/intentions").await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // The proxies' feed (agent cache) carries the Permissions.
    let feed = eventually(
        "intentions feed has the entry",
        Duration::from_secs(20),
        || async {
            let v = get(agent, "/v1/agent/connect/intentions/api").await.json();
            let web = v["Intentions"]
                .as_array()
                .and_then(|l| l.iter().find(|i| i["SourceName"] == "web"))
                .cloned()
                .ok_or_else(|| format!("no web source in {v}"))?;
            Ok((v, web))
        },
    )
    .await;
    let (v, web) = feed;
    assert_eq!(web["Permissions"].as_array().unwrap().len(), 3);
    assert_eq!(web["Permissions"][1]["HTTP"]["PathRegex"], "/v[0-9]+/.*");
    assert!(web.get("Action").is_none());
    let td = v["TrustDomain"].as_str().unwrap().to_string();

    // L4 authorize: the L7 source is denied, the L4 one allowed.
    let authorize = |svc: &str| {
        format!(r#"{{"Target":"api","ClientCertURI":"spiffe://{td}/ns/default/dc/dc1/svc/{svc}"}}"#)
    };
    let r = put(agent, "/v1/agent/connect/authorize", &authorize("web")).await;
    let a = r.json();
    assert_eq!(a["Authorized"], false, "{a}");
    assert!(a["Reason"].as_str().unwrap().contains("L7"), "{a}");
    let r = put(agent, "/v1/agent/connect/authorize", &authorize("ops")).await;
    assert_eq!(r.json()["Authorized"], true);
    // The server's check endpoint agrees.
    let r = get(
        agent,
        "/v1/connect/intentions/check?source=web&destination=api",
    )
    .await;
    assert_eq!(r.json()["Allowed"], false);

    // Deleting the entry removes its intentions.
    let r = super::delete(agent, "/v1/config/service-intentions/api").await;
    assert_eq!(r.status, 200);
    assert_eq!(get(agent, "/v1/connect/intentions").await.json(), json!([]));
    assert_eq!(
        get(agent, "/v1/config/service-intentions/api").await.status,
        404
    );

    env.shutdown().await;
}
