//! `/v1/health/*`: service instances with their node and checks, `?passing` filtered, and
//! the instances a token may see (shared with the catalog's service routes); the check lists
//! by service, node and state.

use std::collections::HashMap;

use axum::extract::{Path, Query, State as AxState};

use super::authz::{Authz, Filter};
use super::{Api, Params, Res, read_filtered};
use crate::fsm::State;
use crate::http::ApiError;
use crate::http::blocking::QueryOptions;
use crate::http::list_query::{CheckRows, HealthRows, ListQuery};
use crate::model::{HealthCheck, HealthStatus};
use crate::server::Server;
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
        |s| s.service_index(&service),
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

/// Which checks a check list (`/v1/health/checks/:s`, `/node/:n`, `/state/:state`) answers.
#[derive(Clone, Copy)]
enum Checks<'a> {
    /// The checks of the instances of a service (by service name).
    OfService(&'a str),
    /// Every check on a node, its own and its services'.
    OnNode(&'a str),
    /// Every check in a state; `None` is Consul's `any`.
    InState(Option<HealthStatus>),
}

impl Checks<'_> {
    fn matches(self, c: &HealthCheck) -> bool {
        match self {
            Checks::OfService(name) => c.service_name == name,
            Checks::OnNode(node) => c.node == node,
            Checks::InState(state) => state.is_none_or(|s| c.status == s),
        }
    }
}

/// The rows of a check list: the checks `which` selects that the filter's token may read, as
/// Consul filters health checks (`node:read` on the node, and `service:read` on the service of
/// a service check). The one place these lists are built.
fn check_rows(s: &State, filter: &Filter<'_>, which: Checks<'_>) -> Vec<HealthCheck> {
    s.checks
        .values()
        .flat_map(|m| m.values())
        .filter(|c| which.matches(c))
        .filter(|c| {
            filter.keep(|a| a.node_read(&c.node))
                && (c.service_name.is_empty() || filter.keep(|a| a.service_read(&c.service_name)))
        })
        .cloned()
        .collect()
}

/// Answers a check list as a blocking query on the checks table (Consul's index for these).
/// `?filter=` applies to the rows.
async fn check_list(
    srv: &Server,
    authz: &Authz,
    p: &HashMap<String, String>,
    lq: &ListQuery<CheckRows>,
    which: Checks<'_>,
) -> Res {
    read_filtered(
        srv,
        authz,
        &QueryOptions::from_params(p)?,
        |s| s.tables.checks,
        |s, filter| lq.apply(check_rows(s, filter, which)),
    )
    .await
}

/// `GET /v1/health/checks/:service`: the checks of the service's instances.
pub(super) async fn health_checks(
    AxState(srv): Api,
    authz: Authz,
    Path(service): Path<String>,
    lq: ListQuery<CheckRows>,
    Query(p): Params,
) -> Res {
    check_list(&srv, &authz, &p, &lq, Checks::OfService(&service)).await
}

/// `GET /v1/health/node/:node`: every check on the node (`[]` for an unknown node, as Consul).
pub(super) async fn health_node(
    AxState(srv): Api,
    authz: Authz,
    Path(node): Path<String>,
    lq: ListQuery<CheckRows>,
    Query(p): Params,
) -> Res {
    check_list(&srv, &authz, &p, &lq, Checks::OnNode(&node)).await
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning` or `critical`).
pub(super) async fn health_state(
    AxState(srv): Api,
    authz: Authz,
    Path(state): Path<String>,
    lq: ListQuery<CheckRows>,
    Query(p): Params,
) -> Res {
    let state = parse_state(&state)?;
    check_list(&srv, &authz, &p, &lq, Checks::InState(state)).await
}

/// A check state of `/v1/health/state/:state`; `None` for `any`. Consul answers an unknown
/// state with an empty list; a 400 naming the accepted states tells the caller the mistake.
fn parse_state(state: &str) -> Result<Option<HealthStatus>, ApiError> {
    match state {
        "any" => Ok(None),
        "passing" => Ok(Some(HealthStatus::Passing)),
        "warning" => Ok(Some(HealthStatus::Warning)),
        "critical" => Ok(Some(HealthStatus::Critical)),
        other => Err(ApiError::bad_request(format!(
            "Invalid check state {other:?}: use any, passing, warning or critical"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_consuls_four() {
        assert_eq!(parse_state("any").unwrap(), None);
        assert_eq!(parse_state("warning").unwrap(), Some(HealthStatus::Warning));
        let e = parse_state("Passing").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("any, passing, warning or critical"),
            "{}",
            e.message
        );
    }
}
