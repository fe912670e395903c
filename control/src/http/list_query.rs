//! Consul's list parameters in one place: `?tag=` (repeatable: the instance must carry every
//! tag, compared case-insensitively as Consul does), `?node-meta=key:value` (repeatable: the
//! node must carry every pair) and `?filter=` (the expression language, `mesh_policy::filter`).
//!
//! Why one helper: every list endpoint Consul documents them on (server and agent) reads and
//! applies them the same way. A handler takes a [`ListQuery<R>`] extractor, `R` naming the
//! kind of row it answers ([`Rows`]: the rows' top-level fields, where tags and node meta sit),
//! and calls [`ListQuery::apply`] (or [`ListQuery::apply_map`], [`ListQuery::keep`]) on its rows
//! after ACL filtering. A bad expression or selector is refused by the extractor, before any
//! blocking wait, with 400 and Consul's words ("Failed to create boolean expression evaluator:
//! 1:4 (3): ..."); the blocking index is not the filter's business.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use mesh_policy::filter::{Filter, FilterError};
use serde::Serialize;
use serde_json::Value;

use super::ApiError;

/// One kind of list row, as the filter sees it (its JSON in Consul's field names).
pub trait Rows: Send + Sync + 'static {
    /// The selectors' valid first fields: Consul's documented ones for the row type (some may
    /// be absent from our rows: they then select nothing) and ours.
    const FIELDS: &'static [&'static str];
    /// Where the instance's tags are, when the endpoint takes `?tag=`.
    const TAGS: Option<&'static [&'static str]> = None;
    /// Where the node's meta is, when the endpoint takes `?node-meta=`.
    const NODE_META: Option<&'static [&'static str]> = None;
}

/// Rows of `/v1/catalog/service/:s`, `/v1/catalog/connect/:s` (Consul's `CatalogService`); also
/// what `/v1/catalog/services` filters before grouping by name.
pub struct CatalogServiceRows;
impl Rows for CatalogServiceRows {
    const FIELDS: &'static [&'static str] = &[
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "TaggedAddresses",
        "NodeMeta",
        "ServiceKind",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "ServiceAddress",
        "ServiceTaggedAddresses",
        "ServiceWeights",
        "ServiceMeta",
        "ServicePort",
        "ServiceEnableTagOverride",
        "ServiceProxy",
        "ServiceConnect",
        "CreateIndex",
        "ModifyIndex",
    ];
    const TAGS: Option<&'static [&'static str]> = Some(&["ServiceTags"]);
    const NODE_META: Option<&'static [&'static str]> = Some(&["NodeMeta"]);
}

/// Rows of `/v1/health/service/:s` and `/v1/health/connect/:s`: `{Node, Service, Checks}`.
pub struct HealthRows;
impl Rows for HealthRows {
    const FIELDS: &'static [&'static str] = &["Node", "Service", "Checks"];
    const TAGS: Option<&'static [&'static str]> = Some(&["Service", "Tags"]);
    const NODE_META: Option<&'static [&'static str]> = Some(&["Node", "Meta"]);
}

/// Rows of `/v1/catalog/nodes`.
pub struct NodeRows;
impl Rows for NodeRows {
    const FIELDS: &'static [&'static str] = &[
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "TaggedAddresses",
        "Meta",
        "CreateIndex",
        "ModifyIndex",
    ];
    const NODE_META: Option<&'static [&'static str]> = Some(&["Meta"]);
}

/// Values of `/v1/agent/services` (Consul's `AgentService`).
pub struct AgentServiceRows;
impl Rows for AgentServiceRows {
    const FIELDS: &'static [&'static str] = &[
        "ID",
        "Service",
        "Kind",
        "Tags",
        "Meta",
        "Address",
        "TaggedAddresses",
        "Port",
        "Weights",
        "EnableTagOverride",
        "Datacenter",
        "Proxy",
        "Connect",
        "ContentHash",
    ];
}

