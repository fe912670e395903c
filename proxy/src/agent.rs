//! Client of the local agent's HTTP API, and the blocking-query loops that keep the proxy's
//! view current.
//!
//! Each loop ([`spawn_watch`]) long-polls one endpoint with `?index=N&wait=…` (Consul's
//! blocking queries), publishes each new value on a `watch` channel and keeps the last good
//! value while the agent is unreachable (fail static), retrying with capped exponential backoff.
//! Start-up reads ([`AgentClient::get_with_retry`]) retry a bounded number of times, so a proxy
//! pointed at the wrong agent fails instead of hanging.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_policy::config_entries::ConfigEntry;
use mesh_policy::intentions::normalize::RequestNormalization;
use mesh_policy::model::CaRootList;
use mesh_policy::wire::ServiceHealth;
pub use mesh_policy::wire::{AgentService, LeafCert};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use mesh_policy::config_entries::Protocol;

/// How long a blocking query may wait on the agent (Consul caps at 10 minutes).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(60);

/// Extra time on top of [`BLOCKING_WAIT`] before a request is given up (the agent adds jitter).
const REQUEST_SLACK: Duration = Duration::from_secs(15);

/// Cap of the retry backoff of the watch loops.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("request to agent {path} failed")]
    Request {
        path: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading agent response body of {path} failed")]
    Body {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("agent request {path} timed out after {after:?}")]
    Timeout { path: String, after: Duration },
    #[error("agent answered {path} with HTTP 404: {body}")]
    NotFound {
        path: String,
        /// `X-Consul-Index` of the 404 (0 when absent).
        index: u64,
        body: String,
    },
    /// 403: the proxy's token (`--token`) lacks a permission, or names no token. Not retried:
    /// waiting does not grant a permission.
    #[error("agent refused {path} (HTTP 403): {body}")]
    Forbidden { path: String, body: String },
    #[error("agent answered {path} with HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("agent response of {path} is not a valid {what}")]
    Decode {
        path: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid request {path}")]
    BadRequest {
        path: String,
        #[source]
        source: http::Error,
    },
    #[error("no sidecar proxy registered on the agent for service ID {service_id:?}")]
    NoSidecar { service_id: String },
    #[error("several sidecar proxies registered for service ID {service_id:?}: {ids:?}")]
    AmbiguousSidecar {
        service_id: String,
        ids: Vec<String>,
    },
    #[error("sidecar {id:?} has no Proxy block or no public Port")]
    IncompleteSidecar { id: String },
    #[error("gave up on {path} after {attempts} attempts")]
    GaveUp {
        path: String,
        attempts: u32,
        #[source]
        last: Box<AgentError>,
    },
}

/// A response: body and `X-Consul-Index`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub index: u64,
    pub body: Bytes,
}

