//! The agent's own HTTP endpoints (`/v1/agent/*`, and `?cached` health reads), and the
//! passthrough that sends every other API request to a server over the agent's connection.
//!
//! `/v1/config/*` (config entries) goes through the passthrough with its query string, so a
//! proxy's blocking query on its `service-defaults` entry waits on the server (up to the 10 min
//! cap), and a missing entry's 404 keeps its `X-Consul-Index`. L7 `Permissions` need no route
//! of their own: they are part of the intentions served by
//! `/v1/agent/connect/intentions/:destination` from the cache.
//!
//! With ACLs on, every route here checks the caller's token as Consul's agent does (see
//! `acl`; the table is in `routes`), and lists are filtered to what it may read. The
//! passthrough does not check: it forwards the caller's `X-Consul-Token` / `Authorization`
//! headers (a `?token=` stays in the path) and the server enforces.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use super::acl::{Caller, filter};
use super::authorize::{self, AuthorizeRequest};
use super::cache::{CacheError, CacheKey, Cached, Value};
use super::conn::Credential;
use super::leaf::LeafError;
use super::local::LocalError;
use super::service_health::Aggregated;
use super::{Agent, TokenKind, maintenance, registration};
use crate::http::blocking::{QueryOptions, json_with_index};
use crate::http::list_query::{AgentServiceRows, CheckRows, HealthRows, ListQuery};
use crate::http::token::{TOKEN_HEADER, request_token};
use crate::http::{ApiError, mark_filtered};
use crate::model::{HealthCheck, HealthStatus, ServiceInstance};
use crate::proto::{HttpHeader, HttpRequest};
use crate::wire::AgentService;

type Params = Query<HashMap<String, String>>;
type Res = Result<Response, ApiError>;
type St = State<Arc<Agent>>;

/// The agent's routes. With ACLs on, what each requires (Consul's "ACL Required"):
///
/// | route | permission |
/// |---|---|
/// | `GET /v1/agent/self` | `agent:read` on this node |
/// | `GET /v1/agent/members` | forwarded with the caller's token (the server filters) |
/// | `GET /v1/agent/services`, `/v1/agent/checks` | filtered: `service:read` on each service, `node:read` on this node for node checks |
/// | `GET /v1/agent/service/:id` | `service:read` on its service |
/// | `PUT /v1/agent/service/register` | `service:write` on the service, its sidecar, a proxy's destination, and the service it replaces |
/// | `PUT /v1/agent/service/deregister/:id` | `service:write` on that service |
/// | `PUT /v1/agent/check/{pass,warn,fail,update}/:id` | `service:write` on the check's service, `node:write` on this node for a node check |
/// | `GET /v1/agent/connect/ca/roots` | none |
/// | `GET /v1/agent/connect/ca/leaf/:service` | `service:write` on the service |
/// | `POST /v1/agent/connect/authorize` | `service:write` on the target |
/// | `GET /v1/agent/connect/intentions/:dest` | `intentions:read` on the destination |
/// | `GET /v1/health/connect/:s?cached` | `service:read` on the service; instances on nodes without `node:read` are filtered out |
/// | `PUT /v1/agent/token/:kind` | `acl:write` (401 with ACLs off, as Consul) |
/// | `GET /v1/agent/health/service/id/:id` | `service:read` on its service |
/// | `GET /v1/agent/health/service/name/:name` | `service:read` on `:name` |
/// | `PUT /v1/agent/maintenance` | `node:write` on this node |
/// | `PUT /v1/agent/service/maintenance/:id` | `service:write` on its service |
pub fn routes(cached_health: bool) -> Router<Arc<Agent>> {
    let r = Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/{op}/{id}", put(check_op))
        .route("/v1/agent/connect/ca/roots", get(roots))
        .route("/v1/agent/connect/ca/leaf/{service}", get(leaf))
        // Consul registers POST only, but py-consul (and python-consul before it) sends PUT:
        // accept both so such clients work unmodified.
        .route(
            "/v1/agent/connect/authorize",
            post(authorize).put(authorize),
        )
        .route(
            "/v1/agent/connect/intentions/{destination}",
            get(intentions),
        )
        .route("/v1/agent/token/{kind}", put(set_token))
        .route(
            "/v1/agent/health/service/id/{id}",
            get(service_health_by_id),
        )
        .route(
            "/v1/agent/health/service/name/{name}",
            get(service_health_by_name),
        )
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        );
    if cached_health {
        r.route("/v1/health/connect/{service}", get(health_connect))
    } else {
        r
    }
}

