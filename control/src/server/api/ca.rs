//! `/v1/connect/ca/*`: the trust bundle (open, as Consul), the CA configuration
//! (`operator:read` / `operator:write`) and root rotation (`operator:write`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::authz::Authz;
use super::{Api, Params, Res, parse_body, read_params};
use crate::acl::Authorizer;
use crate::http::ApiError;
use crate::http::blocking::json_with_index;
use crate::model::CaConfig;

pub(super) async fn ca_roots(AxState(srv): Api, Query(p): Params) -> Res {
    read_params(&srv, &p, |s| s.tables.roots, |s| Ok(s.ca.root_list())).await
}

pub(super) async fn ca_config_get(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    authz.require(Authorizer::operator_read)?;
    read_params(
        &srv,
        &p,
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

pub(super) async fn ca_config_put(AxState(srv): Api, authz: Authz, body: Bytes) -> Res {
    authz.require(Authorizer::operator_write)?;
    let c: CaConfigBody = parse_body(&body)?;
    srv.set_ca_config(CaConfig {
        provider: c.provider,
        config: c.config,
        create_index: 0,
        modify_index: 0,
    })
    .await?;
    Ok(axum::Json(true).into_response())
}

/// `PUT /v1/connect/ca/rotate` (extension): new root, cross-signed by the current one.
pub(super) async fn ca_rotate(AxState(srv): Api, authz: Authz) -> Res {
    authz.require(Authorizer::operator_write)?;
    let r = srv.rotate_ca(None, 0).await?;
    let list = srv.state.read(|s| s.ca.root_list());
    Ok(json_with_index(r.index, &list))
}
