//! `/v1/catalog/*`: registering and reading nodes and service instances (Consul's shapes),
//! the services of one node, and the datacenter list.
//! What each route requires of the caller's token is in `authz`.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::authz::{Authz, Filter};
use super::health::visible_instances;
use super::{Api, Params, Res, parse_body, read_filtered};
use crate::fsm::{Command, State};
use crate::http::ApiError;
use crate::http::blocking::QueryOptions;
use crate::http::list_query::{AgentServiceRows, CatalogServiceRows, ListQuery, NodeRows};
use crate::model::{HealthCheck, Node, ServiceInstance};
use crate::server::Server;
use crate::wire::AgentService;

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
/// Unknown fields are refused, so a key in another spelling is matched to its field
/// (`http::json_body`) instead of being dropped; Consul's fields this catalog does not keep are
/// accepted and ignored (the `_` fields: weights, tagged addresses, enterprise and peering
/// fields, read-only indexes).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
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
    #[serde(rename = "TaggedAddresses", default)]
    _tagged_addresses: Option<serde_json::Value>,
    #[serde(rename = "Weights", default)]
    _weights: Option<serde_json::Value>,
    #[serde(rename = "EnableTagOverride", default)]
    _enable_tag_override: Option<bool>,
    #[serde(rename = "SocketPath", default)]
    _socket_path: Option<String>,
    #[serde(rename = "Namespace", default)]
    _namespace: Option<String>,
    #[serde(rename = "Partition", default)]
    _partition: Option<String>,
    #[serde(rename = "PeerName", default)]
    _peer_name: Option<String>,
    #[serde(rename = "Locality", default)]
    _locality: Option<serde_json::Value>,
    #[serde(rename = "Datacenter", default)]
    _datacenter: Option<String>,
    #[serde(rename = "CreateIndex", default)]
    _create_index: Option<u64>,
    #[serde(rename = "ModifyIndex", default)]
    _modify_index: Option<u64>,
    #[serde(rename = "ContentHash", default)]
    _content_hash: Option<String>,
    #[serde(rename = "LocallyRegisteredAsSidecar", default)]
    _locally_registered_as_sidecar: Option<bool>,
}

pub(super) async fn catalog_register(AxState(srv): Api, authz: Authz, body: Bytes) -> Res {
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
    let checks: Vec<HealthCheck> = r.check.into_iter().chain(r.checks).collect();
    authorize_register(&srv, &authz, &node, service.as_ref(), &checks)?;
    srv.write(Command::Register {
        node,
        service,
        checks,
    })
    .await?;
    Ok(axum::Json(true).into_response())
}

/// Consul's `vetRegisterWithACL`: `node:write` on the node, `service:write` on the service
/// (and on the service a proxy fronts), `service:write` on the service of each service check.
fn authorize_register(
    srv: &Server,
    authz: &Authz,
    node: &Node,
    service: Option<&ServiceInstance>,
    checks: &[HealthCheck],
) -> Result<(), ApiError> {
    authz.require(|a| a.node_write(&node.node))?;
    if let Some(s) = service {
        authz.require(|a| a.service_write(&s.service))?;
        if let Some(target) = s.connect_target() {
            authz.require(|a| a.service_write(target))?;
        }
    }
    for c in checks.iter().filter(|c| !c.service_id.is_empty()) {
        let name = match service.filter(|s| s.id == c.service_id) {
            Some(s) => Some(s.service.clone()),
            None => srv
                .state
                .read(|s| service_name(s, &node.node, &c.service_id)),
        };
        // A check of a service the node does not have is refused by the state machine; the
        // node:write above already covers the node.
        if let Some(name) = name {
            authz.require(|a| a.service_write(&name))?;
        }
    }
    Ok(())
}