/// Reads a cache entry for `?index=&wait=` as a blocking query.
async fn cached(a: &Agent, key: &CacheKey, q: &QueryOptions) -> Result<Cached, ApiError> {
    a.cache
        .get(key, q.index.unwrap_or(0), q.wait()?)
        .await
        .map_err(cache_error)
}

/// A cache read that failed: 503 while the servers have nothing servable yet (a client should
/// retry), 500 when no server answered.
fn cache_error(e: CacheError) -> ApiError {
    match e {
        CacheError::NotReady { .. } => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        },
        CacheError::Unavailable { .. } => unavailable(e),
    }
}

/// A cached JSON body served as is, with its index.
fn raw_json(index: u64, body: Bytes, cache_hit: bool) -> Response {
    let mut h = HeaderMap::new();
    h.insert("X-Consul-Index", HeaderValue::from(index));
    if cache_hit {
        h.insert("X-Cache", HeaderValue::from_static("HIT"));
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    (h, body).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    }
}

fn dc(agent: &Agent, p: &HashMap<String, String>) -> String {
    p.get("dc")
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| agent.config.datacenter.clone())
}

/// Consul's `/v1/agent/self` shape: `Config`, `Member` (as `/v1/agent/members` lists it),
/// node `Meta`; `Coord`, `Stats` and `DebugConfig` are present but empty (no network
/// coordinates or runtime statistics here).
async fn agent_self(State(a): St, caller: Caller) -> Res {
    caller.require(|z| z.agent_read(&a.config.node).check())?;
    let node = a.node();
    let server = a.config.http_addr.is_none();
    Ok(axum::Json(json!({
        "Config": {
            "Datacenter": a.config.datacenter,
            "PrimaryDatacenter": a.config.datacenter,
            "NodeName": a.config.node,
            "NodeID": node.id,
            "Revision": "",
            "Server": server,
            "Version": env!("CARGO_PKG_VERSION"),
        },
        "Coord": null,
        "Member": {
            "Name": a.config.node,
            "Addr": a.config.address,
            "Port": 8301,
            "Status": 1,
            "Tags": {
                "dc": a.config.datacenter,
                "id": node.id,
                "role": if server { "consul" } else { "node" },
                "build": env!("CARGO_PKG_VERSION"),
            },
            "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
        },
        "Stats": {},
        "DebugConfig": {},
        "Meta": node.meta,
    }))
    .into_response())
}

async fn members(State(a): St, headers: HeaderMap, Query(p): Params) -> Res {
    let req = Outgoing {
        method: "GET",
        path: "/v1/internal/members".into(),
        body: Bytes::new(),
        timeout: Duration::from_secs(30),
    };
    forward(&a, &headers, &p, req).await
}

/// Waits (blocking query) until the local index passes `?index`.
async fn wait_local(a: &Agent, q: &QueryOptions) -> Result<u64, ApiError> {
    let mut rx = a.local_index.subscribe();
    if let Some(min) = q.index.filter(|i| *i > 0) {
        let wait = q.wait()?;
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > min)).await;
    }
    let i = *rx.borrow();
    Ok(i.max(1))
}

async fn services(
    State(a): St,
    caller: Caller,
    lq: ListQuery<AgentServiceRows>,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let index = wait_local(&a, &q).await?;
    let mut list: Vec<_> = a.local.lock().services.values().cloned().collect();
    let filtered = filter(&mut list, |s| {
        caller.allows(|z| z.service_read(&s.service).is_allowed())
    });
    let map: BTreeMap<String, AgentService> = list
        .iter()
        .map(|s| {
            let view = AgentService::from_instance(s, &a.config.datacenter);
            (s.id.clone(), view)
        })
        .collect();
    Ok(mark_filtered(
        json_with_index(index, &lq.apply_map(map)?),
        filtered,
    ))
}

