//! Bad input through the agent: each request is refused with 400 and a reason naming what is
//! wrong, and nothing is registered, locally or in the catalog; deregistering an unknown
//! service is a 404.

use crate::{InprocEnv, call, ok, wait_node_in_catalog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_reason() {
    let env = InprocEnv::start("client-bad", |_| {}).await;
    let a = env.http;

    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "malformed JSON",
            "/v1/agent/service/register",
            r#"{"Name":"bad1","#,
            "Request decode failed",
        ),
        (
            "unknown field",
            "/v1/agent/service/register",
            r#"{"Name":"bad2","Bogus":1}"#,
            "unknown field `Bogus`",
        ),
        (
            "check with two kinds",
            "/v1/agent/service/register",
            r#"{"Name":"bad3","Check":{"TTL":"10s","TCP":"127.0.0.1:1","Interval":"1s"}}"#,
            "exactly one of TTL, TCP or HTTP, but got TTL and TCP",
        ),
        (
            "TCP check without an interval",
            "/v1/agent/service/register",
            r#"{"Name":"bad4","Check":{"TCP":"127.0.0.1:1"}}"#,
            "Interval is required for TCP checks",
        ),
        (
            "bad check on a sidecar",
            "/v1/agent/service/register",
            r#"{"Name":"bad5","Connect":{"SidecarService":{"Checks":[{"HTTP":"https://x/","Interval":"1s"}]}}}"#,
            "https",
        ),
        (
            "authorize without Target",
            "/v1/agent/connect/authorize",
            r#"{"ClientCertURI":"spiffe://a.consul/ns/default/dc/dc1/svc/web"}"#,
            "Target service must be specified",
        ),
    ];
    for (what, path, body, reason) in cases {
        let method = if path.ends_with("authorize") {
            "POST"
        } else {
            "PUT"
        };
        let r = call(a, method, path, Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {} {}", r.status, r.text());
        assert!(
            r.text().contains(reason),
            "{what}: the reason should contain {reason:?}: {}",
            r.text()
        );
    }
    // The failing check is named in the error.
    let r = call(
        a,
        "PUT",
        "/v1/agent/service/register",
        Some(r#"{"Name":"bad4","Check":{"TCP":"127.0.0.1:1"}}"#),
    )
    .await;
    assert!(r.text().contains("service:bad4"), "{}", r.text());

    let r = call(a, "PUT", "/v1/agent/service/deregister/nope", None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("nope"), "{}", r.text());

    // Nothing registered: not locally...
    let services = ok(a, "GET", "/v1/agent/services", None).await.json();
    assert_eq!(services, serde_json::json!({}), "{services}");
    let checks = ok(a, "GET", "/v1/agent/checks", None).await.json();
    assert_eq!(checks, serde_json::json!({}), "{checks}");
    // ...nor in the catalog, once anti-entropy has synced the (empty) local state.
    wait_node_in_catalog(env.server_http, "client-bad").await;
    let catalog = ok(env.server_http, "GET", "/v1/catalog/services", None)
        .await
        .json();
    let names: Vec<&String> = catalog.as_object().expect("object").keys().collect();
    assert!(
        names.iter().all(|n| !n.starts_with("bad")),
        "bad registrations reached the catalog: {names:?}"
    );

    env.shutdown().await;
}

/// A leaf for a name that cannot be a SPIFFE service is refused by the agent at once (curl
/// sees 400 with the reason), before any signing request: nothing is cached, so nothing is
/// retried in the background. It used to be a 500 after 15 s, retried every 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_for_an_impossible_name_is_refused_at_once() {
    let env = InprocEnv::start("client-leafname", |_| {}).await;
    let url = format!("http://{}/v1/agent/connect/ca/leaf/bad%20name", env.http);
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", &url])
        .output()
        .await
        .expect("run curl");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    assert_eq!(code, "400", "{text}");
    assert!(body.contains("cannot be part of a SPIFFE ID"), "{body}");
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    assert_eq!(env.agent.agent.leaves.len(), 0, "an entry was cached");
    // A valid name still gets its leaf.
    let r = call(env.http, "GET", "/v1/agent/connect/ca/leaf/good-name", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}
