//! Configuration entries (Consul's `/v1/config`): `service-defaults`, `service-intentions` and
//! `mesh`.
//!
//! Why this module exists: the proxy needs a service's declared protocol (`service-defaults`,
//! `Protocol`) to decide between L4 and L7 enforcement, operators write L7 intentions as
//! `service-intentions` entries (`Sources` with `Permissions`), and the mesh-wide request
//! normalization every L7 decision starts with is the `mesh` entry's
//! `HTTP.Incoming.RequestNormalization` ([`crate::intentions::normalize`]), all in Consul's
//! shape.
//!
//! How `service-intentions` relates to the intentions table (the same choice Consul made in
//! 1.9, where intentions *are* stored as service-intentions entries and
//! `/v1/connect/intentions` is a view on them): there is ONE store, the intentions table.
//!
//! * Writing a `service-intentions` entry named `D` replaces every intention whose destination
//!   is `D` with one intention per source, in one FSM command (atomic): sources missing from
//!   the new entry are deleted.
//! * Reading the entry `D` builds it from the intentions whose destination is `D`, sources in
//!   precedence order (what Consul's `Normalize` does), so an intention written through the
//!   legacy `/v1/connect/intentions` API shows up in the entry and vice versa.
//! * The entry's own `CreateIndex` / `ModifyIndex` / `Meta` are kept per destination
//!   ([`IntentionEntryMeta`]) and bumped by either API, so a `?cas=` on the entry sees every
//!   change to its intentions.
//!
//! Therefore the proxy's existing intentions feed (`/v1/agent/connect/intentions/:dest`,
//! served from the agent's cache) carries `Permissions` with no new plumbing.
//!
//! Pure code: parsing, validation and the entry ↔ intentions conversion. The FSM applies the
//! result, `http` serves it, `cli` writes it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::intentions::normalize::RequestNormalization;
use crate::intentions::{self, DEFAULT_NAMESPACE, IntentionError};
use crate::model::{Index, Intention, IntentionAction, IntentionPermission};

/// Kind name of a service-defaults entry.
pub const SERVICE_DEFAULTS: &str = "service-defaults";
/// Kind name of a service-intentions entry.
pub const SERVICE_INTENTIONS: &str = "service-intentions";
/// Kind name, and the only entry name, of the mesh-wide entry.
pub const MESH: &str = "mesh";

/// The kinds this mesh stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigKind {
    /// `service-defaults`: a service's protocol.
    #[serde(rename = "service-defaults")]
    ServiceDefaults,
    /// `service-intentions`: the intentions of one destination, as one entry.
    #[serde(rename = "service-intentions")]
    ServiceIntentions,
    /// `mesh`: the mesh-wide entry (request normalization).
    #[serde(rename = "mesh")]
    Mesh,
}

impl ConfigKind {
    /// The kind as Consul spells it in `Kind` and in `/v1/config/:kind` paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ServiceDefaults => SERVICE_DEFAULTS,
            ConfigKind::ServiceIntentions => SERVICE_INTENTIONS,
            ConfigKind::Mesh => MESH,
        }
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigKind {
    type Err = ConfigEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            SERVICE_DEFAULTS => Ok(ConfigKind::ServiceDefaults),
            SERVICE_INTENTIONS => Ok(ConfigKind::ServiceIntentions),
            MESH => Ok(ConfigKind::Mesh),
            other => Err(ConfigEntryError::UnknownKind {
                kind: other.to_string(),
            }),
        }
    }
}

/// A service's protocol (`service-defaults`, `Protocol`). Decides whether the proxy enforces
/// intentions per connection (`tcp`) or per request (the others).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Consul's default: opaque TCP, intentions enforced once per connection.
    #[default]
    Tcp,
    /// HTTP/1.1: the proxy parses requests and enforces L7 permissions.
    Http,
    /// HTTP/2 on both legs: L7 permissions enforced per stream.
    Http2,
    /// gRPC (over HTTP/2): L7 permissions enforced per call.
    Grpc,
}

impl Protocol {
    /// Every protocol this mesh knows; `from_str` matches input against these.
    pub const ALL: [Protocol; 4] = [
        Protocol::Tcp,
        Protocol::Http,
        Protocol::Http2,
        Protocol::Grpc,
    ];

