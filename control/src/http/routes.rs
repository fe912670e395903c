//! Route table and handlers of the HTTP API.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::json;

use super::blocking::{self, QueryOptions, json_with_index};
use super::{ApiError, Backend};
use crate::config_entries::{ConfigEntry, ConfigKind};
use crate::fsm::{Command, State};
use crate::intentions::{self, IntentionSet};
use crate::model::{
    CaConfig, HealthCheck, HealthStatus, Intention, IntentionAction, IntentionPermission, Node,
    ServiceInstance,
};
use crate::server::Server;

type Params = Query<HashMap<String, String>>;
type Res = Result<Response, ApiError>;

/// The routes every server answers from its own state (a client agent forwards them).
pub fn server_router(backend: Backend) -> Router {
    Router::new()
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route(
            "/v1/operator/raft/peer",
            axum::routing::delete(raft_remove_peer),
        )
        .route("/v1/catalog/register", put(catalog_register))
        .route("/v1/catalog/deregister", put(catalog_deregister))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/service/{service}", get(catalog_service))
        .route("/v1/catalog/connect/{service}", get(catalog_connect))
        .route("/v1/internal/members", get(members))
        .route("/v1/health/service/{service}", get(health_service))
        .route("/v1/health/connect/{service}", get(health_connect))
        .route(
            "/v1/connect/intentions",
            get(intention_list).post(intention_create),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(intention_get)
                .put(intention_put)
                .delete(intention_delete),
        )
        .route("/v1/connect/intentions/check", get(intention_check))
        .route("/v1/connect/intentions/match", get(intention_match))
        .route("/v1/connect/ca/roots", get(ca_roots))
        .route(
            "/v1/connect/ca/configuration",
            get(ca_config_get).put(ca_config_put),
        )
        .route("/v1/connect/ca/rotate", put(ca_rotate).post(ca_rotate))
        .route("/v1/internal/state-hash", get(state_hash))
        .route("/v1/config", put(config_put))
        .route("/v1/config/{kind}", get(config_list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config_get).delete(config_delete),
        )
        .fallback(|| async {
            ApiError::not_found("Invalid URL path: not a recognized HTTP API endpoint")
        })
        .with_state(backend)
}

fn server(b: &Backend) -> &Server {
    let Backend::Server(s) = b;
    s
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

fn required<'a>(p: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    p.get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("required query parameter '{key}' not set")))
}

/// The leader's address, or `""` (as Consul while there is none) until this server is ready:
/// a leader known *and* the CA initialized here, so a health probe on this endpoint never
/// passes before leaves and intentions can be served (issue 10 point 2).
async fn status_leader(AxState(b): AxState<Backend>) -> Response {
    let addr = server(&b)
        .readiness()
        .map(|r| r.leader_rpc_addr)
        .unwrap_or_default();
    axum::Json(addr).into_response()
}

async fn status_peers(AxState(b): AxState<Backend>) -> Response {
    let (peers, _) = server(&b).peers();
    let addrs: Vec<String> = peers
        .into_iter()
        .filter(|p| p.voter)
        .map(|p| p.node.rpc_addr)
        .collect();
    axum::Json(addrs).into_response()
}