/// Values of `/v1/agent/checks` (Consul's `HealthCheck`).
pub struct CheckRows;
impl Rows for CheckRows {
    const FIELDS: &'static [&'static str] = &[
        "Node",
        "CheckID",
        "Name",
        "Status",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "Type",
        "Definition",
        "Interval",
        "Timeout",
        "ExposedPort",
        "CreateIndex",
        "ModifyIndex",
    ];
}

/// Rows of `/v1/connect/intentions`.
pub struct IntentionRows;
impl Rows for IntentionRows {
    const FIELDS: &'static [&'static str] = &[
        "ID",
        "Description",
        "SourceNS",
        "SourceName",
        "DestinationNS",
        "DestinationName",
        "SourceType",
        "Action",
        "Permissions",
        "Meta",
        "Precedence",
        "CreateIndex",
        "ModifyIndex",
    ];
}

/// The list parameters of one request, checked against the rows `R`.
pub struct ListQuery<R> {
    /// Lower-cased.
    tags: Vec<String>,
    node_meta: Vec<(String, String)>,
    filter: Option<Filter>,
    rows: PhantomData<R>,
}

impl<R: Rows> ListQuery<R> {
    /// Reads the parameters from a request's URI, keeping repeated keys.
    pub fn from_uri(uri: &axum::http::Uri) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("Invalid query string: {e}")))?;
        let mut out = Self {
            tags: Vec::new(),
            node_meta: Vec::new(),
            filter: None,
            rows: PhantomData,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "tag" if R::TAGS.is_some() => out.tags.push(value.to_lowercase()),
                "node-meta" if R::NODE_META.is_some() => {
                    let (k, v) = value.split_once(':').unwrap_or((&value, ""));
                    out.node_meta.push((k.to_string(), v.to_string()));
                }
                "filter" if !value.is_empty() => {
                    let f = Filter::parse(&value).map_err(refused)?;
                    f.check_fields(R::FIELDS).map_err(refused)?;
                    out.filter = Some(f);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// True when the request asked for no filtering at all.
    pub fn is_noop(&self) -> bool {
        self.tags.is_empty() && self.node_meta.is_empty() && self.filter.is_none()
    }

    /// Whether one row (serialized in Consul's field names) passes every parameter.
    pub fn keep(&self, row: &Value) -> Result<bool, ApiError> {
        if !self.tags.is_empty() {
            let have: Vec<String> = at(row, R::TAGS)
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            if !self.tags.iter().all(|t| have.contains(t)) {
                return Ok(false);
            }
        }
        if !self.node_meta.is_empty() {
            let meta = at(row, R::NODE_META).and_then(Value::as_object);
            let has = |(k, v): &(String, String)| {
                meta.and_then(|m| m.get(k)).and_then(Value::as_str) == Some(v.as_str())
            };
            if !self.node_meta.iter().all(has) {
                return Ok(false);
            }
        }
        match &self.filter {
            None => Ok(true),
            Some(f) => f.matches(row).map_err(refused),
        }
    }

    /// The rows that pass, in their order.
    pub fn apply<T: Serialize>(&self, rows: Vec<T>) -> Result<Vec<T>, ApiError> {
        if self.is_noop() {
            return Ok(rows);
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if self.keep(&to_json(&row)?)? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The entries of a map answer (`/v1/agent/services`, `/v1/agent/checks`) whose values pass.
    pub fn apply_map<T: Serialize>(
        &self,
        rows: BTreeMap<String, T>,
    ) -> Result<BTreeMap<String, T>, ApiError> {
        if self.is_noop() {
            return Ok(rows);
        }
        let mut out = BTreeMap::new();
        for (key, row) in rows {
            if self.keep(&to_json(&row)?)? {
                out.insert(key, row);
            }
        }
        Ok(out)
    }

    /// A JSON array body (a cached answer) with only the rows that pass; `None` when nothing
    /// is asked (serve the body as it is).
    pub fn apply_json(&self, body: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        if self.is_noop() {
            return Ok(None);
        }
        let rows: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| internal(format!("cannot filter a list answer: {e}")))?;
        let kept = self.apply(rows)?;
        serde_json::to_vec(&kept)
            .map(Some)
            .map_err(|e| internal(format!("cannot filter a list answer: {e}")))
    }
}

impl<R: Rows, S: Send + Sync> FromRequestParts<S> for ListQuery<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::from_uri(&parts.uri)
    }
}