/// The service name of instance `id` on `node`.
fn service_name(s: &State, node: &str, id: &str) -> Option<String> {
    s.services
        .get(node)
        .and_then(|m| m.get(id))
        .map(|i| i.service.clone())
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

pub(super) async fn catalog_deregister(AxState(srv): Api, authz: Authz, body: Bytes) -> Res {
    let r: CatalogDeregister = parse_body(&body)?;
    let _ = r.datacenter;
    // Consul's `vetDeregisterWithACL`: a service (or a service's check) needs service:write
    // on its name, the node or a node check node:write. What is not found needs node:write
    // (its service cannot be known), failing closed.
    let service = srv.state.read(|s| match (&r.service_id, &r.check_id) {
        (Some(id), _) => service_name(s, &r.node, id),
        (None, Some(check)) => s
            .checks
            .get(&r.node)
            .and_then(|m| m.get(check))
            .filter(|c| !c.service_id.is_empty())
            .and_then(|c| service_name(s, &r.node, &c.service_id)),
        (None, None) => None,
    });
    match &service {
        Some(name) => authz.require(|a| a.service_write(name))?,
        None => authz.require(|a| a.node_write(&r.node))?,
    }
    srv.write(Command::Deregister {
        node: r.node,
        service_id: r.service_id,
        check_id: r.check_id,
    })
    .await?;
    Ok(axum::Json(true).into_response())
}

pub(super) async fn catalog_services(
    AxState(srv): Api,
    authz: Authz,
    lq: ListQuery<CatalogServiceRows>,
    Query(p): Params,
) -> Res {
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        |s| s.tables.services.max(s.tables.nodes),
        |s, filter| {
            // By name, in name order (the state's service-name lookup): one ACL decision per
            // name, and the map is filled in key order.
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, instances) in s.services_by_name() {
                if !filter.keep(|a| a.service_read(name)) {
                    continue;
                }
                let mut tags: Option<Vec<String>> = None;
                for inst in instances {
                    // `?node-meta=` and `?filter=` select instances (Consul's `ServiceNode`
                    // rows), then the names that keep one are listed.
                    if !lq.is_noop() {
                        // (The state keeps no instance without its node.)
                        let Some(node) = s.nodes.get(&inst.node) else {
                            continue;
                        };
                        if !lq.keep(&catalog_row(node, inst))? {
                            continue;
                        }
                    }
                    let tags = tags.get_or_insert_with(Vec::new);
                    for t in &inst.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                }
                if let Some(tags) = tags {
                    out.insert(name.to_string(), tags);
                }
            }
            Ok(out)
        },
    )
    .await
}

pub(super) async fn catalog_nodes(
    AxState(srv): Api,
    authz: Authz,
    lq: ListQuery<NodeRows>,
    Query(p): Params,
) -> Res {
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        |s| s.tables.nodes,
        |s, filter| {
            lq.apply(
                s.nodes
                    .values()
                    .filter(|n| filter.keep(|a| a.node_read(&n.node)))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        },
    )
    .await
}

/// Consul's `CatalogService` rows: node fields flattened with the service's.
fn catalog_rows(
    s: &State,
    filter: &Filter<'_>,
    service: &str,
    connect: bool,
) -> Vec<serde_json::Value> {
    visible_instances(s, filter, service, connect, false)
        .into_iter()
        .map(|h| catalog_row(&h.node, &h.service))
        .collect()
}

/// One `CatalogService` row.
fn catalog_row(node: &Node, svc: &ServiceInstance) -> serde_json::Value {
    json!({
        "ID": node.id, "Node": node.node, "Address": node.address,
        "Datacenter": node.datacenter, "NodeMeta": node.meta,
        "ServiceKind": svc.kind, "ServiceID": svc.id,
        "ServiceName": svc.service, "ServiceTags": svc.tags,
        "ServiceAddress": svc.address, "ServicePort": svc.port,
        "ServiceMeta": svc.meta, "ServiceProxy": svc.proxy,
        "ServiceConnect": svc.connect,
        "ServiceWeights": crate::wire::Weights::default(),
        "ServiceEnableTagOverride": false,
        "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index,
    })
}

