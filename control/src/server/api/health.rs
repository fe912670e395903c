//! `/v1/health/*`: service instances with their node and checks, `?passing` filtered.

use axum::extract::{Path, Query, State as AxState};
use serde_json::json;

use super::{Api, Params, Res, read};
use crate::fsm::State;
use crate::http::blocking::QueryOptions;
use crate::model::HealthStatus;

fn health_entries(
    s: &State,
    service: &str,
    connect: bool,
    passing: bool,
) -> Vec<serde_json::Value> {
    s.service_health(service, connect)
        .into_iter()
        .filter(|h| !passing || h.status() == HealthStatus::Passing)
        .map(|h| json!({ "Node": h.node, "Service": h.service, "Checks": h.checks }))
        .collect()
}

/// `/v1/health/service/:service[?passing]`.
pub(super) async fn health_service(srv: Api, service: Path<String>, p: Params) -> Res {
    health_read(srv, service, p, false).await
}

/// `/v1/health/connect/:service[?passing]`: the service's Connect-capable instances.
pub(super) async fn health_connect(srv: Api, service: Path<String>, p: Params) -> Res {
    health_read(srv, service, p, true).await
}

async fn health_read(
    AxState(srv): Api,
    Path(service): Path<String>,
    Query(p): Params,
    connect: bool,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let passing = p.contains_key("passing");
    read(&srv, &q, State::health_index, |s| {
        Ok(health_entries(s, &service, connect, passing))
    })
    .await
}