/// The value at `path` in `row`.
fn at<'v>(row: &'v Value, path: Option<&[&str]>) -> Option<&'v Value> {
    path?.iter().try_fold(row, |v, key| v.get(key))
}

fn to_json<T: Serialize>(row: &T) -> Result<Value, ApiError> {
    serde_json::to_value(row).map_err(|e| internal(format!("cannot filter a list answer: {e}")))
}

/// A filter the request got wrong: 400 with Consul's words and the position.
fn refused(e: FilterError) -> ApiError {
    if e.is_creation() {
        ApiError::bad_request(format!(
            "Failed to create boolean expression evaluator: {e}"
        ))
    } else {
        ApiError::bad_request(e.to_string())
    }
}

fn internal(message: String) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query<R: Rows>(q: &str) -> Result<ListQuery<R>, ApiError> {
        ListQuery::from_uri(&format!("/v1/x?{q}").parse().expect("URI"))
    }

    fn kept<R: Rows>(q: &str, rows: &[Value]) -> Vec<Value> {
        query::<R>(q)
            .and_then(|lq| lq.apply(rows.to_vec()))
            .unwrap_or_else(|e| panic!("{q}: {}", e.message))
    }

    #[test]
    fn tags_and_node_meta_must_all_be_present() {
        let row = |id: &str, tags: &[&str], rack: &str| json!({"ServiceID": id, "ServiceTags": tags, "NodeMeta": {"rack": rack, "bare": ""}});
        let rows = [row("a", &["v1", "Blue"], "r1"), row("b", &["v2"], "r2")];
        let ids = |q: &str| -> Vec<String> {
            kept::<CatalogServiceRows>(q, &rows)
                .iter()
                .map(|r| r["ServiceID"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(ids("tag=v1&tag=blue"), ["a"]);
        assert_eq!(ids("tag=v1&tag=v2"), Vec::<String>::new());
        assert_eq!(ids("node-meta=rack:r2"), ["b"]);
        assert_eq!(
            ids("node-meta=rack:r2&node-meta=rack:r1"),
            Vec::<String>::new()
        );
        // A pair without ':' asks for an empty value, as Consul splits it.
        assert_eq!(ids("node-meta=bare&tag=v2"), ["b"]);
        assert_eq!(
            ids("filter=ServiceTags%20contains%20v2%20or%20ServiceID%20%3D%3D%20a"),
            ["a", "b"]
        );
        assert_eq!(ids("filter="), ["a", "b"]);
        // Where Consul takes no `tag`, it is ignored (as Consul ignores unknown parameters).
        let nodes = [json!({"Node": "n", "Meta": {}})];
        assert_eq!(kept::<NodeRows>("tag=x", &nodes).len(), 1);
    }

    #[test]
    fn bad_filters_are_refused_with_consuls_words() {
        let refusal = |q: &str| match query::<HealthRows>(q) {
            Ok(_) => panic!("{q} accepted"),
            Err(e) => (e.status, e.message),
        };
        let (status, message) = refusal("filter=Service.Port%20%3D%3D");
        assert_eq!(status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with("Failed to create boolean expression evaluator: 1:16 (15): "),
            "{message}"
        );
        let (_, message) = refusal("filter=ServiceTags%20is%20empty");
        assert!(
            message.contains("Selector \"ServiceTags\" is not valid"),
            "{message}"
        );
    }
}