async fn service(State(a): St, Path(id): Path<String>, caller: Caller, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let index = wait_local(&a, &q).await?;
    let s = a.local.lock().services.get(&id).cloned();
    match s {
        Some(s) => {
            caller.require(|z| z.service_read(&s.service).check())?;
            Ok(json_with_index(
                index,
                &AgentService::from_instance(&s, &a.config.datacenter),
            ))
        }
        None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
    }
}

/// The service names a registration writes: each service (a sidecar is one of its own), a
/// proxy's destination, and what it replaces under the same ID (Consul's
/// `vetServiceRegister`/`vetServiceUpdate`).
fn written_services(a: &Agent, specs: &[registration::ServiceSpec]) -> Vec<String> {
    let local = a.local.lock();
    let mut names = Vec::new();
    for spec in specs {
        let s = &spec.service;
        names.push(s.service.clone());
        if let Some(p) = s
            .proxy
            .as_ref()
            .filter(|p| !p.destination_service_name.is_empty())
        {
            names.push(p.destination_service_name.clone());
        }
        if let Some(old) = local.services.get(&s.id) {
            names.push(old.service.clone());
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn register(State(a): St, caller: Caller, Query(p): Params, body: Bytes) -> Res {
    let replace = p.contains_key("replace-existing-checks");
    let used = a.local.lock().sidecar_ports();
    let specs = registration::parse(&body, &a.config.node, &used)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for name in written_services(&a, &specs) {
        caller.require(|z| z.service_write(&name).check())?;
    }
    let ids: Vec<String> = specs.iter().map(|s| s.service.id.clone()).collect();
    a.local
        .lock()
        .register(
            &a.config.node,
            specs,
            replace,
            &a.check_updates,
            &a.config.checks,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Err(e) = a.persist(ids.clone()).await {
        // As Consul does: a registration that cannot be persisted is undone, so the agent
        // never serves a service it would lose on restart.
        {
            let mut local = a.local.lock();
            for id in &ids {
                let _ = local.deregister(id);
            }
        }
        if let Err(cleanup) = a.persist(ids).await {
            tracing::warn!(error = %cleanup, "cannot remove the files of an undone registration");
        }
        a.local_changed();
        return Err(unavailable(format!(
            "cannot persist the service registration, so it was not registered: {e}"
        )));
    }
    a.local_changed();
    Ok(StatusCode::OK.into_response())
}

async fn deregister(State(a): St, Path(id): Path<String>, caller: Caller) -> Res {
    let name = a.local.lock().services.get(&id).map(|s| s.service.clone());
    if let Some(name) = name {
        caller.require(|z| z.service_write(&name).check())?;
    }
    let removed = a
        .local
        .lock()
        .deregister(&id)
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    a.local_changed();
    a.persist(removed).await.map_err(|e| {
        unavailable(format!(
            "service {id:?} was deregistered but its persisted file could not be removed \
             (it would come back on restart): {e}"
        ))
    })?;
    Ok(StatusCode::OK.into_response())
}

async fn checks(State(a): St, caller: Caller, lq: ListQuery<CheckRows>) -> Res {
    let mut list = a.local.lock().effective_checks();
    let filtered = filter(&mut list, |c| {
        caller.allows(|z| {
            if c.service_id.is_empty() {
                z.node_read(&c.node).is_allowed()
            } else {
                z.service_read(&c.service_name).is_allowed()
            }
        })
    });
    let map: BTreeMap<String, crate::model::HealthCheck> =
        list.into_iter().map(|c| (c.check_id.clone(), c)).collect();
    Ok(mark_filtered(
        axum::Json(lq.apply_map(map)?).into_response(),
        filtered,
    ))
}

/// A check may be updated with `service:write` on its service, or `node:write` on this node
/// for a node check. An unknown check is left to the update (404).
fn require_check_write(a: &Agent, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let owner = a
        .local
        .lock()
        .checks
        .get(id)
        .map(|c| c.check.service_name.clone());
    match owner {
        None => Ok(()),
        Some(service) if service.is_empty() => {
            caller.require(|z| z.node_write(&a.config.node).check())
        }
        Some(service) => caller.require(|z| z.service_write(&service).check()),
    }
}

async fn ttl(a: &Agent, id: &str, status: HealthStatus, note: &str) -> Res {
    let service = {
        let mut local = a.local.lock();
        local.ttl_update(id, status, note).map_err(|e| match e {
            super::local::LocalError::UnknownCheck(_) => ApiError::not_found(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        })?;
        local.service_of_check(id)
    };
    // The new TTL deadline must survive a restart, even when the status did not change.
    if let Some(sid) = service.filter(|s| !s.is_empty()) {
        a.persist(vec![sid]).await.map_err(|e| {
            unavailable(format!(
                "check {id:?} was updated but its new TTL deadline could not be persisted: {e}"
            ))
        })?;
    }
    Ok(StatusCode::OK.into_response())
}

/// `/v1/agent/check/{pass,warn,fail}/:id?note=` and `/v1/agent/check/update/:id` (body
/// `{Status, Output}`): a TTL check's new state.
async fn check_op(
    State(a): St,
    Path((op, id)): Path<(String, String)>,
    caller: Caller,
    Query(p): Params,
    body: Bytes,
) -> Res {
    require_check_write(&a, &caller, &id)?;
    let note = p.get("note").map_or("", String::as_str);
    match op.as_str() {
        "pass" => ttl(&a, &id, HealthStatus::Passing, note).await,
        "warn" => ttl(&a, &id, HealthStatus::Warning, note).await,
        "fail" => ttl(&a, &id, HealthStatus::Critical, note).await,
        "update" => check_update(&a, &id, &body).await,
        _ => Err(ApiError::not_found(format!(
            "unknown check operation {op:?}"
        ))),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CheckUpdateBody {
    status: String,
    #[serde(default)]
    output: String,
}

async fn check_update(a: &Agent, id: &str, body: &Bytes) -> Res {
    let b: CheckUpdateBody = crate::http::json_body(body)?;
    let status = match b.status.as_str() {
        "passing" => HealthStatus::Passing,
        "warning" => HealthStatus::Warning,
        "critical" => HealthStatus::Critical,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid check status: {other:?}"
            )));
        }
    };
    ttl(a, id, status, &b.output).await
}

/// No ACL required (the roots are public), as in Consul.
async fn roots(State(a): St, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let key = CacheKey::roots(&dc(&a, &p));
    let c = cached(&a, &key, &q).await?;
    match c.value {
        Value::Roots(r) => Ok(json_with_index(c.index, &*r)),
        _ => Err(unavailable("unexpected cache value")),
    }
}

async fn leaf(State(a): St, Path(service): Path<String>, caller: Caller, Query(p): Params) -> Res {
    // Refused here, before any signing request: the CA would refuse it anyway, and a cached
    // entry for it would only retry in the background.
    if let Err(e) = mesh_policy::spiffe::check_service_name(&service) {
        let shown: String = service.chars().take(80).collect();
        let more = if shown.len() < service.len() {
            "..."
        } else {
            ""
        };
        return Err(ApiError::bad_request(format!(
            "service name {shown:?}{more} {e}"
        )));
    }
    caller.require(|z| z.service_write(&service).check())?;
    let q = QueryOptions::from_params(&p)?;
    let l = a
        .leaf(&service, &caller, q.index.unwrap_or(0), q.wait()?)
        .await
        .map_err(|e| match e {
            LeafError::Refused { status, .. } => ApiError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message: e.to_string(),
            },
            LeafError::Unavailable { .. } => unavailable(e),
        })?;
    Ok(json_with_index(l.modify_index, &*l))
}

async fn authorize(State(a): St, caller: Caller, Query(p): Params, body: Bytes) -> Res {
    let r: AuthorizeRequest = crate::http::json_body(&body)?;
    let _ = &r.client_cert_serial;
    if r.target.is_empty() {
        return Err(ApiError::bad_request("Target service must be specified"));
    }
    if r.client_cert_uri.is_empty() {
        return Err(ApiError::bad_request("ClientCertURI must be specified"));
    }
    caller.require(|z| z.service_write(&r.target).check())?;
    let key = CacheKey::intentions(&r.target, &dc(&a, &p)).with_token(caller.token());
    let c = a
        .cache
        .get(&key, 0, Duration::ZERO)
        .await
        .map_err(cache_error)?;
    let Value::Intentions(view) = c.value else {
        return Err(unavailable("unexpected cache value"));
    };
    Ok(axum::Json(authorize::decide(&view, &r.target, &r.client_cert_uri)).into_response())
}

/// `/v1/agent/connect/intentions/:destination` (extension): the cached intentions that can
/// apply to `destination` with the default policy and trust domain, as a blocking query, so a
/// proxy can authorize connections itself without a request per connection.
async fn intentions(
    State(a): St,
    Path(destination): Path<String>,
    caller: Caller,
    Query(p): Params,
) -> Res {
    caller.require(|z| z.intentions_read(&destination).check())?;
    let q = QueryOptions::from_params(&p)?;
    let key = CacheKey::intentions(&destination, &dc(&a, &p)).with_token(caller.token());
    let c = cached(&a, &key, &q).await?;
    match c.value {
        Value::Intentions(view) => Ok(raw_json(c.index, view.raw.clone(), false)),
        _ => Err(unavailable("unexpected cache value")),
    }
}

/// `/v1/health/connect/:s`: from the cache with `?cached` (then `?tag=`, `?node-meta=` and
/// `?filter=` apply here), otherwise from the servers.
async fn health_connect(
    State(a): St,
    Path(service): Path<String>,
    caller: Caller,
    lq: ListQuery<HealthRows>,
    Query(p): Params,
    req: Request,
) -> Res {
    if !p.contains_key("cached") {
        return passthrough(State(a), req).await;
    }
    caller.require(|z| z.service_read(&service).check())?;
    let q = QueryOptions::from_params(&p)?;
    let key = CacheKey::health(&service, p.contains_key("passing"), &dc(&a, &p))
        .with_token(caller.token());
    let c = cached(&a, &key, &q).await?;
    let Value::Health(health) = c.value else {
        return Err(unavailable("unexpected cache value"));
    };
    // The body is served as cached unless an instance's node is not readable.
    let readable = |node: &str| caller.allows(|z| z.node_read(node).is_allowed());
    let all = health.nodes.iter().all(|n| readable(n));
    let body = if all {
        health.raw.clone()
    } else {
        health
            .filtered(readable)
            .map_err(|e| unavailable(format!("cached health entries: {e}")))?
    };
    let body = lq.apply_json(&body)?.map_or(body, Bytes::from);
    Ok(mark_filtered(raw_json(c.index, body, true), !all))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TokenBody {
    token: String,
}

/// `PUT /v1/agent/token/:kind` (`agent`, `default`, and their legacy names): replaces one of
/// the agent's tokens without a restart. Needs `acl:write`; 401 with ACLs off, as Consul.
async fn set_token(State(a): St, Path(kind): Path<String>, caller: Caller, body: Bytes) -> Res {
    if !caller.enforced() {
        return Err(ApiError::unauthorized("ACL support disabled"));
    }
    caller.require(|z| z.acl_write().check())?;
    let kind = TokenKind::parse(&kind)
        .ok_or_else(|| ApiError::not_found(format!("Token {kind:?} is unknown")))?;
    let b: TokenBody = crate::http::json_body(&body)?;
    // A token must be able to travel to the servers (gRPC metadata).
    Credential::token(Some(&b.token))
        .map_err(|_| ApiError::bad_request("Token must be visible ASCII"))?;
    a.set_token(kind, b.token);
    Ok(StatusCode::OK.into_response())
}

/// Forwards any other request to a server.
pub async fn passthrough(State(a): St, req: Request) -> Res {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let Query(p): Params = Query::try_from_uri(req.uri()).unwrap_or_default();
    let (parts, body) = req.into_parts();
    // The serve loop read the body within its limit (`crate::http::serve`): this takes that
    // one buffer as is, and it is what the RPC carries.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let out = Outgoing {
        method: &method,
        path,
        body,
        // Blocking queries may wait up to 10m (+jitter) on the server.
        timeout: Duration::from_secs(11 * 60),
    };
    forward(&a, &parts.headers, &p, out).await
}

/// A request forwarded to a server.
struct Outgoing<'a> {
    method: &'a str,
    path: String,
    body: Bytes,
    timeout: Duration,
}

/// A forwarded request that failed at the RPC layer: Consul's "No known Consul servers" only
/// when no server could be reached; the reason otherwise (e.g. a body the server will not take).
fn forward_error(s: &tonic::Status) -> ApiError {
    let (status, message) = match s.code() {
        tonic::Code::Unavailable => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("No known Consul servers: {}", s.message()),
        ),
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the server refused the request's size: {}", s.message()),
        ),
        tonic::Code::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("the server did not answer in time: {}", s.message()),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("forwarding the request to a server failed: {}", s.message()),
        ),
    };
    ApiError { status, message }
}

