//! Bad entries are rejected at write time with the reason, and nothing is stored.

use super::{Env, get, put};

fn intentions_with_http(http: &str) -> String {
    format!(
        r#"{{"Kind":"service-intentions","Name":"api","Sources":[{{"Name":"web","Permissions":[{{"Action":"allow","HTTP":{http}}}]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_rejected_with_reason() {
    let env = Env::start().await;
    let big_regex = format!(r#"{{"PathRegex":"/(a{{1000}}){{1000}}{}"}}"#, "");
    let cases: Vec<(String, &str)> = vec![
        (
            intentions_with_http(r#"{"PathRegex":"/a(["}"#),
            "Permissions[0].HTTP.PathRegex is not a valid regular expression",
        ),
        (
            intentions_with_http(r#"{"PathPrefix":"/a","PathSufix":"/b"}"#),
            "unknown field `PathSufix`",
        ),
        (
            intentions_with_http(r#"{"Header":[{"Name":"x","Contains":"y"}]}"#),
            "unknown field `Contains`",
        ),
        (
            intentions_with_http(r#"{"PathExact":"admin"}"#),
            "PathExact doesn't start with '/'",
        ),
        (
            intentions_with_http(r#"{"PathPrefix":"/a","PathRegex":"/b"}"#),
            "at most one of PathExact, PathPrefix, or PathRegex",
        ),
        (
            intentions_with_http(r#"{"Header":[{"Name":"x","Exact":"a","Regex":"b"}]}"#),
            "exactly one of Present, Exact, Prefix, Suffix, or Regex",
        ),
        (intentions_with_http(&big_regex), "exceeds the size limit"),
        (
            intentions_with_http(r#"{"Methods":["get"]}"#),
            "invalid method \"get\"",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"api","Protocol":"udp"}"#.to_string(),
            "Protocol must be one of tcp, http, http2, grpc",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"api","Protocol":"http","Mode":"transparent"}"#
                .to_string(),
            "unknown field `Mode`",
        ),
        (r#"{"Name":"api"}"#.to_string(), "Kind must be set"),
        ("{not json".to_string(), "Request decode failed"),
    ];
    for (body, reason) in &cases {
        for addr in [env.agent_http, env.server_http] {
            let r = put(addr, "/v1/config", body).await;
            assert_eq!(r.status, 400, "{body}: {}", r.text());
            assert!(
                r.text().contains(reason),
                "{body}: want {reason:?}, got {}",
                r.text()
            );
        }
    }
    // Nothing was stored.
    for kind in ["service-defaults", "service-intentions"] {
        let r = get(env.agent_http, &format!("/v1/config/{kind}")).await;
        assert_eq!(r.json(), serde_json::json!([]), "{kind}");
    }
    let r = get(env.agent_http, "/v1/connect/intentions").await;
    assert_eq!(r.json(), serde_json::json!([]));

    env.shutdown().await;
}
