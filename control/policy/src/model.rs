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
    /// Consul's `passing`: healthy; `?passing` health queries include it.
    Passing,
    /// Consul's `warning`: degraded but still served (worse than passing, better than critical).
    Warning,
    /// Consul's `critical`: failing; `?passing` health queries leave the instance out.
    Critical,
}

impl HealthStatus {
    /// Consul's lowercase spelling (`passing`, `warning`, `critical`), as in the JSON.
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
    /// Consul's node `ID`: UUID-shaped, derived by the agent from the node name; may be empty.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Consul's `Node`: the node's name, unique in the catalog and the key its services hang off.
    pub node: String,
    /// Consul's `Address`: the IP other nodes and proxies reach this node at.
    pub address: String,
    /// Consul's `Datacenter`: the datacenter the node registered in.
    #[serde(default)]
    pub datacenter: String,
    /// Consul's `Meta`: free-form key/value labels the agent registered with the node.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's CreateIndex: the Raft index of the write that first registered this node.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed this node.
    #[serde(default)]
    pub modify_index: Index,
}

/// One upstream of a sidecar proxy (`Proxy.Upstreams[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Upstream {
    /// Consul's `DestinationType`: `service` (or empty); the proxy skips others (`prepared_query`).
    #[serde(default)]
    pub destination_type: String,
    /// Consul's `DestinationName`: the service this upstream connects to.
    pub destination_name: String,
    /// Consul's `Datacenter`: the upstream's datacenter; empty means the proxy's own.
    #[serde(default)]
    pub datacenter: String,
    /// Consul's `LocalBindAddress`: IP the proxy listens on for this upstream (empty: loopback).
    #[serde(default)]
    pub local_bind_address: String,
    /// Consul's `LocalBindPort`: the local port the app dials to reach this upstream.
    #[serde(default)]
    pub local_bind_port: u16,
}

/// Proxy configuration of a `connect-proxy` service (`Proxy` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyConfig {
    /// Consul's `DestinationServiceName`: the service this sidecar fronts (and acts as).
    #[serde(default)]
    pub destination_service_name: String,
    /// Consul's `DestinationServiceID`: the instance ID of the fronted service on the same agent.
    #[serde(rename = "DestinationServiceID", default)]
    pub destination_service_id: String,
    /// Consul's `LocalServiceAddress`: where the fronted application listens (empty: `127.0.0.1`).
    #[serde(default)]
    pub local_service_address: String,
    /// Consul's `LocalServicePort`: the port the fronted application listens on.
    #[serde(default)]
    pub local_service_port: u16,
    /// Consul's proxy `Mode` (`""`, `direct` or `transparent`), kept as registered.
    #[serde(default)]
    pub mode: String,
    /// Consul's `Upstreams`: the services the fronted application dials through this proxy.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// Consul's opaque `Config` map of proxy settings, stored and served as registered.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// Connect settings of a service (`Connect` block, as stored in the catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceConnect {
    /// Consul's `Connect.Native`: the service speaks mTLS itself, with no sidecar in front.
    #[serde(default)]
    pub native: bool,
}

/// A service instance registered on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInstance {
    /// Consul's service `ID`: the instance's ID, unique on its node (defaults to the service name).
    #[serde(rename = "ID")]
    pub id: String,
    /// Consul's `Service`: the service name, what intentions and SPIFFE IDs name.
    pub service: String,
    /// Name of the catalog node the instance is registered on.
    pub node: String,
    /// `""` for a typical service, `"connect-proxy"` for a sidecar proxy.
    #[serde(default)]
    pub kind: String,
    /// Consul's `Address`: the instance's own address; empty means its node's address.
    #[serde(default)]
    pub address: String,
    /// Consul's `Port`: where the instance accepts connections (a sidecar's: its mTLS listener).
    #[serde(default)]
    pub port: u16,
    /// Consul's `Tags`: free-form labels of the instance, returned by discovery queries.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Consul's `Meta`: free-form key/value labels registered with the instance.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's `Proxy` block, set on a `connect-proxy`: what the sidecar fronts, its upstreams.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// Consul's `Connect` block (whether the service is connect-native).
    #[serde(default)]
    pub connect: ServiceConnect,
    /// Consul's CreateIndex: the Raft index of the write that first registered this instance.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed this instance.
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
    /// Name of the node the check runs on.
    pub node: String,
    /// Consul's `CheckID`: the check's ID, unique on its node (e.g. `serfHealth`, `service:web-1`).
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Consul's `Name`: the check's human-readable name.
    #[serde(default)]
    pub name: String,
    /// Consul's `Status`: the check's current result.
    pub status: HealthStatus,
    /// Consul's `Notes`: operator-written description of what the check verifies.
    #[serde(default)]
    pub notes: String,
    /// Consul's `Output`: text the last run of the check produced (e.g. a script's stdout).
    #[serde(default)]
    pub output: String,
    /// Consul's `ServiceID`: the instance the check belongs to; empty for a node-level check.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Consul's `ServiceName`: the service of that instance; empty for a node-level check.
    #[serde(default)]
    pub service_name: String,
    /// Consul's CreateIndex: the Raft index of the write that first registered this check.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed this check.
    #[serde(default)]
    pub modify_index: Index,
}

/// Action of an intention or of an L7 permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentionAction {
    /// Let the connection or request through.
    Allow,
    /// Refuse the connection or request.
    Deny,
}