    /// Consul's lowercase spelling (`tcp`, `http`, `http2`, `grpc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether requests are visible (everything but `tcp`).
    pub fn is_l7(self) -> bool {
        self != Protocol::Tcp
    }

    /// Whether the proxy's HTTP layer speaks HTTP/2 on both legs (`http2`, `grpc`).
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ConfigEntryError;

    /// Case-insensitive, as Consul lower-cases `Protocol` when it normalizes an entry; empty
    /// means `tcp` (Consul's default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Protocol::Tcp);
        }
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ConfigEntryError::UnknownProtocol {
                value: s.to_string(),
            })
    }
}

/// Why an entry was rejected. Messages name the field in Consul's spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ConfigEntryError {
    /// The body is not JSON or not of the entry's shape; carries the parser's message.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// The body has no `Kind`.
    #[error("Kind must be set")]
    MissingKind,
    /// `Kind` names a kind this mesh does not store.
    #[error(
        "invalid config entry kind: {kind:?} (supported: service-defaults, service-intentions, mesh)"
    )]
    UnknownKind {
        /// The `Kind` as the caller wrote it.
        kind: String,
    },
    /// `Name` is empty.
    #[error("Name is required")]
    MissingName,
    /// `Name` contains `/` or a `*` other than a lone `*` on service-intentions.
    #[error("Name {name:?} must not contain '/' or '*' (except a lone '*' for service-intentions)")]
    InvalidName {
        /// The `Name` as the caller wrote it.
        name: String,
    },
    /// `Namespace` is not `default` (Consul's open-source edition has only that one).
    #[error("Namespace {namespace:?} is not supported; only \"default\" exists")]
    Namespace {
        /// The `Namespace` as the caller wrote it.
        namespace: String,
    },
    /// `Protocol` of a service-defaults entry is not one this mesh knows.
    #[error("Protocol must be one of tcp, http, http2, grpc (got {value:?})")]
    UnknownProtocol {
        /// The `Protocol` as the caller wrote it (trimmed).
        value: String,
    },
    /// `Meta` has more pairs than Consul allows.
    #[error("Meta exceeds maximum element count {max} (got {count})")]
    TooManyMeta {
        /// How many pairs the entry's `Meta` has.
        count: usize,
        /// The limit, [`MAX_META_PAIRS`].
        max: usize,
    },
    /// A `mesh` entry was given a `Name` other than `mesh`.
    #[error("the mesh entry is named \"mesh\" (got Name {name:?})")]
    MeshName {
        /// The `Name` as the caller wrote it.
        name: String,
    },
    /// A source of a service-intentions entry fails intention validation.
    #[error("Sources[{index}]: {source}")]
    Source {
        /// Position of the offending source in `Sources` (0-based).
        index: usize,
        /// Why that source's intention was refused.
        #[source]
        source: IntentionError,
    },
    /// Two sources of one service-intentions entry name the same `Namespace`/`Name`.
    #[error("Sources[{index}] duplicates the source {name:?} of Sources[{first}]")]
    DuplicateSource {
        /// Position of the repeated source in `Sources` (0-based).
        index: usize,
        /// Position of the first source with that name (0-based).
        first: usize,
        /// The source's `Name` that appears twice.
        name: String,
    },
}

impl ConfigEntryError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigEntryError::Source { source, .. } => source.code(),
            other => other.into(),
        }
    }
}

fn default_ns() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn is_default_ns(ns: &String) -> bool {
    ns == DEFAULT_NAMESPACE
}

/// `service-defaults`: per-service settings. Only `Protocol` is used by this mesh; other
/// Consul fields are refused rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceDefaults {
    /// Consul's `Name`: the service these defaults apply to.
    pub name: String,
    /// Consul's `Namespace`: the service's namespace; only `default` is accepted.
    #[serde(default = "default_ns", skip_serializing_if = "is_default_ns")]
    pub namespace: String,
    /// Kept as written (lower-cased) so an unknown value is reported by [`validate`], with
    /// the accepted list, instead of as a serde error. Omitted when unset, as Consul does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Consul's `Meta`: free-form key/value labels of the entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Consul's CreateIndex: the Raft index of the write that created this entry.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: Raft index of the last write to this entry (what `?cas=` compares).
    #[serde(default)]
    pub modify_index: Index,
}

impl ServiceDefaults {
    /// The declared protocol; `tcp` when unset (Consul's default).
    pub fn protocol(&self) -> Protocol {
        self.protocol.parse().unwrap_or_default()
    }
}

