//! The server's HTTP API: every route a server answers from its own replicated state (a client
//! agent forwards these over `Catalog.Http`, see [`forwarded`]), one module per resource.
//! Shared plumbing (errors, `?index=&wait=` parsing, `X-Consul-Index`) is `crate::http`; what
//! is server-only (the linearizable read barrier before a read) is here.

mod acl;
mod authz;
mod ca;
mod catalog;
mod config;
pub mod forwarded;
mod health;
mod intentions;
mod status;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::Response;
use axum::routing::{get, put};
use serde::Serialize;

use crate::acl::{AclPolicy, AclRole};
use crate::fsm::State;
use crate::http::ApiError;
use crate::http::blocking::{self, QueryOptions, json_with_index};
use crate::server::Server;

type Api = AxState<Arc<Server>>;
type Params = Query<HashMap<String, String>>;
type Res = Result<Response, ApiError>;

/// The routes every server answers from its own state (a client agent forwards them).
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v1/status/leader", get(status::status_leader))
        .route("/v1/status/peers", get(status::status_peers))
        .route(
            "/v1/operator/raft/configuration",
            get(status::raft_configuration),
        )
        .route(
            "/v1/operator/raft/peer",
            axum::routing::delete(status::raft_remove_peer),
        )
        .route("/v1/catalog/register", put(catalog::catalog_register))
        .route("/v1/catalog/deregister", put(catalog::catalog_deregister))
        .route("/v1/catalog/services", get(catalog::catalog_services))
        .route("/v1/catalog/nodes", get(catalog::catalog_nodes))
        .route(
            "/v1/catalog/node/{node}",
            get(catalog::catalog_node::<false>),
        )
        .route(
            "/v1/catalog/node-services/{node}",
            get(catalog::catalog_node::<true>),
        )
        .route("/v1/catalog/datacenters", get(catalog::catalog_datacenters))
        .route(
            "/v1/catalog/service/{service}",
            get(catalog::catalog_service::<false>),
        )
        .route(
            "/v1/catalog/connect/{service}",
            get(catalog::catalog_service::<true>),
        )
        .route("/v1/internal/members", get(status::members))
        .route(
            "/v1/health/service/{service}",
            get(health::health_service::<false>),
        )
        .route(
            "/v1/health/connect/{service}",
            get(health::health_service::<true>),
        )
        .route("/v1/health/checks/{service}", get(health::health_checks))
        .route("/v1/health/node/{node}", get(health::health_node))
        .route("/v1/health/state/{state}", get(health::health_state))
        .route(
            "/v1/connect/intentions",
            get(intentions::intention_list).post(intentions::intention_create),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(intentions::intention_get)
                .put(intentions::intention_put)
                .delete(intentions::intention_delete),
        )
        .route(
            "/v1/connect/intentions/check",
            get(intentions::intention_check),
        )
        .route(
            "/v1/connect/intentions/match",
            get(intentions::intention_match),
        )
        .route("/v1/connect/ca/roots", get(ca::ca_roots))
        .route(
            "/v1/connect/ca/configuration",
            get(ca::ca_config_get).put(ca::ca_config_put),
        )
        .route(
            "/v1/connect/ca/rotate",
            put(ca::ca_rotate).post(ca::ca_rotate),
        )
        .route("/v1/internal/state-hash", get(status::state_hash))
        .route("/v1/config", put(config::config_put))
        .route("/v1/config/{kind}", get(config::config_list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config::config_get).delete(config::config_delete),
        )
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/token", put(acl::token_create))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token_get)
                .put(acl::token_update)
                .delete(acl::token_delete),
        )
        .route("/v1/acl/token/{id}/clone", put(acl::token_clone))
        .route("/v1/acl/tokens", get(acl::token_list))
        .merge(acl_object_routes::<AclPolicy>("policies"))
        .merge(acl_object_routes::<AclRole>("roles"))
        .fallback(crate::http::not_found)
        .with_state(server)
}

/// A JSON body as Consul decodes it ([`crate::http::json_body`]).
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    crate::http::json_body(body)
}

fn required<'a>(p: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    p.get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("required query parameter '{key}' not set")))
}

/// Answers a read: consistency barrier, optional blocking on `index_of`, then `render` as JSON
/// with Consul's headers.
async fn read<T, I, R>(srv: &Server, q: &QueryOptions, index_of: I, render: R) -> Res
where
    T: Serialize,
    I: Fn(&State) -> u64,
    R: FnOnce(&State) -> Result<T, ApiError>,
{
    wait(srv, q, &index_of).await?;
    let (index, body) = srv
        .state
        .read(|s| Ok::<_, ApiError>((index_of(s).max(1), render(s)?)))?;
    Ok(json_with_index(index, &body))
}

/// The routes of one kind of ACL object (`policy` or `role`): create, read by ID or name,
/// update, delete and the list at `/v1/acl/<plural>`.
fn acl_object_routes<O: acl::AclObject>(plural: &str) -> Router<Arc<Server>> {
    let one = format!("/v1/acl/{}", O::KIND);
    Router::new()
        .route(&one, put(acl::object_create::<O>))
        .route(
            &format!("{one}/name/{{name}}"),
            get(acl::object_get::<O, true>),
        )
        .route(
            &format!("{one}/{{id}}"),
            get(acl::object_get::<O, false>)
                .put(acl::object_update::<O>)
                .delete(acl::object_delete::<O>),
        )
        .route(&format!("/v1/acl/{plural}"), get(acl::object_list::<O>))
}

/// [`read`] with the query options as the request gave them in `p` (the common case).
async fn read_params<T: Serialize>(
    srv: &Server,
    p: &HashMap<String, String>,
    index_of: impl Fn(&State) -> u64,
    render: impl FnOnce(&State) -> Result<T, ApiError>,
) -> Res {
    read(srv, &QueryOptions::from_params(p)?, index_of, render).await
}

/// [`read`] of a list the caller's token filters: `render` keeps what the [`authz::Filter`]
/// allows, and the answer says whether it dropped anything (`X-Consul-Results-Filtered-By-ACLs`).
async fn read_filtered<T, I, R>(
    srv: &Server,
    authz: &authz::Authz,
    q: &QueryOptions,
    index_of: I,
    render: R,
) -> Res
where
    T: Serialize,
    I: Fn(&State) -> u64,
    R: FnOnce(&State, &authz::Filter<'_>) -> Result<T, ApiError>,
{
    let filter = authz.filter();
    let response = read(srv, q, index_of, |s| render(s, &filter)).await?;
    Ok(filter.mark(response))
}

/// The first half of [`read`]: consistency barrier (unless `?stale`), then (with `?index`) wait
/// until `index_of` passes it or the wait elapses. For reads whose answer is not always a 200
/// JSON body (a missing config entry is a 404 that still carries `X-Consul-Index`).
async fn wait<I>(srv: &Server, q: &QueryOptions, index_of: &I) -> Result<(), ApiError>
where
    I: Fn(&State) -> u64,
{
    if !q.is_stale() {
        srv.read_barrier().await?;
    }
    // A blocking query ends when the server stops, with the current answer: otherwise one
    // forwarded by an agent over gRPC holds the graceful shutdown for up to its `wait`.
    tokio::select! {
        r = blocking::wait_for_index(&srv.state, q, index_of) => r,
        () = srv.shutdown_signal() => Ok(()),
    }
}
