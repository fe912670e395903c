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

use super::ApiError;
use crate::fsm::State;
use crate::store::SharedState;

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

/// The blocking half of a read: with `?index=N` (N > 0), waits until `index_of` over `state`
/// passes N or the query's wait elapses; without it, returns at once. The caller runs any
/// consistency barrier first.
pub async fn wait_for_index<I>(
    state: &SharedState,
    q: &QueryOptions,
    index_of: &I,
) -> Result<(), ApiError>
where
    I: Fn(&State) -> u64,
{
    if let Some(min) = q.index.filter(|i| *i > 0) {
        let deadline = Instant::now() + q.wait()?;
        let mut applied = state.subscribe();
        loop {
            if state.read(index_of) > min {
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