/// One source of a `service-intentions` entry (Consul's `SourceIntention`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SourceIntention {
    /// Consul's `Name`: the calling service, or `*` for any.
    pub name: String,
    /// Consul's `Namespace`: the calling service's namespace; only `default` is accepted.
    #[serde(default = "default_ns", skip_serializing_if = "is_default_ns")]
    pub namespace: String,
    /// Consul's `Action`: allow or deny for an L4 source; omitted when `Permissions` are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    /// Consul's `Permissions`: L7 rules checked per request, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    /// Consul's `Description`: free text from the operator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Read-only: computed from the source and destination; ignored on write.
    #[serde(default)]
    pub precedence: u32,
    /// Consul's `Type`: where the source identity comes from; only `consul` is accepted.
    #[serde(rename = "Type", default = "default_source_type")]
    pub source_type: String,
    /// Read-only: the legacy intention ID of this source/destination pair.
    #[serde(rename = "LegacyID", default, skip_serializing_if = "String::is_empty")]
    pub legacy_id: String,
    /// The legacy intention's `Meta`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy_meta: BTreeMap<String, String>,
}

fn default_source_type() -> String {
    "consul".to_string()
}

/// `service-intentions`: every intention whose destination is `Name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceIntentions {
    /// Consul's `Name`: the destination service of every source, or `*` for all services.
    pub name: String,
    /// Consul's `Namespace`: the destination's namespace; only `default` is accepted.
    #[serde(default = "default_ns", skip_serializing_if = "is_default_ns")]
    pub namespace: String,
    /// Consul's `Sources`: one intention per calling service, in precedence order when read.
    #[serde(default)]
    pub sources: Vec<SourceIntention>,
    /// Consul's `Meta`: free-form key/value labels of the entry (not of its intentions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Consul's CreateIndex: the Raft index of the write that created this entry.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write to this entry or to its intentions.
    #[serde(default)]
    pub modify_index: Index,
}

/// `mesh`: mesh-wide settings; one entry, named `mesh`. Only what this mesh enforces is
/// accepted (`HTTP.Incoming.RequestNormalization`); other Consul fields are refused rather
/// than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Optional on write (Consul's mesh entry has no name of its own); must be `mesh` if given.
    #[serde(default, skip_serializing)]
    pub name: Option<String>,
    /// Consul's `HTTP` block: mesh-wide HTTP settings for the proxies.
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<MeshHttp>,
    /// Consul's `Meta`: free-form key/value labels of the entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Consul's CreateIndex: the Raft index of the write that created this entry.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: Raft index of the last write to this entry (what `?cas=` compares).
    #[serde(default)]
    pub modify_index: Index,
}

/// `mesh` → `HTTP`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MeshHttp {
    /// Consul's `Incoming`: settings for requests arriving at inbound proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<MeshHttpIncoming>,
}

/// `mesh` → `HTTP` → `Incoming`: what inbound proxies do to requests before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MeshHttpIncoming {
    /// Consul's `RequestNormalization`: how paths and headers are normalized before L7 matching.
    #[serde(default)]
    pub request_normalization: RequestNormalization,
}

impl MeshConfig {
    /// The request normalization in force (Consul's defaults when unset).
    pub fn request_normalization(&self) -> RequestNormalization {
        self.http
            .as_ref()
            .and_then(|h| h.incoming.as_ref())
            .map(|i| i.request_normalization)
            .unwrap_or_default()
    }
}

/// A configuration entry, tagged by `Kind` as in Consul's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Kind")]
pub enum ConfigEntry {
    /// `Kind: service-defaults`: one service's protocol.
    #[serde(rename = "service-defaults")]
    ServiceDefaults(ServiceDefaults),
    /// `Kind: service-intentions`: every intention of one destination.
    #[serde(rename = "service-intentions")]
    ServiceIntentions(ServiceIntentions),
    /// `Kind: mesh`: the mesh-wide settings (request normalization).
    #[serde(rename = "mesh")]
    Mesh(MeshConfig),
}

impl ConfigEntry {
    /// Which kind this entry is.
    pub fn kind(&self) -> ConfigKind {
        match self {
            ConfigEntry::ServiceDefaults(_) => ConfigKind::ServiceDefaults,
            ConfigEntry::ServiceIntentions(_) => ConfigKind::ServiceIntentions,
            ConfigEntry::Mesh(_) => ConfigKind::Mesh,
        }
    }