/// The headers a forwarded request carries: its content type, and the caller's token headers
/// (or the agent's default token when the caller gave none), for the server to enforce.
fn forwarded_headers(a: &Agent, headers: &HeaderMap, has_token: bool) -> Vec<HttpHeader> {
    let header = |name: &str, value: &str| HttpHeader {
        name: name.to_string(),
        value: value.to_string(),
    };
    let mut out = vec![header("content-type", "application/json")];
    for name in [TOKEN_HEADER, axum::http::header::AUTHORIZATION.as_str()] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            out.push(header(name, v));
        }
    }
    if !has_token && let Some(default) = a.conn.identity().default_token() {
        out.push(header(TOKEN_HEADER, &default));
    }
    out
}

/// Runs `out` on a server for the caller whose request carried `headers` and `params`: the
/// RPC carries the caller's token (not the agent's), and so do the forwarded headers.
async fn forward(
    a: &Agent,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    out: Outgoing<'_>,
) -> Res {
    let token = request_token(headers, params);
    let default = a.conn.identity().default_token();
    // A token that cannot travel in metadata still travels in the forwarded request, where
    // the server judges it.
    let credential = Credential::token(token.or(default.as_deref())).unwrap_or_default();
    let req = HttpRequest {
        method: out.method.to_string(),
        path_and_query: out.path,
        body: out.body,
        headers: forwarded_headers(a, headers, token.is_some()),
    };
    let timeout = out.timeout;
    let reply = a
        .conn
        .call_as(credential, |mut c| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(timeout);
            async move { c.http(r).await }
        })
        .await
        .map_err(|s| forward_error(&s))?
        .into_inner();
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(reply.status as u16).unwrap_or(StatusCode::BAD_GATEWAY));
    for h in &reply.headers {
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        resp = resp.header(h.name.as_str(), h.value.as_str());
    }
    resp.body(Body::from(reply.body))
        .map_err(|e| unavailable(format!("bad forwarded response: {e}")))
}

