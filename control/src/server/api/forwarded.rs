//! Runs an HTTP API request, received over gRPC from a client agent, through this server's own
//! router, so the agent needs no second connection and every endpoint behaves the same whether
//! asked of a server directly or through an agent.
//!
//! The body travels as `Bytes` from the gRPC message to the router and back, without a copy;
//! this server's own body limit (`limits.http_max_request_body`) applies to it as to a request
//! made to it directly.

use std::sync::Arc;

use axum::body::Body;
use tower::ServiceExt;

use crate::proto::{HttpHeader, HttpReply, HttpRequest};
use crate::server::Server;

/// Largest forwarded response body.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub async fn handle(server: &Arc<Server>, req: HttpRequest) -> HttpReply {
    let error = |status: u16, msg: String| HttpReply {
        status: u32::from(status),
        headers: vec![HttpHeader {
            name: "content-type".into(),
            value: "text/plain; charset=utf-8".into(),
        }],
        body: msg.into_bytes().into(),
    };
    let limit = server.config.http_limits.max_request_body;
    if req.body.len() > limit {
        let e = crate::http::serve::too_large(limit, Some(req.body.len() as u64));
        return error(e.status.as_u16(), e.message);
    }
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.path_and_query.as_str());
    for h in &req.headers {
        builder = builder.header(h.name.as_str(), h.value.as_str());
    }
    let request = match builder.body(Body::from(req.body)) {
        Ok(r) => r,
        Err(e) => return error(400, format!("malformed forwarded request: {e}")),
    };
    let router = super::router(server.clone());
    let resp = match router.oneshot(request).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some(HttpHeader {
                name: k.as_str().to_string(),
                value: v.to_str().ok()?.to_string(),
            })
        })
        .collect();
    match axum::body::to_bytes(resp.into_body(), MAX_BODY).await {
        Ok(body) => HttpReply {
            status: u32::from(status),
            headers,
            body,
        },
        Err(e) => error(500, format!("reading response: {e}")),
    }
}
