//! `/v1/health/*`: service instances with their node and checks, `?passing` filtered.

use axum::extract::{Path, Query, State as AxState};

use super::{Api, Params, Res, read};
use crate::fsm::State;
use crate::http::blocking::QueryOptions;

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
        Ok(s.health_entries(&service, connect, passing))
    })
    .await
}