/// HTTP client of the local agent (loopback, one pooled HTTP/1.1 client).
#[derive(Clone)]
pub struct AgentClient {
    addr: SocketAddr,
    token: Option<Arc<str>>,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            addr,
            token: token.map(Into::into),
            http,
        }
    }

    /// `GET path`, as a blocking query from `index` when it is non-zero.
    pub async fn get(&self, path: &str, index: u64) -> Result<Answer, AgentError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = if index > 0 {
            format!("{path}{sep}index={index}&wait={}s", BLOCKING_WAIT.as_secs())
        } else {
            path.to_string()
        };
        let uri = format!("http://{}{full}", self.addr);
        let mut req = http::Request::get(uri);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", &**t);
        }
        let req = req
            .body(Empty::new())
            .map_err(|source| AgentError::BadRequest {
                path: path.to_string(),
                source,
            })?;
        let after = BLOCKING_WAIT + REQUEST_SLACK;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|source| AgentError::Request {
                    path: path.to_string(),
                    source,
                })?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| AgentError::Body {
                    path: path.to_string(),
                    source,
                })?
                .to_bytes();
            if status == http::StatusCode::NOT_FOUND {
                return Err(AgentError::NotFound {
                    path: path.to_string(),
                    index,
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                });
            }
            if status == http::StatusCode::FORBIDDEN {
                return Err(AgentError::Forbidden {
                    path: path.to_string(),
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                });
            }
            if !status.is_success() {
                return Err(AgentError::Status {
                    path: path.to_string(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                });
            }
            Ok(Answer { index, body })
        };
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| AgentError::Timeout {
                path: path.to_string(),
                after,
            })?
    }

    /// `GET path` like [`get`](Self::get), but a 404 is an answer (`None`) carrying the
    /// response's `X-Consul-Index`, so a blocking query can wait for the entry to appear.
    pub async fn get_optional(
        &self,
        path: &str,
        index: u64,
    ) -> Result<(u64, Option<Bytes>), AgentError> {
        match self.get(path, index).await {
            Ok(a) => Ok((a.index, Some(a.body))),
            Err(AgentError::NotFound { index, .. }) => Ok((index, None)),
            Err(e) => Err(e),
        }
    }

    /// `GET path` (not blocking), retried up to `attempts` times with backoff.
    pub async fn get_with_retry(&self, path: &str, attempts: u32) -> Result<Answer, AgentError> {
        let mut backoff = Duration::from_millis(100);
        let mut last = None;
        for attempt in 1..=attempts.max(1) {
            match self.get(path, 0).await {
                Ok(a) => return Ok(a),
                Err(e @ AgentError::Forbidden { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(path, attempt, error = %e, "agent request failed; retrying");
                    last = Some(e);
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Err(AgentError::GaveUp {
            path: path.to_string(),
            attempts,
            last: Box::new(last.expect("at least one attempt")),
        })
    }

    /// Finds the `connect-proxy` registered on the agent for service ID `service_id`.
    pub async fn find_sidecar(
        &self,
        service_id: &str,
        attempts: u32,
    ) -> Result<AgentService, AgentError> {
        let path = "/v1/agent/services";
        let a = self.get_with_retry(path, attempts).await?;
        let all: BTreeMap<String, AgentService> =
            serde_json::from_slice(&a.body).map_err(|source| AgentError::Decode {
                path: path.into(),
                what: "service map",
                source,
            })?;
        let mut found: Vec<AgentService> = all
            .into_values()
            .filter(|s| {
                s.kind == "connect-proxy"
                    && s.proxy
                        .as_ref()
                        .is_some_and(|p| p.destination_service_id == service_id)
            })
            .collect();
        match found.len() {
            0 => Err(AgentError::NoSidecar {
                service_id: service_id.to_string(),
            }),
            1 => {
                let s = found.remove(0);
                check_sidecar(&s)?;
                Ok(s)
            }
            _ => Err(AgentError::AmbiguousSidecar {
                service_id: service_id.to_string(),
                ids: found.into_iter().map(|s| s.id).collect(),
            }),
        }
    }
}

/// Refuses a sidecar registration the proxy cannot serve (no `Proxy` block or no port).
fn check_sidecar(s: &AgentService) -> Result<(), AgentError> {
    if s.proxy.is_none() || s.port == 0 {
        return Err(AgentError::IncompleteSidecar { id: s.id.clone() });
    }
    Ok(())
}

/// One healthy instance of an upstream: where its proxy accepts mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Service ID of the instance (its sidecar proxy).
    pub id: String,
    pub host: String,
    pub port: u16,
}

/// Decodes `/v1/health/connect/:service?passing` into endpoints (Service.Address, or the
/// node's address when the service has none), sorted by ID so round-robin is stable.
pub fn decode_endpoints(path: &str, body: &[u8]) -> Result<Vec<Endpoint>, AgentError> {
    let entries: Vec<ServiceHealth> = decode_json(path, "health result", body)?;
    let mut out: Vec<Endpoint> = entries
        .iter()
        .filter(|e| e.service.port != 0)
        .map(|e| Endpoint {
            id: e.service.id.clone(),
            host: e.address().to_string(),
            port: e.service.port,
        })
        .filter(|e| !e.host.is_empty())
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.port.cmp(&b.port)));
    Ok(out)
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(
    path: &str,
    what: &'static str,
    body: &[u8],
) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|source| AgentError::Decode {
        path: path.to_string(),
        what,
        source,
    })
}

pub fn decode_roots(path: &str, body: &[u8]) -> Result<CaRootList, AgentError> {
    decode_json(path, "CA root list", body)
}

