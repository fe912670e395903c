//! Consul's consistency modes and blocking queries.
//!
//! A read with `?index=N` waits until the index of what it reads passes N or `wait` (default
//! 5m, at most 10m, plus up to wait/16 of random jitter so clients spread out) elapses, then
//! answers with `X-Consul-Index`. Without `?stale` the read is linearizable: the leader
//! confirms the read index first.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ApiError, Backend};
use crate::fsm::State;

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The query parameters every read understands.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct QueryOptions {
    pub index: Option<u64>,
    pub wait: Option<String>,
    pub stale: Option<String>,
    pub consistent: Option<String>,
}

impl QueryOptions {
    /// Reads `index`, `wait`, `stale` and `consistent` from a request's query parameters.
    pub fn from_params(p: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let index = match p.get("index") {
            None => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("Invalid index {s:?}")))?,
            ),
        };
        Ok(Self {
            index,
            wait: p.get("wait").cloned(),
            stale: p.get("stale").cloned(),
            consistent: p.get("consistent").cloned(),
        })
    }

    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// The wait of a blocking query, jitter included.
    pub fn wait(&self) -> Result<Duration, ApiError> {
        let base = match &self.wait {
            None => DEFAULT_WAIT,
            Some(s) => crate::duration::parse_duration(s)
                .map_err(|e| ApiError::bad_request(format!("Invalid wait time: {e}")))?,
        }
        .min(MAX_WAIT);
        let jitter_max = base.as_millis() as u64 / 16;
        let jitter = if jitter_max > 0 {
            rand::rng().random_range(0..jitter_max)
        } else {
            0
        };
        Ok(base + Duration::from_millis(jitter))
    }
}

/// Answers a read: consistency barrier, optional blocking on `index_of`, then `render` as JSON
/// with Consul's headers.
pub async fn read<T, I, R>(
    backend: &Backend,
    q: &QueryOptions,
    index_of: I,
    render: R,
) -> Result<Response, ApiError>
where
    T: Serialize,
    I: Fn(&State) -> u64,
    R: FnOnce(&State) -> Result<T, ApiError>,
{
    let Backend::Server(server) = backend;
    wait(backend, q, &index_of).await?;
    let (index, body) = server
        .state
        .read(|s| Ok::<_, ApiError>((index_of(s).max(1), render(s)?)))?;
    Ok(json_with_index(index, &body))
}

/// The first half of [`read`]: consistency barrier, then (with `?index`) wait until
/// `index_of` passes it or the wait elapses. For reads whose answer is not always a 200 JSON
/// body (a missing config entry is a 404 that still carries `X-Consul-Index`).
pub async fn wait<I>(backend: &Backend, q: &QueryOptions, index_of: &I) -> Result<(), ApiError>
where
    I: Fn(&State) -> u64,
{
    let Backend::Server(server) = backend;
    if !q.is_stale() {
        server.read_barrier().await?;
    }
    if let Some(min) = q.index.filter(|i| *i > 0) {
        let deadline = Instant::now() + q.wait()?;
        let mut applied = server.state.subscribe();
        loop {
            if server.state.read(index_of) > min {
                break;
            }
            if tokio::time::timeout_at(deadline, applied.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    Ok(())
}

/// A JSON response with `X-Consul-Index` and the leader headers.
pub fn json_with_index<T: Serialize>(index: u64, body: &T) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("X-Consul-Index", HeaderValue::from(index));
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    (headers, axum::Json(body)).into_response()
}
