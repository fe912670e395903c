//! Domain types of the replicated state, in Consul's JSON shape.
//!
//! These structs are what the state machine stores, what the server API carries and what the
//! HTTP API returns, so their serde names follow Consul's HTTP API (PascalCase field names) and
//! an existing Consul client can read them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Raft log index; doubles as Consul's `CreateIndex` / `ModifyIndex`.
pub type Index = u64;

/// ID of the node check the servers own (Consul's `serfHealth`): the leader's failure
/// detector turns it critical for a silent node, the agent's anti-entropy never removes it, and
/// `/v1/internal/members` reads a node's liveness from it.
pub const SERF_CHECK: &str = "serfHealth";

/// Health of a check, node or service instance (Consul's check states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Passing,
    Warning,
    Critical,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

/// A catalog node (a host running an agent or server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID", default)]
    pub id: String,
    pub node: String,
    pub address: String,
    #[serde(default)]
    pub datacenter: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

/// One upstream of a sidecar proxy (`Proxy.Upstreams[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Upstream {
    #[serde(default)]
    pub destination_type: String,
    pub destination_name: String,
    #[serde(default)]
    pub datacenter: String,
    #[serde(default)]
    pub local_bind_address: String,
    #[serde(default)]
    pub local_bind_port: u16,
}

/// Proxy configuration of a `connect-proxy` service (`Proxy` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyConfig {
    #[serde(default)]
    pub destination_service_name: String,
    #[serde(rename = "DestinationServiceID", default)]
    pub destination_service_id: String,
    #[serde(default)]
    pub local_service_address: String,
    #[serde(default)]
    pub local_service_port: u16,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// Connect settings of a service (`Connect` block, as stored in the catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceConnect {
    #[serde(default)]
    pub native: bool,
}

/// A service instance registered on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInstance {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub node: String,
    /// `""` for a typical service, `"connect-proxy"` for a sidecar proxy.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    #[serde(default)]
    pub connect: ServiceConnect,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

impl ServiceInstance {
    /// Whether `other` registers the same thing, ignoring the indexes the catalog assigns.
    /// The state machine uses it to skip no-op writes, the agent's anti-entropy to skip
    /// needless ones.
    pub fn same_registration(&self, other: &ServiceInstance) -> bool {
        let strip = |s: &ServiceInstance| ServiceInstance {
            create_index: 0,
            modify_index: 0,
            ..s.clone()
        };
        strip(self) == strip(other)
    }

    /// Name of the service this instance carries mesh traffic for: itself when connect-native,
    /// the destination when it is a sidecar proxy.
    pub fn connect_target(&self) -> Option<&str> {
        if self.kind == "connect-proxy" {
            self.proxy
                .as_ref()
                .map(|p| p.destination_service_name.as_str())
        } else if self.connect.native {
            Some(&self.service)
        } else {
            None
        }
    }
}

/// A health check result as held in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    pub status: HealthStatus,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

/// Action of an intention or of an L7 permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentionAction {
    Allow,
    Deny,
}

impl IntentionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentionAction::Allow => "allow",
            IntentionAction::Deny => "deny",
        }
    }
}

/// Header match of an L7 permission (Consul `IntentionHTTPHeaderPermission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HeaderPermission {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub present: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regex: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// HTTP match of an L7 permission (Consul `IntentionHTTPPermission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpPermission {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderPermission>,
}

/// One L7 permission: stored now, enforced per request by the proxy (L7 issue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IntentionPermission {
    pub action: IntentionAction,
    #[serde(rename = "HTTP", default)]
    pub http: Option<HttpPermission>,
}

/// An intention: may `source` open connections to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    /// Legacy ID (Consul still returns one); derived from the source/destination pair.
    #[serde(rename = "ID", default)]
    pub id: String,
    pub source_name: String,
    #[serde(rename = "SourceNS", default = "default_ns")]
    pub source_ns: String,
    pub destination_name: String,
    #[serde(rename = "DestinationNS", default = "default_ns")]
    pub destination_ns: String,
    #[serde(default = "default_source_type")]
    pub source_type: String,
    /// `None` when the intention carries L7 `Permissions` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's precedence value (9 exact/exact … 5 wildcard/wildcard in the default namespace).
    #[serde(default)]
    pub precedence: u32,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

fn default_ns() -> String {
    "default".to_string()
}

fn default_source_type() -> String {
    "consul".to_string()
}

/// A root certificate of the CA as published (never includes the private key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    /// Colon-separated hex SHA-256 of the root's SubjectPublicKeyInfo-bearing certificate.
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub serial_number: u64,
    #[serde(rename = "SigningKeyID")]
    pub signing_key_id: String,
    #[serde(default)]
    pub external_trust_domain: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    pub root_cert: String,
    /// Cross-signed certificates: this root's key certified by the previous root.
    #[serde(default)]
    pub intermediate_certs: Vec<String>,
    pub active: bool,
    pub private_key_type: String,
    pub private_key_bits: u32,
    /// Unix seconds at which this root stopped being active (0 while active or never).
    #[serde(default)]
    pub rotated_out_at: i64,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

/// `/v1/connect/ca/roots` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRootList {
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    pub trust_domain: String,
    pub roots: Vec<CaRoot>,
}

/// CA configuration (`/v1/connect/ca/configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaConfig {
    pub provider: String,
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

/// A leaf certificate issued for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IssuedLeaf {
    pub serial_number: String,
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    pub service: String,
    #[serde(rename = "ServiceURI")]
    pub service_uri: String,
    /// RFC 3339.
    pub valid_after: String,
    /// RFC 3339.
    pub valid_before: String,
    /// ID of the root that signed it.
    #[serde(rename = "RootID")]
    pub root_id: String,
}
