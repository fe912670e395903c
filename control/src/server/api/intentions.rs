//! `/v1/connect/intentions*`: Consul's legacy intentions API over the one intentions table
//! (the `service-intentions` config entries are its other view, see `config`). What each
//! route requires of the caller's token is in `authz`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::authz::Authz;
use super::{Api, Params, Res, parse_body, read, read_filtered, required};
use crate::fsm::{ApplyError, Command, State};
use crate::http::ApiError;
use crate::http::blocking::QueryOptions;
use crate::http::list_query::{IntentionRows, ListQuery};
use crate::intentions::{self, IntentionSet};
use crate::model::{Intention, IntentionAction, IntentionPermission};
use crate::server::ServerError;

/// Index of every intention and the default policy.
fn intentions_index(s: &State) -> u64 {
    s.intentions_index_for("")
}

/// Consul's `Intention.CanRead`: `intentions:read` on either end lets a token read the whole
/// intention (both sides can see why a connection is allowed or refused).
fn may_read(authz: &Authz, source: &str, destination: &str) -> bool {
    authz.allows(|a| a.intentions_read(source)) || authz.allows(|a| a.intentions_read(destination))
}

pub(super) async fn intention_list(
    AxState(srv): Api,
    authz: Authz,
    lq: ListQuery<IntentionRows>,
    Query(p): Params,
) -> Res {
    read_filtered(
        &srv,
        &authz,
        &QueryOptions::from_params(&p)?,
        intentions_index,
        |s, filter| {
            let mut list = s.intention_list();
            list.retain(|i| {
                filter.keep_if(may_read(
                    filter.authz(),
                    &i.source_name,
                    &i.destination_name,
                ))
            });
            lq.apply(list)
        },
    )
    .await
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
        let defaults = intentions::intention_between(source, destination);
        let intention = Intention {
            source_ns: self.source_ns.unwrap_or(defaults.source_ns),
            destination_ns: self.destination_ns.unwrap_or(defaults.destination_ns),
            source_type: self.source_type.unwrap_or(defaults.source_type),
            action: self.action,
            permissions: self.permissions,
            description: self.description,
            meta: self.meta,
            ..defaults
        };
        intentions::validate(&intention).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(intention)
    }
}

/// `PUT /v1/connect/intentions/exact?source=&destination=`: upsert.
pub(super) async fn intention_put(
    AxState(srv): Api,
    authz: Authz,
    Query(p): Params,
    body: Bytes,
) -> Res {
    let source = required(&p, "source")?;
    let destination = required(&p, "destination")?;
    authz.require(|a| a.intentions_write(destination))?;
    let body: IntentionBody = parse_body(&body)?;
    let intention = body.into_intention(source, destination)?;
    srv.write(Command::IntentionUpsert {
        intention,
        replace: true,
    })
    .await?;
    Ok(axum::Json(true).into_response())
}

/// `POST /v1/connect/intentions` (legacy create): fails if the pair already has one.
pub(super) async fn intention_create(AxState(srv): Api, authz: Authz, body: Bytes) -> Res {
    let body: IntentionBody = parse_body(&body)?;
    let source = body
        .source_name
        .clone()
        .ok_or_else(|| ApiError::bad_request("SourceName is required"))?;
    let destination = body
        .destination_name
        .clone()
        .ok_or_else(|| ApiError::bad_request("DestinationName is required"))?;
    authz.require(|a| a.intentions_write(&destination))?;
    let intention = body.into_intention(&source, &destination)?;
    let id = intentions::legacy_id(
        &intention.source_ns,
        &source,
        &intention.destination_ns,
        &destination,
    );
    srv.write(Command::IntentionUpsert {
        intention,
        replace: false,
    })
    .await?;
    Ok(axum::Json(json!({ "ID": id })).into_response())
}

pub(super) async fn intention_get(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    // Checked before the lookup, so a refused caller does not learn whether it exists.
    authz.require_any(
        |a| a.intentions_read(&source),
        |a| a.intentions_read(&destination),
    )?;
    let id = intentions::legacy_id("default", &source, "default", &destination);
    read(&srv, &q, intentions_index, |s| {
        s.intentions
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("Intention not found"))
    })
    .await
}

pub(super) async fn intention_delete(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    authz.require(|a| a.intentions_write(&destination))?;
    let result = srv
        .write(Command::IntentionDelete {
            source_ns: "default".into(),
            source,
            destination_ns: "default".into(),
            destination,
        })
        .await;
    match result {
        // Consul answers a delete of a missing intention with success.
        Ok(_) | Err(ServerError::Apply(ApplyError::NotFound(_))) => {
            Ok(axum::Json(true).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// Requires `service:read` on the destination, not `intentions:read`: as Consul, the answer
/// is only allowed or not, and only a token that can discover the destination gets it.
pub(super) async fn intention_check(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    authz.require(|a| a.service_read(&destination))?;
    let index = |s: &State| s.intentions_index_for(&destination);
    read(&srv, &q, index, |s| {
        let set = srv.intention_sets.for_destination(s, &destination);
        Ok(json!({ "Allowed": set.decide(&source, &destination).allowed }))
    })
    .await
}

/// Requires `intentions:read` on `?name`, whether matching by source or by destination
/// (Consul's `Intention.Match`).
pub(super) async fn intention_match(AxState(srv): Api, authz: Authz, Query(p): Params) -> Res {
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
    let name = required(&p, "name")?.to_string();
    authz.require(|a| a.intentions_read(&name))?;
    // By destination: the destination's compiled set, blocking on its own index. By source:
    // the intentions from `name` or from `*` only, on the table's index.
    let index = |s: &State| {
        if by_source {
            intentions_index(s)
        } else {
            s.intentions_index_for(&name)
        }
    };
    read(&srv, &q, index, |s| {
        let set = if by_source {
            let from = |n| s.intentions_named(true, n).cloned();
            Arc::new(IntentionSet::new(
                from(name.as_str()).chain(from(intentions::WILDCARD)),
                s.default_policy,
            ))
        } else {
            srv.intention_sets.for_destination(s, &name)
        };
        let v: Vec<Intention> = set.matches(by_source, &name).into_iter().cloned().collect();
        Ok(BTreeMap::from([(name.clone(), v)]))
    })
    .await
}
