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

pub(super) async fn health_service(
    AxState(srv): Api,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let passing = p.contains_key("passing");
    read(&srv, &q, State::health_index, |s| {
        Ok(health_entries(s, &service, false, passing))
    })
    .await
}

pub(super) async fn health_connect(
    AxState(srv): Api,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let passing = p.contains_key("passing");
    read(&srv, &q, State::health_index, |s| {
        Ok(health_entries(s, &service, true, passing))
    })
    .await
}