impl IntentionAction {
    /// Consul's lowercase spelling (`allow`, `deny`), as in the JSON.
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
    /// Consul's `Name`: the request header this match inspects.
    pub name: String,
    /// Consul's `Present`: matches when the header is sent, whatever its value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub present: bool,
    /// Consul's `Exact`: matches when the header's value equals this string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exact: String,
    /// Consul's `Prefix`: matches when the header's value starts with this string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Consul's `Suffix`: matches when the header's value ends with this string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    /// Consul's `Regex`: matches when the whole header value matches this pattern.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regex: String,
    /// Consul's `Invert`: negates the match above.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// HTTP match of an L7 permission (Consul `IntentionHTTPPermission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpPermission {
    /// Consul's `PathExact`: the request path must equal this (at most one path field is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    /// Consul's `PathPrefix`: the request path must start with this.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    /// Consul's `PathRegex`: the whole request path must match this pattern.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    /// Consul's `Methods`: upper-case HTTP methods the request may use; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Consul's `Header`: header matches that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderPermission>,
}

/// One L7 permission: stored now, enforced per request by the proxy (L7 issue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IntentionPermission {
    /// Consul's `Action`: what happens to a request this permission matches.
    pub action: IntentionAction,
    /// Consul's `HTTP` block: which requests the permission matches (required by validation).
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
    /// Consul's `SourceName`: the calling service, or `*` for any.
    pub source_name: String,
    /// Consul's `SourceNS`: the calling service's namespace (`default` when omitted).
    #[serde(rename = "SourceNS", default = "default_ns")]
    pub source_ns: String,
    /// Consul's `DestinationName`: the called service, or `*` for any.
    pub destination_name: String,
    /// Consul's `DestinationNS`: the called service's namespace (`default` when omitted).
    #[serde(rename = "DestinationNS", default = "default_ns")]
    pub destination_ns: String,
    /// Consul's `SourceType`: where the source identity comes from; only `consul` is accepted.
    #[serde(default = "default_source_type")]
    pub source_type: String,
    /// `None` when the intention carries L7 `Permissions` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    /// Consul's `Permissions`: L7 rules checked per request, first match wins; empty at L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    /// Consul's `Description`: free text from the operator (at most 512 bytes).
    #[serde(default)]
    pub description: String,
    /// Consul's `Meta`: free-form key/value labels of the intention.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's precedence value (9 exact/exact … 5 wildcard/wildcard in the default namespace).
    #[serde(default)]
    pub precedence: u32,
    /// Consul's CreateIndex: the Raft index of the write that created this intention.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed this intention.
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
    /// Consul's root `Name`: a human-readable label for the root.
    pub name: String,
    /// Serial number of the root certificate.
    pub serial_number: u64,
    /// Consul's `SigningKeyID`: colon-hex Subject Key ID of the root's key (its leaves' AKI).
    #[serde(rename = "SigningKeyID")]
    pub signing_key_id: String,
    /// Consul's `ExternalTrustDomain`: the trust domain this root certifies.
    #[serde(default)]
    pub external_trust_domain: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Consul's `RootCert`: the root certificate, PEM-encoded.
    pub root_cert: String,
    /// Cross-signed certificates: this root's key certified by the previous root.
    #[serde(default)]
    pub intermediate_certs: Vec<String>,
    /// Consul's `Active`: whether this root signs new leaves (it is the one `ActiveRootID` names).
    pub active: bool,
    /// Consul's `PrivateKeyType`: the root key's algorithm (the built-in CA only makes `ec`).
    pub private_key_type: String,
    /// Consul's `PrivateKeyBits`: the root key's size (e.g. 256 for P-256).
    pub private_key_bits: u32,
    /// Unix seconds at which this root stopped being active (0 while active or never).
    #[serde(default)]
    pub rotated_out_at: i64,
    /// Consul's CreateIndex: the Raft index of the write that stored this root.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed this root.
    #[serde(default)]
    pub modify_index: Index,
}

/// `/v1/connect/ca/roots` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRootList {
    /// Consul's `ActiveRootID`: the `ID` of the root that signs new leaves.
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    /// Consul's `TrustDomain`: the mesh's trust domain, the host part of every SPIFFE ID.
    pub trust_domain: String,
    /// Consul's `Roots`: every root still trusted, the active one and those rotated out.
    pub roots: Vec<CaRoot>,
}

/// CA configuration (`/v1/connect/ca/configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaConfig {
    /// Consul's `Provider`: the CA implementation in use (`consul` for the built-in CA).
    pub provider: String,
    /// Consul's provider `Config` map (e.g. `LeafCertTTL`, `PrivateKeyType`, `PrivateKeyBits`).
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Consul's CreateIndex: the Raft index of the write that first stored the CA configuration.
    #[serde(default)]
    pub create_index: Index,
    /// Consul's ModifyIndex: the Raft index of the last write that changed the CA configuration.
    #[serde(default)]
    pub modify_index: Index,
}

/// A leaf certificate issued for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IssuedLeaf {
    /// Consul's `SerialNumber`: the leaf's serial, colon-separated hex.
    pub serial_number: String,
    /// Consul's `CertPEM`: the leaf certificate, PEM-encoded.
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    /// Consul's `Service`: the service the leaf was issued for.
    pub service: String,
    /// Consul's `ServiceURI`: the SPIFFE ID in the leaf's URI SAN.
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
