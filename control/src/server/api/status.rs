//! `/v1/status/*`, `/v1/operator/raft/*` and the internal cluster views (`/v1/internal/members`,
//! `/v1/internal/state-hash`): what a server knows about the Raft cluster and its members.
//! The leader and peers are open (as Consul); the rest needs what `authz` lists.

use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::authz::Authz;
use super::{Api, Params, Res, read_filtered, read_params};
use crate::acl::Authorizer;
use crate::fsm::State;
use crate::http::ApiError;
use crate::http::blocking::{QueryOptions, json_with_index};
use crate::model::{HealthStatus, SERF_CHECK};

/// The leader's address, or `""` (as Consul while there is none) until this server is ready:
/// a leader known *and* the CA initialized here, so a health probe on this endpoint never
/// passes before leaves and intentions can be served (issue 10 point 2).
pub(super) async fn status_leader(AxState(srv): Api) -> Response {
    let addr = srv
        .readiness()
        .map(|r| r.leader_rpc_addr)
        .unwrap_or_default();
    axum::Json(addr).into_response()
}

pub(super) async fn status_peers(AxState(srv): Api) -> Response {
    let (peers, _) = srv.peers();
    let addrs: Vec<String> = peers
        .into_iter()
        .filter(|p| p.voter)
        .map(|p| p.node.rpc_addr)
        .collect();
    axum::Json(addrs).into_response()
}

pub(super) async fn raft_configuration(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    authz.require(Authorizer::operator_read)?;
    let (peers, index) = srv.configuration(p.contains_key("stale")).await?;
    let servers: Vec<_> = peers
        .into_iter()
        .map(|p| {
            json!({
                "ID": p.id.to_string(),
                "Node": p.node.name,
                "Address": p.node.rpc_addr,
                "Leader": p.leader,
                "ProtocolVersion": "3",
                "Voter": p.voter,
            })
        })
        .collect();
    Ok(json_with_index(
        index,
        &json!({ "Servers": servers, "Index": index }),
    ))
}

pub(super) async fn raft_remove_peer(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    authz.require(Authorizer::operator_write)?;
    let id = p.get("id").cloned().unwrap_or_default();
    let address = p.get("address").cloned().unwrap_or_default();
    if id.is_empty() == address.is_empty() {
        return Err(ApiError::bad_request(
            "Must specify exactly one of ?id or ?address",
        ));
    }
    srv.remove_peer(&id, &address, 0).await?;
    Ok(().into_response())
}

/// `/v1/internal/members` (used by `/v1/agent/members`): catalog nodes with their liveness as
/// Consul's member status (1 alive, 4 failed), servers tagged `role: consul`; only the nodes
/// the token may read (`node:read`), as Consul filters its members.
pub(super) async fn members(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    let mut q = QueryOptions::from_params(&p)?;
    q.stale = Some(String::new());
    let servers: Vec<String> = srv.peers().0.into_iter().map(|p| p.node.name).collect();
    read_filtered(&srv, &authz, &q, State::health_index, |s, filter| {
        Ok(s.nodes
            .values()
            .filter(|n| filter.keep(|a| a.node_read(&n.node)))
            .map(|n| {
                let alive = s
                    .checks
                    .get(&n.node)
                    .and_then(|c| c.get(SERF_CHECK))
                    .is_none_or(|c| c.status == HealthStatus::Passing);
                let role = if servers.contains(&n.node) {
                    "consul"
                } else {
                    "node"
                };
                json!({
                    "Name": n.node, "Addr": n.address, "Port": 8301,
                    "Tags": { "dc": n.datacenter, "role": role, "id": n.id },
                    "Status": if alive { 1 } else { 4 },
                })
            })
            .collect::<Vec<_>>())
    })
    .await
}

/// `GET /v1/internal/state-hash` (extension): digest of the replicated state, to compare
/// servers.
pub(super) async fn state_hash(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    authz.require(Authorizer::operator_read)?;
    read_params(
        &srv,
        &p,
        |s| s.last_index,
        |s| Ok(json!({ "Hash": s.digest(), "Index": s.last_index })),
    )
    .await
}
