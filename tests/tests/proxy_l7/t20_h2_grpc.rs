//! HTTP/2 over the mesh with h2c to the application, and gRPC (unary and server streaming)
//! allowed and denied per method.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::apps::{GrpcApp, HttpApp, pb};
use crate::{L7Chain, curl};

#[test]
fn http2_prior_knowledge_with_h2c_to_the_app() {
    let app = HttpApp::start(true);
    let chain = L7Chain::start(app.port(), Some("http2"), &[]);
    chain.set_permissions(json!([
        {"Action": "allow", "HTTP": {"PathPrefix": "/v2/", "Methods": ["GET"]}},
        {"Action": "allow", "HTTP": {"PathExact": "/trailers"}},
    ]));
    let h2 = |path: &str, extra: &[&str]| {
        let url = chain.url(path);
        let mut a = vec!["--http2-prior-knowledge"];
        a.extend_from_slice(extra);
        a.push(&url);
        curl(&a)
    };
    mesh_tests::process::eventually(
        "h2 request allowed",
        std::time::Duration::from_secs(20),
        || (h2("/v2/a", &[]).status == 200).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()));
    let r = h2("/v2/a", &[]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.body.trim(), "ok GET /v2/a");
    let r = h2("/v2/a", &["-X", "DELETE"]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = h2("/private", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    // Response trailers cross both HTTP/2 legs (curl prints them with the headers).
    let r = h2("/trailers", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "body-with-trailers");
    assert!(r.headers.contains("x-checksum: abc123"), "{}", r.headers);
    let seen = app.seen.requests();
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("/private") || l.starts_with("DELETE")),
        "{seen:?}"
    );
}

#[test]
fn grpc_unary_and_streaming_allowed_and_denied() {
    let app = GrpcApp::start();
    let chain = L7Chain::start(app.addr.port(), Some("grpc"), &[]);
    chain.set_permissions(json!([
        {"Action": "allow", "HTTP": {"PathExact": "/l7test.Echo/Unary"}},
        {"Action": "deny", "HTTP": {"PathPrefix": "/l7test.Echo/",
            "Header": [{"Name": "x-block", "Present": true}]}},
        {"Action": "allow", "HTTP": {"PathExact": "/l7test.Echo/ServerStream"}},
    ]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = chain.url("");
    rt.block_on(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let channel = loop {
            match tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("connect: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        let mut client = pb::echo_client::EchoClient::new(channel);
        let req = |m: &str, count: u32| pb::EchoRequest {
            message: m.into(),
            count,
        };
        // Unary, allowed (retried until db's proxy has the intention).
        let mut unary = None;
        while tokio::time::Instant::now() < deadline {
            match client.unary(req("hi", 0)).await {
                Ok(r) => {
                    unary = Some(r.into_inner());
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        assert_eq!(unary.expect("unary call allowed").message, "hi");

        // Server streaming, allowed: every message and the final OK status arrive.
        let mut stream = client
            .server_stream(req("s", 5))
            .await
            .expect("stream allowed")
            .into_inner();
        let mut seqs = Vec::new();
        while let Some(m) = stream.message().await.expect("stream message") {
            seqs.push(m.seq);
        }
        assert_eq!(seqs, [0, 1, 2, 3, 4]);

        // Denied: PERMISSION_DENIED for the streaming call with x-block, unary untouched
        // (permission 0 matches first).
        let mut blocked = tonic::Request::new(req("s", 5));
        blocked
            .metadata_mut()
            .insert("x-block", "1".parse().unwrap());
        let e = client.server_stream(blocked).await.expect_err("denied");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let mut blocked = tonic::Request::new(req("u", 0));
        blocked
            .metadata_mut()
            .insert("x-block", "1".parse().unwrap());
        assert!(client.unary(blocked).await.is_ok());
    });
    // Denied calls never reach the app: 1 unary + 1 stream + 1 unary with x-block.
    assert_eq!(app.calls.load(Ordering::SeqCst), 3);
    let denied = chain.db.metric(
        "meshproxy_http_requests_total",
        &["decision=\"deny\"", "rule=\"web=>db#1\""],
    );
    assert_eq!(denied, 1.0);
}
