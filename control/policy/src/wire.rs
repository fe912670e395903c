//! The bodies the agent's HTTP API hands to the proxy and the CLI, typed once.
//!
//! Why here: each of these bodies has one writer (the servers or the agent) and two or three
//! readers (the agent's cache, the proxy, `meshctl`). When each side spelled the JSON itself the
//! shapes drifted (one reader defaulted a field another required; one `Debug` printed a private
//! key the other redacted). Every side now serializes or parses these types, so a field renamed
//! here is renamed everywhere, and the compiler says who reads it.
//!
//! The shapes are Consul's (PascalCase, its field names), so a Consul client reads them too.
//! Fields a reader may not find (older writers, Consul's own agent) default rather than fail;
//! what the proxy cannot work without is checked by the proxy, which says what is missing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::intentions::{DefaultPolicy, IntentionSet, WILDCARD};
use crate::model::{
    HealthCheck, HealthStatus, Index, Intention, Node, ProxyConfig, ServiceConnect, ServiceInstance,
};

pub use crate::model::{CaRoot, CaRootList};

/// `GET /v1/agent/connect/intentions/:destination` (and the servers' intentions watch topic):
/// what one destination's proxy enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionsSnapshot {
    /// What happens when no intention matches. A body without one denies (fail closed).
    #[serde(default)]
    pub default_policy: DefaultPolicy,
    /// The mesh's trust domain; `""` only before the CA exists, and no reader enforces a
    /// snapshot without one.
    #[serde(default)]
    pub trust_domain: String,
    /// The intentions whose destination is this service or `*`.
    #[serde(default)]
    pub intentions: Vec<Intention>,
}

impl IntentionsSnapshot {
    /// The snapshot for `destination` out of every intention in the mesh (an empty
    /// `destination`: all of them).
    pub fn for_destination(
        all: impl IntoIterator<Item = Intention>,
        destination: &str,
        default_policy: DefaultPolicy,
        trust_domain: &str,
    ) -> Self {
        Self {
            default_policy,
            trust_domain: trust_domain.to_string(),
            intentions: all
                .into_iter()
                .filter(|i| {
                    destination.is_empty()
                        || i.destination_name == destination
                        || i.destination_name == WILDCARD
                })
                .collect(),
        }
    }

    /// The indexed set the decider reads, and the trust domain it is enforced under.
    pub fn into_parts(self) -> (IntentionSet, String) {
        let set = IntentionSet::new(self.intentions, self.default_policy);
        (set, self.trust_domain)
    }
}

/// `GET /v1/agent/connect/ca/leaf/:service` (Consul's `LeafCert`): a service's certificate
/// and the private key the agent generated for it.
///
/// The key never leaves the host: only local callers of the agent's loopback API receive it.
/// `Debug` leaves it out, so a log line or a panic message cannot carry it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeafCert {
    /// Consul's `SerialNumber`: the leaf's serial, colon-separated hex.
    #[serde(default)]
    pub serial_number: String,
    /// Consul's `CertPEM`: the leaf certificate, PEM-encoded; the proxy presents it.
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    /// Consul's `PrivateKeyPEM`: the leaf's private key, PEM-encoded; never printed by `Debug`.
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
    /// Consul's `Service`: the service the leaf was issued for.
    #[serde(default)]
    pub service: String,
    /// Consul's `ServiceURI`: the SPIFFE ID in the leaf's URI SAN.
    #[serde(rename = "ServiceURI")]
    pub service_uri: String,
    /// RFC 3339.
    #[serde(default)]
    pub valid_after: String,
    /// RFC 3339.
    #[serde(default)]
    pub valid_before: String,
    /// Consul's CreateIndex: the blocking-query index when the service's first leaf was issued.
    #[serde(default)]
    pub create_index: Index,
    /// Grows with every new leaf for the service (the blocking-query index).
    #[serde(default)]
    pub modify_index: Index,
    /// Root that signed it (not in Consul's shape; shows rotations).
    #[serde(rename = "RootID", default)]
    pub root_id: String,
}

