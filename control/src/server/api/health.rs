//! `/v1/health/*`: service instances with their node and checks, `?passing` filtered, and
//! the instances a token may see (shared with the catalog's service routes).

use axum::extract::{Path, Query, State as AxState};

use super::authz::{Authz, Filter};
use super::{Api, Params, Res, read_filtered};
use crate::fsm::State;
use crate::http::blocking::QueryOptions;
use crate::http::list_query::{HealthRows, ListQuery};
use crate::wire::ServiceHealth;

/// `GET /v1/health/service/:service[?passing]`, and with `CONNECT`
/// `GET /v1/health/connect/:service[?passing]` (the service's Connect-capable instances);
/// `?tag=`, `?node-meta=` and `?filter=` as `http::list_query` reads them.
pub(super) async fn health_service<const CONNECT: bool>(
    AxState(srv): Api,
    authz: Authz,
    Path(service): Path<String>,
    lq: ListQuery<HealthRows>,
    Query(p): Params,
) -> Res {
    let passing = p.contains_key("passing");
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        State::health_index,
        |s, filter| lq.apply(visible_instances(s, filter, &service, CONNECT, passing)),
    )
    .await
}

/// The instances of `service` the filter's token may read, as Consul filters them: each needs
/// `node:read` on its node and `service:read` on its own service name. A `connect` query
/// also needs `service:read` on `service` itself (else nothing, as Consul answers).
pub(super) fn visible_instances(
    s: &State,
    filter: &Filter<'_>,
    service: &str,
    connect: bool,
    passing: bool,
) -> Vec<ServiceHealth> {
    let mut all = s.health_entries(service, connect, passing);
    if connect && !filter.authz().allows(|a| a.service_read(service)) {
        filter.keep_if(all.is_empty());
        return Vec::new();
    }
    all.retain(|h| {
        filter.keep(|a| a.node_read(&h.node.node))
            && filter.keep(|a| a.service_read(&h.service.service))
    });
    all
}