/// What a 404 means to a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// An error like any other: retried with backoff, the last value kept.
    IsError,
    /// The resource is absent, which is a value (a config entry nobody wrote).
    IsAbsent,
}

/// The blocking-query loop behind every watch: long-polls `path` until `tx` has no receivers,
/// hands each fresh answer (its index and body; `None`: absent, only with
/// [`Missing::IsAbsent`]) to `decode` and the result to `publish`.
///
/// A value that fails to decode is logged and skipped (the previous one stays). A failed
/// query keeps the last value (fail static) and is retried with exponential backoff. Per
/// Consul's rules, an index that goes backwards resets the loop to a fresh read, and a query
/// that returns at once without blocking (the same index, or no index at all, as on a 404) is
/// paced so the loop never spins.
async fn blocking_queries<T, E>(
    client: AgentClient,
    what: &'static str,
    path: String,
    missing: Missing,
    tx: watch::Sender<Option<T>>,
    decode: impl Fn(u64, Option<&[u8]>) -> Result<T, E>,
    publish: impl Fn(&watch::Sender<Option<T>>, T),
) where
    E: fmt::Display,
{
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    while !tx.is_closed() {
        let started = Instant::now();
        let answer = match missing {
            Missing::IsError => client
                .get(&path, index)
                .await
                .map(|a| (a.index, Some(a.body))),
            Missing::IsAbsent => client.get_optional(&path, index).await,
        };
        match answer {
            Ok((new_index, body)) => {
                if failing {
                    tracing::info!(what, %path, "agent reachable again");
                    failing = false;
                }
                backoff = Duration::from_millis(100);
                let fresh = new_index != index || index == 0 || tx.borrow().is_none();
                if fresh {
                    match decode(new_index, body.as_deref()) {
                        Ok(v) => publish(&tx, v),
                        Err(e) => {
                            tracing::warn!(what, %path, error = %e, "ignoring undecodable update");
                        }
                    }
                }
                if (!fresh || new_index == 0) && started.elapsed() < Duration::from_millis(100) {
                    // The endpoint did not block (same index at once, or no index on a 404):
                    // do not spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                index = if new_index < index {
                    0
                } else {
                    new_index.max(1)
                };
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(what, %path, error = %e, "agent query failed; keeping the last value and retrying");
                }
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Long-polls `path` and publishes every new value on `tx` until `tx` has no receivers
/// ([`blocking_queries`]; a 404 is an error). `decode` gets the response index and body.
pub fn spawn_watch<T, E, F>(
    client: AgentClient,
    what: &'static str,
    path: String,
    decode: F,
    tx: watch::Sender<Option<Arc<T>>>,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    E: fmt::Display + 'static,
    F: Fn(u64, &[u8]) -> Result<T, E> + Send + 'static,
{
    tokio::spawn(blocking_queries(
        client,
        what,
        path,
        Missing::IsError,
        tx,
        move |index, body| decode(index, body.unwrap_or_default()).map(Arc::new),
        |tx, v| {
            tx.send_replace(Some(v));
        },
    ))
}

/// `GET /v1/config/service-defaults/:name` (the fields the proxy uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceDefaults {
    #[serde(default)]
    protocol: String,
}

/// Errors reading a config entry the proxy follows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDecodeError {
    #[error("config entry is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("service-defaults entry")]
    Protocol(#[source] mesh_policy::config_entries::ConfigEntryError),
    #[error("the mesh entry is not a mesh entry (Kind {kind})")]
    NotMesh { kind: String },
}

/// The declared protocol from a `service-defaults` entry (`None`: no entry, so `tcp`).
pub fn decode_protocol(body: Option<&[u8]>) -> Result<Protocol, ConfigDecodeError> {
    let Some(body) = body else {
        return Ok(Protocol::Tcp);
    };
    let d: ServiceDefaults = serde_json::from_slice(body).map_err(ConfigDecodeError::Json)?;
    d.protocol.parse().map_err(ConfigDecodeError::Protocol)
}

/// The request normalization from the `mesh` entry (`None`: no entry, so Consul's defaults).
/// Parsed with the control plane's own type, so a field it refuses on write is refused here.
pub fn decode_normalization(
    body: Option<&[u8]>,
) -> Result<RequestNormalization, ConfigDecodeError> {
    let Some(body) = body else {
        return Ok(RequestNormalization::default());
    };
    match serde_json::from_slice(body).map_err(ConfigDecodeError::Json)? {
        ConfigEntry::Mesh(m) => Ok(m.request_normalization()),
        other => Err(ConfigDecodeError::NotMesh {
            kind: other.kind().to_string(),
        }),
    }
}

/// Keeps `tx` set to the value of the config entry at `path` (`/v1/config/:kind/:name`),
/// decoded by `decode` (which gets `None` for a missing entry, HTTP 404): the loop of
/// [`spawn_watch`] with a 404 meaning "absent". A value equal to the last one is not
/// republished; a new one is logged. `what` names the value in log lines.
pub fn spawn_config_watch<T, F>(
    client: AgentClient,
    what: &'static str,
    path: String,
    decode: F,
    tx: watch::Sender<Option<T>>,
) -> JoinHandle<()>
where
    T: Copy + PartialEq + fmt::Display + Send + Sync + 'static,
    F: Fn(Option<&[u8]>) -> Result<T, ConfigDecodeError> + Send + 'static,
{
    tokio::spawn(blocking_queries(
        client,
        what,
        path,
        Missing::IsAbsent,
        tx,
        move |_, body| decode(body),
        move |tx, v| {
            tx.send_if_modified(|old| {
                let changed = *old != Some(v);
                if changed {
                    tracing::info!(what, value = %v, "config (applies to new connections and requests)");
                    *old = Some(v);
                }
                changed
            });
        },
    ))
}

/// Keeps `tx` set to the declared protocol of `service`, from its `service-defaults` config
/// entry (a missing entry means `tcp`, as in Consul).
pub fn spawn_protocol_watch(
    client: AgentClient,
    service: &str,
    tx: watch::Sender<Option<Protocol>>,
) -> JoinHandle<()> {
    let path = format!("/v1/config/service-defaults/{service}");
    spawn_config_watch(client, "service protocol", path, decode_protocol, tx)
}

/// Keeps `tx` set to the mesh's request normalization, from the `mesh` config entry (a
/// missing entry means Consul's defaults: RFC 3986 normalization on).
pub fn spawn_normalization_watch(
    client: AgentClient,
    tx: watch::Sender<Option<RequestNormalization>>,
) -> JoinHandle<()> {
    let path = "/v1/config/mesh/mesh".to_string();
    spawn_config_watch(
        client,
        "request normalization",
        path,
        decode_normalization,
        tx,
    )
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn service_defaults_protocol() {
        assert_eq!(decode_protocol(None).unwrap(), Protocol::Tcp);
        let body = br#"{"Kind":"service-defaults","Name":"db","Protocol":"grpc"}"#;
        assert_eq!(decode_protocol(Some(body)).unwrap(), Protocol::Grpc);
        let body = br#"{"Kind":"service-defaults","Name":"db"}"#;
        assert_eq!(decode_protocol(Some(body)).unwrap(), Protocol::Tcp);
        let e = decode_protocol(Some(br#"{"Protocol":"quic"}"#)).unwrap_err();
        assert!(format!("{:?}", e).contains("quic"), "{e:?}");
        assert!(decode_protocol(Some(b"nope")).is_err());
    }

    #[test]
    fn mesh_entry_normalization() {
        assert_eq!(
            decode_normalization(None).unwrap(),
            RequestNormalization::default()
        );
        let body = br#"{"Kind":"mesh","HTTP":{"Incoming":{"RequestNormalization":
            {"MergeSlashes":true,"PathWithEscapedSlashesAction":"REJECT_REQUEST"}}},
            "CreateIndex":5,"ModifyIndex":7}"#;
        let n = decode_normalization(Some(body)).unwrap();
        assert!(n.merge_slashes);
        assert!(matches!(
            decode_normalization(Some(br#"{"Kind":"service-defaults","Name":"x"}"#)),
            Err(ConfigDecodeError::NotMesh { .. })
        ));
        assert!(decode_normalization(Some(b"{")).is_err());
    }
}
