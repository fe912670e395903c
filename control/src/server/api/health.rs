//! `/v1/health/*`: service instances with their node and checks, `?passing` filtered.

use axum::extract::{Path, Query, State as AxState};

use super::{Api, Params, Res, read_params};
use crate::fsm::State;

/// `GET /v1/health/service/:service[?passing]`, and with `CONNECT`
/// `GET /v1/health/connect/:service[?passing]` (the service's Connect-capable instances).
pub(super) async fn health_service<const CONNECT: bool>(
    AxState(srv): Api,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    let passing = p.contains_key("passing");
    read_params(&srv, &p, State::health_index, |s| {
        Ok(s.health_entries(&service, CONNECT, passing))
    })
    .await
}