/// `GET /v1/catalog/service/:service`, and with `CONNECT` `GET /v1/catalog/connect/:service`
/// (the instances that take mesh traffic for it: its sidecars and connect-native instances).
pub(super) async fn catalog_service<const CONNECT: bool>(
    AxState(srv): Api,
    authz: Authz,
    Path(service): Path<String>,
    lq: ListQuery<CatalogServiceRows>,
    Query(p): Params,
) -> Res {
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        |s| s.service_index(&service),
        |s, filter| lq.apply(catalog_rows(s, filter, &service, CONNECT)),
    )
    .await
}

/// A service of `/v1/catalog/node/:node` and `/v1/catalog/node-services/:node` (Consul's
/// `NodeService`: the agent's view of it with the catalog's indexes).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeService {
    #[serde(flatten)]
    service: AgentService,
    create_index: u64,
    modify_index: u64,
}

/// `node` and the services on it the filter's token may read (`service:read` each), or `None`
/// when the node is unknown or its token lacks `node:read` on it (Consul's
/// `filterNodeServices`). The one place these rows are built.
fn node_services(s: &State, filter: &Filter<'_>, node: &str) -> Option<(Node, Vec<NodeService>)> {
    let n = s.nodes.get(node)?;
    if !filter.keep(|a| a.node_read(node)) {
        return None;
    }
    let services = s
        .services
        .get(node)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|i| filter.keep(|a| a.service_read(&i.service)))
        .map(|i| NodeService {
            service: AgentService::from_instance(i, &n.datacenter),
            create_index: i.create_index,
            modify_index: i.modify_index,
        })
        .collect();
    Some((n.clone(), services))
}

/// Reads what [`node_services`] finds for `node` and answers it as `render` shapes it, as a
/// blocking query on the nodes and services tables.
/// `?filter=` applies to the services.
async fn node_read<T: Serialize>(
    srv: &Server,
    authz: &Authz,
    p: &HashMap<String, String>,
    lq: &ListQuery<AgentServiceRows>,
    node: &str,
    render: impl FnOnce(Option<(Node, Vec<NodeService>)>) -> T,
) -> Res {
    read_filtered(
        srv,
        authz,
        &QueryOptions::from_params(p)?,
        |s| s.tables.services.max(s.tables.nodes),
        |s, filter| {
            let found = node_services(s, filter, node)
                .map(|(n, services)| Ok::<_, ApiError>((n, lq.apply(services)?)))
                .transpose()?;
            Ok(render(found))
        },
    )
    .await
}

/// `GET /v1/catalog/node/:node`: `{Node, Services: {id: service}}`, or `null` (200) for a node
/// that is unknown or not readable, as Consul answers; with `LIST`
/// `GET /v1/catalog/node-services/:node`: `{Node, Services: [service]}`, both `null` for such a
/// node (Consul's empty `NodeServiceList`).
pub(super) async fn catalog_node<const LIST: bool>(
    AxState(srv): Api,
    authz: Authz,
    Path(node): Path<String>,
    lq: ListQuery<AgentServiceRows>,
    Query(p): Params,
) -> Res {
    node_read(&srv, &authz, &p, &lq, &node, |found| {
        if LIST {
            let (node, services) = found.unzip();
            return json!({ "Node": node, "Services": services });
        }
        found.map_or(serde_json::Value::Null, |(node, services)| {
            let by_id: BTreeMap<String, NodeService> = services
                .into_iter()
                .map(|s| (s.service.id.clone(), s))
                .collect();
            json!({ "Node": node, "Services": by_id })
        })
    })
    .await
}

/// `GET /v1/catalog/datacenters`: this cluster's one datacenter (no ACL, as Consul).
pub(super) async fn catalog_datacenters(AxState(srv): Api) -> Response {
    axum::Json([srv.config.datacenter.as_str()]).into_response()
}