impl fmt::Debug for LeafCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCert")
            .field("serial_number", &self.serial_number)
            .field("service_uri", &self.service_uri)
            .field("valid_after", &self.valid_after)
            .field("valid_before", &self.valid_before)
            .field("modify_index", &self.modify_index)
            .field("root_id", &self.root_id)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One entry of `GET /v1/health/service/:service` and `/v1/health/connect/:service`: an
/// instance with its node and the checks that decide its health (the node's own and its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceHealth {
    /// The node the instance runs on, as `Node` in Consul's health API.
    pub node: Node,
    /// The service instance itself.
    pub service: ServiceInstance,
    /// The node's checks and the instance's own checks; `status` is the worst of them.
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

impl ServiceHealth {
    /// Worst status of the node's own checks and the instance's checks; passing when none
    /// (what `?passing` filters on).
    pub fn status(&self) -> HealthStatus {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing)
    }

    /// Where the instance accepts connections: its own address, else its node's.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }
}

/// Load-balancing weights of a local service (Consul's `Weights`; fixed here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Consul's `Weights.Passing`: the instance's weight while its checks pass.
    pub passing: u32,
    /// Consul's `Weights.Warning`: the instance's weight while a check warns.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service registered on the local agent, as `GET /v1/agent/services` (a map by ID) and
/// `/v1/agent/service/:id` return it (Consul's `AgentService`). For a sidecar proxy
/// (`Kind: connect-proxy`) the `Proxy` block is its registration: what it fronts, where the
/// application listens and its upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Consul's service `ID`: the instance's ID on this agent, the key of `/v1/agent/services`.
    #[serde(rename = "ID")]
    pub id: String,
    /// Consul's `Service`: the service name.
    pub service: String,
    /// Consul's `Kind`: `""` for a typical service, `connect-proxy` for a sidecar proxy.
    #[serde(default)]
    pub kind: String,
    /// Consul's `Tags`: free-form labels of the instance.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Consul's `Meta`: free-form key/value labels of the instance.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Consul's `Address`: the instance's own address; empty means the agent's node address.
    #[serde(default)]
    pub address: String,
    /// Consul's `Port`: the port the instance accepts connections on.
    #[serde(default)]
    pub port: u16,
    /// Consul's `Weights`: load-balancing weights (always 1/1 here).
    #[serde(default)]
    pub weights: Weights,
    /// Consul's `EnableTagOverride`: whether others may change the tags (always false here).
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Consul's `Datacenter`: the agent's datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Consul's `Proxy` block; set for a sidecar (what it fronts, its upstreams).
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// Consul's `Connect` block (whether the service is connect-native).
    #[serde(default)]
    pub connect: ServiceConnect,
}

impl AgentService {
    /// The agent's view of `s`, a service registered on it, in datacenter `datacenter`.
    pub fn from_instance(s: &ServiceInstance, datacenter: &str) -> Self {
        Self {
            id: s.id.clone(),
            service: s.service.clone(),
            kind: s.kind.clone(),
            tags: s.tags.clone(),
            meta: s.meta.clone(),
            address: s.address.clone(),
            port: s.port,
            weights: Weights::default(),
            enable_tag_override: false,
            datacenter: datacenter.to_string(),
            proxy: s.proxy.clone(),
            connect: s.connect.clone(),
        }
    }

    /// The proxied service's name (a sidecar's identity and intention destination); `""` for
    /// a service that is no sidecar.
    pub fn destination(&self) -> &str {
        self.proxy
            .as_ref()
            .map(|p| p.destination_service_name.as_str())
            .unwrap_or_default()
    }

