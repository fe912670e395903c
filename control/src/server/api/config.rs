//! Config entries (`/v1/config`, see `crate::config_entries`), with `?cas=` writes and blocking
//! reads; a missing entry is a 404 that still carries `X-Consul-Index`. Access per kind (as
//! Consul's `CanRead` / `CanWrite`) is `authz`'s; lists drop what the token may not read.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State as AxState};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::authz::Authz;
use super::{Api, Params, Res, read_filtered, wait};
use crate::config_entries::{ConfigEntry, ConfigKind};
use crate::fsm::{ApplyError, ApplyResult, Command, State};
use crate::http::ApiError;
use crate::http::blocking::{QueryOptions, json_with_index};
use crate::server::ServerError;

fn config_kind(kind: &str) -> Result<ConfigKind, ApiError> {
    kind.parse::<ConfigKind>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The `:kind/:name` of an entry's route, its kind parsed (an unknown kind is a 400).
pub(super) struct EntryPath {
    kind: ConfigKind,
    name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for EntryPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path((kind, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let kind = config_kind(&kind).map_err(IntoResponse::into_response)?;
        Ok(Self { kind, name })
    }
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
fn cas_outcome(result: Result<ApplyResult, ServerError>, cas: Option<u64>) -> Res {
    match result {
        Ok(_) => Ok(axum::Json(true).into_response()),
        Err(ServerError::Apply(ApplyError::Conflict(_))) if cas.is_some() => {
            Ok(axum::Json(false).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v1/config[?cas=N]`: create or replace the entry in the body.
pub(super) async fn config_put(
    AxState(srv): Api,
    authz: Authz,
    Query(p): Params,
    body: Bytes,
) -> Res {
    let cas = cas_param(&p)?;
    let entry = ConfigEntry::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    authz.require_config(entry.kind(), entry.name(), true)?;
    let result = srv.write(Command::ConfigEntrySet { entry, cas }).await;
    cas_outcome(result, cas)
}

/// `GET /v1/config/:kind/:name`: the entry, or 404 (with `X-Consul-Index`, so a blocking
/// query can wait for it to appear).
pub(super) async fn config_get(
    AxState(srv): Api,
    authz: Authz,
    EntryPath { kind, name }: EntryPath,
    Query(p): Params,
) -> Res {
    let q = QueryOptions::from_params(&p)?;
    // Before the lookup: a refused caller does not learn whether the entry exists.
    authz.require_config(kind, &name, false)?;
    let index_of = move |s: &State| s.config_index(kind);
    wait(&srv, &q, &index_of).await?;
    let (index, entry) = srv
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
pub(super) async fn config_list(
    AxState(srv): Api,
    authz: Authz,
    Path(kind): Path<String>,
    Query(p): Params,
) -> Res {
    let kind = config_kind(&kind)?;
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        move |s| s.config_index(kind),
        |s, filter| {
            let mut entries = s.config_entries(kind);
            entries.retain(|e| filter.keep_if(filter.authz().config_read(kind, e.name())));
            Ok(entries)
        },
    )
    .await
}

/// `DELETE /v1/config/:kind/:name[?cas=N]`.
pub(super) async fn config_delete(
    AxState(srv): Api,
    authz: Authz,
    EntryPath { kind, name }: EntryPath,
    Query(p): Params,
) -> Res {
    let cas = cas_param(&p)?;
    authz.require_config(kind, &name, true)?;
    let result = srv
        .write(Command::ConfigEntryDelete { kind, name, cas })
        .await;
    cas_outcome(result, cas)
}