/// One entry of the agent's service health answers (Consul's `AgentServiceChecksInfo`).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo {
    aggregated_status: Aggregated,
    service: AgentService,
    checks: Vec<HealthCheck>,
}

/// The local services `select` picks, each with the checks deciding its health (its own and
/// the node's) and their aggregate.
fn local_service_health(
    a: &Agent,
    select: impl Fn(&ServiceInstance) -> bool,
) -> Vec<ServiceChecksInfo> {
    let local = a.local.lock();
    let checks = local.effective_checks();
    local
        .services
        .values()
        .filter(|s| select(s))
        .map(|s| {
            let mine: Vec<HealthCheck> = checks
                .iter()
                .filter(|c| c.service_id.is_empty() || c.service_id == s.id)
                .cloned()
                .collect();
            ServiceChecksInfo {
                aggregated_status: Aggregated::of(&mine),
                service: AgentService::from_instance(s, &a.config.datacenter),
                checks: mine,
            }
        })
        .collect()
}

/// Whether the caller asked for the status word as plain text (`Accept: text/plain` or
/// `?format=text`), as Consul decides it.
fn wants_text(headers: &HeaderMap, p: &HashMap<String, String>) -> bool {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    accept || p.get("format").is_some_and(|f| f == "text")
}

/// A health answer: `status` with the word `text` as plain text, or `body` as JSON.
fn health_answer(
    status: StatusCode,
    as_text: bool,
    text: &str,
    body: &impl serde::Serialize,
) -> Response {
    if as_text {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            text.to_string(),
        )
            .into_response()
    } else {
        (status, axum::Json(body)).into_response()
    }
}