    /// The entry's name: the service's for the per-service kinds, always `mesh` for the mesh entry.
    pub fn name(&self) -> &str {
        match self {
            ConfigEntry::ServiceDefaults(e) => &e.name,
            ConfigEntry::ServiceIntentions(e) => &e.name,
            ConfigEntry::Mesh(_) => MESH,
        }
    }

    /// The entry's ModifyIndex (what a `?cas=` write compares against).
    pub fn modify_index(&self) -> Index {
        match self {
            ConfigEntry::ServiceDefaults(e) => e.modify_index,
            ConfigEntry::ServiceIntentions(e) => e.modify_index,
            ConfigEntry::Mesh(e) => e.modify_index,
        }
    }

    /// Parses a body in Consul's JSON shape and validates it: what `PUT /v1/config` and
    /// `meshctl config write` accept. Unknown fields are refused at every level.
    pub fn from_json(body: &[u8]) -> Result<Self, ConfigEntryError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ConfigEntryError::Decode(e.to_string()))?;
        let serde_json::Value::Object(mut o) = v else {
            return Err(ConfigEntryError::Decode(
                "a config entry must be a JSON object".into(),
            ));
        };
        // `Kind` first (its key in any case), so an unknown kind gets a clear message, not
        // serde's; then the kind's own type, decoded as Consul decodes (`crate::decode`:
        // keys matched ignoring case and underscores at every level, which serde's buffering
        // of a tagged enum would hide from it).
        let key = o.keys().find(|k| k.eq_ignore_ascii_case("kind")).cloned();
        let kind = match key.and_then(|k| o.remove(&k)) {
            None | Some(serde_json::Value::Null) => return Err(ConfigEntryError::MissingKind),
            Some(serde_json::Value::String(k)) => k.parse::<ConfigKind>()?,
            Some(other) => {
                return Err(ConfigEntryError::Decode(format!(
                    "Kind must be a string, got {other}"
                )));
            }
        };
        let v = serde_json::Value::Object(o);
        let decode = |e: crate::decode::DecodeError| ConfigEntryError::Decode(e.to_string());
        let mut entry = match kind {
            ConfigKind::ServiceDefaults => {
                ConfigEntry::ServiceDefaults(crate::decode::value_as(v).map_err(decode)?)
            }
            ConfigKind::ServiceIntentions => {
                ConfigEntry::ServiceIntentions(crate::decode::value_as(v).map_err(decode)?)
            }
            ConfigKind::Mesh => ConfigEntry::Mesh(crate::decode::value_as(v).map_err(decode)?),
        };
        entry.normalize();
        validate(&entry)?;
        Ok(entry)
    }

    /// Lower-cases the protocol and clears read-only fields, as Consul's `Normalize` does.
    pub fn normalize(&mut self) {
        match self {
            ConfigEntry::ServiceDefaults(e) => {
                e.protocol = e.protocol.to_ascii_lowercase();
            }
            ConfigEntry::ServiceIntentions(e) => {
                for s in &mut e.sources {
                    s.precedence = 0;
                    s.legacy_id.clear();
                }
            }
            ConfigEntry::Mesh(_) => {}
        }
    }
}

/// Most `Meta` pairs an entry may carry (Consul's `metaMaxKeyPairs`).
pub const MAX_META_PAIRS: usize = intentions::MAX_META_PAIRS;

