//! `/v1/catalog/*`: registering and reading nodes and service instances (Consul's shapes).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{Api, Params, Res, parse_body, read_params};
use crate::fsm::{Command, State};
use crate::model::{HealthCheck, Node, ServiceInstance};

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

pub(super) async fn catalog_register(AxState(srv): Api, body: Bytes) -> Res {
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
    srv.write(Command::Register {
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

pub(super) async fn catalog_deregister(AxState(srv): Api, body: Bytes) -> Res {
    let r: CatalogDeregister = parse_body(&body)?;
    let _ = r.datacenter;
    srv.write(Command::Deregister {
        node: r.node,
        service_id: r.service_id,
        check_id: r.check_id,
    })
    .await?;
    Ok(axum::Json(true).into_response())
}

pub(super) async fn catalog_services(AxState(srv): Api, Query(p): Params) -> Res {
    read_params(
        &srv,
        &p,
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

pub(super) async fn catalog_nodes(AxState(srv): Api, Query(p): Params) -> Res {
    read_params(
        &srv,
        &p,
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

/// `GET /v1/catalog/service/:service`, and with `CONNECT` `GET /v1/catalog/connect/:service`
/// (the instances that take mesh traffic for it: its sidecars and connect-native instances).
pub(super) async fn catalog_service<const CONNECT: bool>(
    AxState(srv): Api,
    Path(service): Path<String>,
    Query(p): Params,
) -> Res {
    read_params(
        &srv,
        &p,
        |s| s.tables.services.max(s.tables.nodes),
        |s| Ok(catalog_rows(s, &service, CONNECT)),
    )
    .await
}