/// `GET /v1/agent/health/service/id/:id`: one local instance's aggregated health.
async fn service_health_by_id(
    State(a): St,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    let as_text = wants_text(&headers, &p);
    let Some(info) = local_service_health(&a, |s| s.id == id).pop() else {
        let reason = format!("ServiceId {id} not found");
        let body = json!({"AggregatedStatus": "critical", "Service": null, "Checks": null});
        return Ok(health_answer(
            StatusCode::NOT_FOUND,
            as_text,
            &reason,
            &body,
        ));
    };
    caller.require(|z| z.service_read(&info.service.service).check())?;
    Ok(health_answer(
        info.aggregated_status.status_code(),
        as_text,
        info.aggregated_status.as_str(),
        &info,
    ))
}

/// `GET /v1/agent/health/service/name/:name`: every local instance of the service, the code
/// and word of the worst (the first of equal codes, as Consul), 404 when there is none.
async fn service_health_by_name(
    State(a): St,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Params,
) -> Res {
    caller.require(|z| z.service_read(&name).check())?;
    let infos = local_service_health(&a, |s| s.service == name);
    let worst = infos.iter().map(|i| i.aggregated_status).reduce(|w, x| {
        if x.status_code() > w.status_code() {
            x
        } else {
            w
        }
    });
    let (status, text) = match worst {
        Some(w) => (w.status_code(), w.as_str().to_string()),
        None => (
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not Found"),
        ),
    };
    Ok(health_answer(
        status,
        wants_text(&headers, &p),
        &text,
        &infos,
    ))
}

