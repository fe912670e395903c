//! A bare HTTP/1.1 request helper that returns status, headers and body, for tests that look
//! at what `ApiClient` hides (`X-Consul-Index`, error statuses and bodies).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// `X-Consul-Index`, which every read answers with.
    pub fn index(&self) -> u64 {
        self.headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric X-Consul-Index in {:?}", self.headers))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request to `addr` and collects the whole answer, failing after `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: http::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(Reply {
            status,
            headers,
            body,
        })
    })
    .await
    .with_context(|| format!("{path_and_query} on {addr} did not answer within {timeout:?}"))??;
    Ok(resp)
}

/// [`request`] with a 30 s ceiling.
pub async fn send(
    addr: SocketAddr,
    method: http::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Reply> {
    request(addr, method, path_and_query, body, Duration::from_secs(30)).await
}

/// `GET` with a 30 s ceiling.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<Reply> {
    send(addr, http::Method::GET, path_and_query, None).await
}
