//! `/v1/catalog/*`: registering and reading nodes and service instances (Consul's shapes).
//! What each route requires of the caller's token is in `authz`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::authz::{Authz, Filter};
use super::health::visible_instances;
use super::{Api, Params, Res, parse_body, read_filtered};
use crate::fsm::{Command, State};
use crate::http::ApiError;
use crate::http::blocking::QueryOptions;
use crate::http::list_query::{CatalogServiceRows, ListQuery, NodeRows};
use crate::model::{HealthCheck, Node, ServiceInstance};
use crate::server::Server;

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
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (node, instances) in &s.services {
                for inst in instances.values() {
                    if !filter.keep(|a| a.service_read(&inst.service)) {
                        continue;
                    }
                    // `?node-meta=` and `?filter=` select instances (Consul's `ServiceNode`
                    // rows), then the names that keep one are listed.
                    if !lq.is_noop() {
                        // (The state keeps no instance without its node.)
                        let Some(node) = s.nodes.get(node) else {
                            continue;
                        };
                        if !lq.keep(&catalog_row(node, inst))? {
                            continue;
                        }
                    }
                    let tags = out.entry(inst.service.clone()).or_default();
                    for t in &inst.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
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
        |s| s.tables.services.max(s.tables.nodes),
        |s, filter| lq.apply(catalog_rows(s, filter, &service, CONNECT)),
    )
    .await
}
