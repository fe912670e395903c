//! The client agent's cached `/v1/health/connect/:s?cached` applies `?tag=`, `?filter=` to
//! what it serves from its cache (issue 15), and refuses a bad filter with 400 and the position
//! before any cache read; seen with curl.

use std::time::Duration;

use crate::{InprocEnv, ok, wait_json};

/// Query parameters of one request, and the sidecar IDs it must answer.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// `curl` of the agent's `path`; (status, body).
async fn curl(addr: std::net::SocketAddr, path: &str, params: &[(&str, &str)]) -> (String, String) {
    let mut args: Vec<String> = ["-sS", "-G", "--max-time", "20", "-w", "\n%{http_code}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (k, v) in params {
        args.push("--data-urlencode".into());
        args.push(format!("{k}={v}"));
    }
    args.push(format!("http://{addr}{path}"));
    let out = tokio::process::Command::new("curl")
        .args(&args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_connect_answer_is_filtered() {
    let env = InprocEnv::start("client-filters", |_| {}).await;
    let a = env.http;
    for body in [
        r#"{"Name":"web","ID":"web-1","Port":8080,"Connect":{"SidecarService":{"Tags":["blue"]}}}"#,
        r#"{"Name":"web","ID":"web-2","Port":8081,"Connect":{"SidecarService":{"Tags":["green"]}}}"#,
    ] {
        ok(a, "PUT", "/v1/agent/service/register", Some(body)).await;
    }
    wait_json(
        a,
        "/v1/health/connect/web?cached",
        "both sidecars in the agent's cached answer",
        Duration::from_secs(15),
        |v| v.as_array().is_some_and(|rows| rows.len() == 2),
    )
    .await;

    let ids = |body: &str| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v.as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["Service"]["ID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cases: &[Case<'_>] = &[
        (&[("cached", ""), ("tag", "blue")], &["web-1-sidecar-proxy"]),
        (&[("cached", ""), ("tag", "BLUE"), ("tag", "green")], &[]),
        (
            &[
                ("cached", ""),
                ("filter", "Service.Proxy.DestinationServiceID == \"web-2\""),
            ],
            &["web-2-sidecar-proxy"],
        ),
        (&[("cached", ""), ("filter", "Service.Port == 1")], &[]),
    ];
    for (params, want) in cases {
        let (code, body) = curl(a, "/v1/health/connect/web", params).await;
        assert_eq!(code, "200", "{params:?}: {body}");
        assert_eq!(ids(&body), *want, "{params:?}: {body}");
    }
    let (code, body) = curl(
        a,
        "/v1/health/connect/web",
        &[("cached", ""), ("filter", "Service.Port = 1")],
    )
    .await;
    assert_eq!(code, "400", "{body}");
    assert!(
        body.starts_with("Failed to create boolean expression evaluator: 1:14 (13):"),
        "{body}"
    );
    env.shutdown().await;
}