async fn raft_configuration(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let (peers, index) = server(&b).configuration(p.contains_key("stale")).await?;
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

async fn raft_remove_peer(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let id = p.get("id").cloned().unwrap_or_default();
    let address = p.get("address").cloned().unwrap_or_default();
    if id.is_empty() == address.is_empty() {
        return Err(ApiError::bad_request(
            "Must specify exactly one of ?id or ?address",
        ));
    }
    server(&b).remove_peer(&id, &address, 0).await?;
    Ok(().into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CatalogRegister {
    #[serde(rename = "ID", default)]
    id: String,
    node: String,
    address: String,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    node_meta: BTreeMap<String, String>,
    #[serde(default)]
    service: Option<ServiceInstanceBody>,
    #[serde(default)]
    check: Option<HealthCheck>,
    #[serde(default)]
    checks: Vec<HealthCheck>,
    #[serde(default)]
    skip_node_update: bool,
}

/// A service in a catalog registration (Consul's `AgentService` shape; node filled in).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceInstanceBody {
    #[serde(rename = "ID", default)]
    id: String,
    service: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    proxy: Option<crate::model::ProxyConfig>,
    #[serde(default)]
    connect: crate::model::ServiceConnect,
}

async fn catalog_register(AxState(b): AxState<Backend>, body: Bytes) -> Res {
    let r: CatalogRegister = parse_body(&body)?;
    let _ = r.skip_node_update;
    let node = Node {
        id: r.id,
        node: r.node.clone(),
        address: r.address,
        datacenter: r.datacenter,
        meta: r.node_meta,
        create_index: 0,
        modify_index: 0,
    };
    let service = r.service.map(|s| ServiceInstance {
        id: if s.id.is_empty() {
            s.service.clone()
        } else {
            s.id
        },
        service: s.service,
        node: r.node.clone(),
        kind: s.kind,
        address: s.address,
        port: s.port,
        tags: s.tags,
        meta: s.meta,
        proxy: s.proxy,
        connect: s.connect,
        create_index: 0,
        modify_index: 0,
    });
    let checks = r.check.into_iter().chain(r.checks).collect();
    server(&b)
        .write(Command::Register {
            node,
            service,
            checks,
        })
        .await?;
    Ok(axum::Json(true).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CatalogDeregister {
    node: String,
    #[serde(rename = "ServiceID", default)]
    service_id: Option<String>,
    #[serde(rename = "CheckID", default)]
    check_id: Option<String>,
    #[serde(default)]
    datacenter: String,
}

async fn catalog_deregister(AxState(b): AxState<Backend>, body: Bytes) -> Res {
    let r: CatalogDeregister = parse_body(&body)?;
    let _ = r.datacenter;
    server(&b)
        .write(Command::Deregister {
            node: r.node,
            service_id: r.service_id,
            check_id: r.check_id,
        })
        .await?;
    Ok(axum::Json(true).into_response())
}

async fn catalog_services(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(
        &b,
        &q,
        |s| s.tables.services.max(s.tables.nodes),
        |s| {
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for inst in s.services.values().flat_map(|m| m.values()) {
                let tags = out.entry(inst.service.clone()).or_default();
                for t in &inst.tags {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
            }
            Ok(out)
        },
    )
    .await
}

async fn catalog_nodes(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(
        &b,
        &q,
        |s| s.tables.nodes,
        |s| Ok(s.nodes.values().cloned().collect::<Vec<_>>()),
    )
    .await
}

/// Consul's `CatalogService` rows: node fields flattened with the service's.
fn catalog_rows(s: &State, service: &str, connect: bool) -> Vec<serde_json::Value> {
    s.service_health(service, connect)
        .into_iter()
        .map(|h| {
            json!({
                "ID": h.node.id, "Node": h.node.node, "Address": h.node.address,
                "Datacenter": h.node.datacenter, "NodeMeta": h.node.meta,
                "ServiceKind": h.service.kind, "ServiceID": h.service.id,
                "ServiceName": h.service.service, "ServiceTags": h.service.tags,
                "ServiceAddress": h.service.address, "ServicePort": h.service.port,
                "ServiceMeta": h.service.meta, "ServiceProxy": h.service.proxy,
                "ServiceConnect": h.service.connect,
                "CreateIndex": h.service.create_index, "ModifyIndex": h.service.modify_index,
            })
        })
        .collect()
}

async fn catalog_service(
    AxState(b): AxState<Backend>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    catalog_read(&b, &p, &service, false).await
}

async fn catalog_connect(
    AxState(b): AxState<Backend>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    catalog_read(&b, &p, &service, true).await
}

async fn catalog_read(
    b: &Backend,
    p: &HashMap<String, String>,
    service: &str,
    connect: bool,
) -> Res {
    let q = QueryOptions::from_params(p)?;
    blocking::read(
        b,
        &q,
        |s| s.tables.services.max(s.tables.nodes),
        |s| Ok(catalog_rows(s, service, connect)),
    )
    .await
}

/// `/v1/internal/members` (used by `/v1/agent/members`): catalog nodes with their liveness as
/// Consul's member status (1 alive, 4 failed), servers tagged `role: consul`.
async fn members(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let mut q = QueryOptions::from_params(&p)?;
    q.stale = Some(String::new());
    let servers: Vec<String> = server(&b)
        .peers()
        .0
        .into_iter()
        .map(|p| p.node.name)
        .collect();
    blocking::read(&b, &q, State::health_index, |s| {
        Ok(s.nodes
            .values()
            .map(|n| {
                let alive = s
                    .checks
                    .get(&n.node)
                    .and_then(|c| c.get(crate::server::liveness::SERF_CHECK))
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

async fn health_service(
    AxState(b): AxState<Backend>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let passing = p.contains_key("passing");
    blocking::read(&b, &q, State::health_index, |s| {
        Ok(health_entries(s, &service, false, passing))
    })
    .await
}

async fn health_connect(
    AxState(b): AxState<Backend>,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let passing = p.contains_key("passing");
    blocking::read(&b, &q, State::health_index, |s| {
        Ok(health_entries(s, &service, true, passing))
    })
    .await
}

fn intentions_index(s: &State) -> u64 {
    s.tables.intentions.max(s.tables.config)
}

async fn intention_list(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(&b, &q, intentions_index, |s| Ok(s.intention_list())).await
}

/// Body of an intention write (Consul's `Intention`); read-only fields a client may echo back
/// are accepted and ignored, anything else unknown is refused.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct IntentionBody {
    #[serde(rename = "ID", default)]
    _id: Option<String>,
    #[serde(default)]
    source_name: Option<String>,
    #[serde(rename = "SourceNS", default)]
    source_ns: Option<String>,
    #[serde(default)]
    destination_name: Option<String>,
    #[serde(rename = "DestinationNS", default)]
    destination_ns: Option<String>,
    #[serde(default)]
    source_type: Option<String>,
    #[serde(default)]
    action: Option<IntentionAction>,
    #[serde(default)]
    permissions: Vec<IntentionPermission>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    _precedence: Option<u32>,
    #[serde(default)]
    _create_index: Option<u64>,
    #[serde(default)]
    _modify_index: Option<u64>,
    #[serde(default)]
    _created_at: Option<String>,
    #[serde(default)]
    _updated_at: Option<String>,
    #[serde(default)]
    _hash: Option<String>,
}

impl IntentionBody {
    fn into_intention(self, source: &str, destination: &str) -> Result<Intention, ApiError> {
        if let Some(s) = self.source_name.as_ref().filter(|s| *s != source) {
            return Err(ApiError::bad_request(format!(
                "SourceName {s:?} does not match ?source={source:?}"
            )));
        }
        if let Some(d) = self.destination_name.as_ref().filter(|d| *d != destination) {
            return Err(ApiError::bad_request(format!(
                "DestinationName {d:?} does not match ?destination={destination:?}"
            )));
        }
        let intention = Intention {
            id: String::new(),
            source_name: source.to_string(),
            source_ns: self.source_ns.unwrap_or_else(|| "default".into()),
            destination_name: destination.to_string(),
            destination_ns: self.destination_ns.unwrap_or_else(|| "default".into()),
            source_type: self.source_type.unwrap_or_else(|| "consul".into()),
            action: self.action,
            permissions: self.permissions,
            description: self.description,
            meta: self.meta,
            precedence: 0,
            create_index: 0,
            modify_index: 0,
        };
        intentions::validate(&intention).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(intention)
    }
}

/// `PUT /v1/connect/intentions/exact?source=&destination=`: upsert.
async fn intention_put(AxState(b): AxState<Backend>, Query(p): Params, body: Bytes) -> Res {
    let source = required(&p, "source")?;
    let destination = required(&p, "destination")?;
    let body: IntentionBody = parse_body(&body)?;
    let intention = body.into_intention(source, destination)?;
    server(&b)
        .write(Command::IntentionUpsert {
            intention,
            replace: true,
        })
        .await?;
    Ok(axum::Json(true).into_response())
}

/// `POST /v1/connect/intentions` (legacy create): fails if the pair already has one.
async fn intention_create(AxState(b): AxState<Backend>, body: Bytes) -> Res {
    let body: IntentionBody = parse_body(&body)?;
    let source = body
        .source_name
        .clone()
        .ok_or_else(|| ApiError::bad_request("SourceName is required"))?;
    let destination = body
        .destination_name
        .clone()
        .ok_or_else(|| ApiError::bad_request("DestinationName is required"))?;
    let intention = body.into_intention(&source, &destination)?;
    let id = intentions::legacy_id(
        &intention.source_ns,
        &source,
        &intention.destination_ns,
        &destination,
    );
    server(&b)
        .write(Command::IntentionUpsert {
            intention,
            replace: false,
        })
        .await?;
    Ok(axum::Json(json!({ "ID": id })).into_response())
}

async fn intention_get(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    let id = intentions::legacy_id("default", &source, "default", &destination);
    blocking::read(&b, &q, intentions_index, |s| {
        s.intentions
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("Intention not found"))
    })
    .await
}

async fn intention_delete(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    let result = server(&b)
        .write(Command::IntentionDelete {
            source_ns: "default".into(),
            source,
            destination_ns: "default".into(),
            destination,
        })
        .await;
    match result {
        // Consul answers a delete of a missing intention with success.
        Ok(_) | Err(crate::server::ServerError::Apply(crate::fsm::ApplyError::NotFound(_))) => {
            Ok(axum::Json(true).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn intention_check(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    blocking::read(&b, &q, intentions_index, |s| {
        let set = IntentionSet::new(s.intentions.values().cloned(), s.default_policy);
        Ok(json!({ "Allowed": set.decide(&source, &destination).allowed }))
    })
    .await
}

async fn intention_match(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let by = required(&p, "by")?.to_string();
    let by_source = match by.as_str() {
        "source" => true,
        "destination" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "'by' must be 'source' or 'destination', got {other:?}"
            )));
        }
    };
    let names: Vec<String> = p
        .get("name")
        .map(|n| vec![n.clone()])
        .filter(|v| !v[0].is_empty())
        .ok_or_else(|| ApiError::bad_request("required query parameter 'name' not set"))?;
    blocking::read(&b, &q, intentions_index, |s| {
        let set = IntentionSet::new(s.intentions.values().cloned(), s.default_policy);
        let mut out = BTreeMap::new();
        for n in &names {
            let v: Vec<Intention> = set.matches(by_source, n).into_iter().cloned().collect();
            out.insert(n.clone(), v);
        }
        Ok(out)
    })
    .await
}

async fn ca_roots(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(&b, &q, |s| s.tables.roots, |s| Ok(s.ca.root_list())).await
}

async fn ca_config_get(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(
        &b,
        &q,
        |s| s.tables.ca_config,
        |s| {
            s.ca.config
                .clone()
                .ok_or_else(|| ApiError::not_found("CA is not initialized yet"))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CaConfigBody {
    provider: String,
    #[serde(default)]
    config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    _create_index: Option<u64>,
    #[serde(default)]
    _modify_index: Option<u64>,
    #[serde(default)]
    _force_without_cross_signing: Option<bool>,
    #[serde(default)]
    _state: Option<serde_json::Value>,
}

async fn ca_config_put(AxState(b): AxState<Backend>, body: Bytes) -> Res {
    let c: CaConfigBody = parse_body(&body)?;
    server(&b)
        .set_ca_config(CaConfig {
            provider: c.provider,
            config: c.config,
            create_index: 0,
            modify_index: 0,
        })
        .await?;
    Ok(axum::Json(true).into_response())
}

/// `PUT /v1/connect/ca/rotate` (extension): new root, cross-signed by the current one.
async fn ca_rotate(AxState(b): AxState<Backend>) -> Res {
    let r = server(&b).rotate_ca(None, 0).await?;
    let list = server(&b).state.read(|s| s.ca.root_list());
    Ok(json_with_index(r.index, &list))
}

/// `GET /v1/internal/state-hash` (extension): digest of the replicated state, to compare
/// servers.
async fn state_hash(AxState(b): AxState<Backend>, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    blocking::read(
        &b,
        &q,
        |s| s.last_index,
        |s| Ok(json!({ "Hash": s.digest(), "Index": s.last_index })),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Config entries (`/v1/config`, see `crate::config_entries`).
// ---------------------------------------------------------------------------------------------

fn config_kind(kind: &str) -> Result<ConfigKind, ApiError> {
    kind.parse::<ConfigKind>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `?cas=N`: `None` when absent.
fn cas_param(p: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    p.get("cas")
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("Invalid cas index {c:?}")))
        })
        .transpose()
}

/// The outcome of a write that may carry `?cas=`: `true`, or `false` when the check failed
/// (Consul answers 200 `false`, not an error).
fn cas_outcome(
    result: Result<crate::fsm::ApplyResult, crate::server::ServerError>,
    cas: Option<u64>,
) -> Res {
    match result {
        Ok(_) => Ok(axum::Json(true).into_response()),
        Err(crate::server::ServerError::Apply(crate::fsm::ApplyError::Conflict(_)))
            if cas.is_some() =>
        {
            Ok(axum::Json(false).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v1/config[?cas=N]`: create or replace the entry in the body.
async fn config_put(AxState(b): AxState<Backend>, Query(p): Params, body: Bytes) -> Res {
    let cas = cas_param(&p)?;
    let entry = ConfigEntry::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let result = server(&b)
        .write(Command::ConfigEntrySet { entry, cas })
        .await;
    cas_outcome(result, cas)
}

/// `GET /v1/config/:kind/:name`: the entry, or 404 (with `X-Consul-Index`, so a blocking
/// query can wait for it to appear).
async fn config_get(
    AxState(b): AxState<Backend>,
    Path((kind, name)): Path<(String, String)>,
    Query(p): Params,
) -> Res {
    let kind = config_kind(&kind)?;
    let q = QueryOptions::from_params(&p)?;
    let index_of = move |s: &State| s.config_index(kind);
    blocking::wait(&b, &q, &index_of).await?;
    let (index, entry) = server(&b)
        .state
        .read(|s| (index_of(s).max(1), s.config_entry(kind, &name)));
    match entry {
        Some(e) => Ok(json_with_index(index, &e)),
        None => {
            let mut r = ApiError::not_found(format!(
                "Config entry not found for {:?} / {name:?}",
                kind.as_str()
            ))
            .into_response();
            r.headers_mut()
                .insert("X-Consul-Index", axum::http::HeaderValue::from(index));
            Ok(r)
        }
    }
}

/// `GET /v1/config/:kind`: every entry of the kind (`[]` when none).
async fn config_list(
    AxState(b): AxState<Backend>,
    Path(kind): Path<String>,
    Query(p): Params,
) -> Res {
    let kind = config_kind(&kind)?;
    let q = QueryOptions::from_params(&p)?;
    blocking::read(
        &b,
        &q,
        move |s| s.config_index(kind),
        move |s| Ok(s.config_entries(kind)),
    )
    .await
}

/// `DELETE /v1/config/:kind/:name[?cas=N]`.
async fn config_delete(
    AxState(b): AxState<Backend>,
    Path((kind, name)): Path<(String, String)>,
    Query(p): Params,
) -> Res {
    let kind = config_kind(&kind)?;
    let cas = cas_param(&p)?;
    let result = server(&b)
        .write(Command::ConfigEntryDelete { kind, name, cas })
        .await;
    cas_outcome(result, cas)
}
