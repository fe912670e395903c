//! `/v1/connect/intentions*`: Consul's legacy intentions API over the one intentions table
//! (the `service-intentions` config entries are its other view, see `config`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{Api, Params, Res, parse_body, read, read_params, required};
use crate::fsm::{ApplyError, Command, State};
use crate::http::ApiError;
use crate::http::blocking::QueryOptions;
use crate::intentions::{self, IntentionSet};
use crate::model::{Intention, IntentionAction, IntentionPermission};
use crate::server::ServerError;

fn intentions_index(s: &State) -> u64 {
    s.tables.intentions.max(s.tables.config)
}

pub(super) async fn intention_list(AxState(srv): Api, Query(p): Params) -> Res {
    read_params(&srv, &p, intentions_index, |s| Ok(s.intention_list())).await
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
pub(super) async fn intention_put(AxState(srv): Api, Query(p): Params, body: Bytes) -> Res {
    let source = required(&p, "source")?;
    let destination = required(&p, "destination")?;
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
pub(super) async fn intention_create(AxState(srv): Api, body: Bytes) -> Res {
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
    srv.write(Command::IntentionUpsert {
        intention,
        replace: false,
    })
    .await?;
    Ok(axum::Json(json!({ "ID": id })).into_response())
}

pub(super) async fn intention_get(AxState(srv): Api, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    let id = intentions::legacy_id("default", &source, "default", &destination);
    read(&srv, &q, intentions_index, |s| {
        s.intentions
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("Intention not found"))
    })
    .await
}

pub(super) async fn intention_delete(AxState(srv): Api, Query(p): Params) -> Res {
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
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

pub(super) async fn intention_check(AxState(srv): Api, Query(p): Params) -> Res {
    let q = QueryOptions::from_params(&p)?;
    let source = required(&p, "source")?.to_string();
    let destination = required(&p, "destination")?.to_string();
    read(&srv, &q, intentions_index, |s| {
        let set = IntentionSet::new(s.intentions.values().cloned(), s.default_policy);
        Ok(json!({ "Allowed": set.decide(&source, &destination).allowed }))
    })
    .await
}

pub(super) async fn intention_match(AxState(srv): Api, Query(p): Params) -> Res {
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
    read(&srv, &q, intentions_index, |s| {
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