fn check_name(name: &str, wildcard_ok: bool) -> Result<(), ConfigEntryError> {
    if name.is_empty() {
        return Err(ConfigEntryError::MissingName);
    }
    if name.contains('/') || (name.contains('*') && !(wildcard_ok && name == "*")) {
        return Err(ConfigEntryError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), ConfigEntryError> {
    if meta.len() > MAX_META_PAIRS {
        return Err(ConfigEntryError::TooManyMeta {
            count: meta.len(),
            max: MAX_META_PAIRS,
        });
    }
    Ok(())
}

fn check_ns(ns: &str) -> Result<(), ConfigEntryError> {
    if ns != DEFAULT_NAMESPACE {
        return Err(ConfigEntryError::Namespace {
            namespace: ns.to_string(),
        });
    }
    Ok(())
}

/// Write-time validation (the FSM runs it too, so a command built elsewhere cannot bypass it).
pub fn validate(entry: &ConfigEntry) -> Result<(), ConfigEntryError> {
    match entry {
        ConfigEntry::ServiceDefaults(e) => {
            check_name(&e.name, false)?;
            check_ns(&e.namespace)?;
            if !e.protocol.is_empty() {
                e.protocol.parse::<Protocol>()?;
            }
            check_meta(&e.meta)?;
            Ok(())
        }
        ConfigEntry::ServiceIntentions(e) => {
            check_name(&e.name, true)?;
            check_ns(&e.namespace)?;
            check_meta(&e.meta)?;
            let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for (index, s) in e.sources.iter().enumerate() {
                if let Some(first) = seen.insert((&s.namespace, &s.name), index) {
                    return Err(ConfigEntryError::DuplicateSource {
                        index,
                        first,
                        name: s.name.clone(),
                    });
                }
                intentions::validate(&source_to_intention(e, s))
                    .map_err(|source| ConfigEntryError::Source { index, source })?;
            }
            Ok(())
        }
        ConfigEntry::Mesh(e) => {
            if let Some(name) = e.name.as_deref().filter(|n| *n != MESH) {
                return Err(ConfigEntryError::MeshName {
                    name: name.to_string(),
                });
            }
            check_meta(&e.meta)?;
            Ok(())
        }
    }
}

/// The intention one source of `entry` stands for (indexes and precedence left for the FSM).
pub fn source_to_intention(entry: &ServiceIntentions, s: &SourceIntention) -> Intention {
    Intention {
        id: intentions::legacy_id(&s.namespace, &s.name, &entry.namespace, &entry.name),
        source_name: s.name.clone(),
        source_ns: s.namespace.clone(),
        destination_name: entry.name.clone(),
        destination_ns: entry.namespace.clone(),
        source_type: s.source_type.clone(),
        action: s.action,
        permissions: s.permissions.clone(),
        description: s.description.clone(),
        meta: s.legacy_meta.clone(),
        precedence: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// Per-destination bookkeeping of a `service-intentions` entry (its sources live in the
/// intentions table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentionEntryMeta {
    /// Consul's `Meta` of the entry (free-form key/value labels).
    pub meta: BTreeMap<String, String>,
    /// Consul's CreateIndex of the entry: the Raft index of the write that created it.
    pub create_index: Index,
    /// Consul's ModifyIndex of the entry: the Raft index of the last write to it or its intentions.
    pub modify_index: Index,
}

/// Key of a destination in the per-destination map: `ns/name`.
pub fn destination_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Builds the `service-intentions` entry for `ns/name` from the intentions table (`None` when
/// the destination has no entry). `intentions` may hold any destinations; sources come out in
/// Consul's precedence order.
///
/// A destination whose intentions predate entry bookkeeping (no `meta`) still has an entry;
/// its indexes are derived from its intentions.
pub fn intentions_entry<'a>(
    ns: &str,
    name: &str,
    meta: Option<&IntentionEntryMeta>,
    intentions: impl IntoIterator<Item = &'a Intention>,
) -> Option<ServiceIntentions> {
    let mut mine: Vec<&Intention> = intentions
        .into_iter()
        .filter(|i| i.destination_ns == ns && i.destination_name == name)
        .collect();
    let derived;
    let meta = match meta {
        Some(m) => m,
        None if mine.is_empty() => return None,
        None => {
            derived = IntentionEntryMeta {
                meta: BTreeMap::new(),
                create_index: mine.iter().map(|i| i.create_index).min().unwrap_or(0),
                modify_index: mine.iter().map(|i| i.modify_index).max().unwrap_or(0),
            };
            &derived
        }
    };
    mine.sort_by(|a, b| intentions::consul_order(a, b));
    Some(ServiceIntentions {
        name: name.to_string(),
        namespace: ns.to_string(),
        sources: mine
            .into_iter()
            .map(|i| SourceIntention {
                name: i.source_name.clone(),
                namespace: i.source_ns.clone(),
                action: i.action,
                permissions: i.permissions.clone(),
                description: i.description.clone(),
                precedence: i.precedence,
                source_type: i.source_type.clone(),
                legacy_id: i.id.clone(),
                legacy_meta: i.meta.clone(),
            })
            .collect(),
        meta: meta.meta.clone(),
        create_index: meta.create_index,
        modify_index: meta.modify_index,
    })
}

#[cfg(test)]
mod tests;
