//! The HTTP client `meshctl` uses to talk to the local agent or server API.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error_chain::error_chain;

/// Errors talking to the API, each printed as one line by `meshctl`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the agent at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("Unexpected response code: {status} ({body})")]
    Status { status: u16, body: String },
    #[error("malformed response from {path}: {message}")]
    Decode { path: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error(transparent)]
    KeyFile(#[from] crate::seal::key_file::KeyFileError),
}

/// A minimal HTTP/1.1 client bound to one API address.
pub struct ApiClient {
    addr: String,
    /// Sent as `X-Consul-Token`; kept out of `Debug` and of every error.
    token: Option<http::HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client of the API at `addr`, sending `token` (if any) on every request. A token that
    /// cannot be a header value is refused here rather than dropped: a request sent without
    /// it would run as the anonymous token.
    pub fn new(addr: &str, token: Option<&str>) -> Result<Self, CliError> {
        let addr = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| {
                let mut v = http::HeaderValue::from_str(t).map_err(|_| {
                    CliError::Usage("the ACL token is not a valid HTTP header value".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, CliError>(v)
            })
            .transpose()?;
        Ok(Self {
            addr,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request and returns the body of a 2xx answer; anything else is an error.
    pub async fn call(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, CliError> {
        let uri = format!("http://{}{}", self.addr, path_and_query);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::Usage(format!("invalid request {uri}: {e}")))?;
        let unreachable = |message: String| CliError::Unreachable {
            addr: self.addr.clone(),
            message,
        };
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(30), self.client.request(req))
                .await
                .map_err(|_| unreachable("timed out".into()))?
                .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(CliError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    }

    /// GET and decode JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, CliError> {
        let body = self.call(http::Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(|e| CliError::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