    /// `LocalServiceAddress:LocalServicePort` of the application a sidecar fronts (the
    /// address defaults to `127.0.0.1`, as in Consul).
    pub fn local_app(&self) -> (String, u16) {
        let p = self.proxy.as_ref();
        let host = p
            .map(|p| p.local_service_address.as_str())
            .filter(|a| !a.is_empty())
            .unwrap_or("127.0.0.1");
        (host.to_string(), p.map_or(0, |p| p.local_service_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_debug_never_shows_the_key() {
        let leaf = LeafCert {
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nSECRET\n".into(),
            service_uri: "spiffe://td/ns/default/dc/dc1/svc/web".into(),
            ..LeafCert::default()
        };
        let shown = format!("{leaf:?} {leaf:#?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("svc/web"),
            "{shown}"
        );
    }

    #[test]
    fn leaf_round_trips_in_consul_shape() {
        let leaf = LeafCert {
            serial_number: "0a:0b".into(),
            cert_pem: "CERT".into(),
            private_key_pem: "KEY".into(),
            service: "web".into(),
            service_uri: "spiffe://td/ns/default/dc/dc1/svc/web".into(),
            valid_after: "2026-01-01T00:00:00Z".into(),
            valid_before: "2026-01-04T00:00:00Z".into(),
            create_index: 3,
            modify_index: 4,
            root_id: "r".into(),
        };
        let v = serde_json::to_value(&leaf).unwrap();
        for field in [
            "CertPEM",
            "PrivateKeyPEM",
            "ServiceURI",
            "ModifyIndex",
            "RootID",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {v}");
        }
        assert_eq!(serde_json::from_value::<LeafCert>(v).unwrap(), leaf);
        // Without the certificate or the key there is no leaf.
        assert!(serde_json::from_str::<LeafCert>(r#"{"ServiceURI":"x","CertPEM":"c"}"#).is_err());
    }

    #[test]
    fn snapshot_keeps_the_destination_and_wildcard_intentions() {
        let intention = |src: &str, dst: &str| -> Intention {
            serde_json::from_value(serde_json::json!({
                "SourceName": src, "DestinationName": dst, "Action": "allow"
            }))
            .unwrap()
        };
        let all = [
            intention("web", "db"),
            intention("web", "cache"),
            intention("ops", "*"),
        ];
        let s = IntentionsSnapshot::for_destination(all.clone(), "db", DefaultPolicy::Deny, "td");
        let names: Vec<_> = s.intentions.iter().map(|i| &i.destination_name).collect();
        assert_eq!(names, ["db", "*"]);
        assert_eq!(
            IntentionsSnapshot::for_destination(all, "", DefaultPolicy::Deny, "td")
                .intentions
                .len(),
            3
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["DefaultPolicy"], "deny");
        assert_eq!(json["TrustDomain"], "td");
        // A body missing the policy denies.
        let parsed: IntentionsSnapshot = serde_json::from_str(r#"{"TrustDomain":"td"}"#).unwrap();
        assert_eq!(parsed.default_policy, DefaultPolicy::Deny);
    }

    #[test]
    fn service_health_address_falls_back_to_the_node() {
        let entry: ServiceHealth = serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {"ID": "web-1", "Service": "web", "Node": "n1", "Port": 80},
            "Checks": [{"Node": "n1", "CheckID": "c", "Status": "warning"}]
        }))
        .unwrap();
        assert_eq!(entry.address(), "10.0.0.1");
        assert_eq!(entry.status(), HealthStatus::Warning);
    }

    #[test]
    fn agent_service_is_consuls_shape() {
        let instance: ServiceInstance = serde_json::from_value(serde_json::json!({
            "ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Node": "n1",
            "Kind": "connect-proxy", "Port": 21000,
            "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 8080}
        }))
        .unwrap();
        let a = AgentService::from_instance(&instance, "dc1");
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["Datacenter"], "dc1");
        assert_eq!(v["Weights"]["Passing"], 1);
        assert!(
            v.get("Node").is_none() && v.get("CreateIndex").is_none(),
            "{v}"
        );
        assert_eq!(a.destination(), "web");
        assert_eq!(a.local_app(), ("127.0.0.1".to_string(), 8080));
        assert_eq!(serde_json::from_value::<AgentService>(v).unwrap(), a);
    }
}