/// `?enable=` of a maintenance request, refused as Consul does.
fn enable_param(p: &HashMap<String, String>) -> Result<bool, ApiError> {
    maintenance::parse_enable(p.get("enable").map(String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `PUT /v1/agent/maintenance?enable=&reason=`: node maintenance on or off.
async fn node_maintenance(State(a): St, caller: Caller, Query(p): Params) -> Res {
    let enable = enable_param(&p)?;
    caller.require(|z| z.node_write(&a.config.node).check())?;
    let changed = {
        let mut local = a.local.lock();
        if enable {
            let reason = p.get("reason").map_or("", String::as_str);
            local.add_fixed_check(maintenance::node_check(&a.config.node, reason))
        } else {
            local.remove_check(maintenance::NODE_CHECK_ID)
        }
    };
    if changed {
        a.local_changed();
    }
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=&reason=`: one service's maintenance on or
/// off; persisted with the service.
async fn service_maintenance(
    State(a): St,
    Path(id): Path<String>,
    caller: Caller,
    Query(p): Params,
) -> Res {
    let enable = enable_param(&p)?;
    let service =
        a.local.lock().services.get(&id).cloned().ok_or_else(|| {
            ApiError::not_found(LocalError::UnknownService(id.clone()).to_string())
        })?;
    caller.require(|z| z.service_write(&service.service).check())?;
    let changed = {
        let mut local = a.local.lock();
        if enable {
            let reason = p.get("reason").map_or("", String::as_str);
            local.add_fixed_check(maintenance::service_check(&service, reason))
        } else {
            local.remove_check(&maintenance::service_check_id(&id))
        }
    };
    if changed {
        a.local_changed();
        a.persist(vec![id.clone()]).await.map_err(|e| {
            unavailable(format!(
                "maintenance of service {id:?} was turned {} but could not be persisted \
                 (a restart would undo it): {e}",
                if enable { "on" } else { "off" }
            ))
        })?;
    }
    Ok(StatusCode::OK.into_response())
}
