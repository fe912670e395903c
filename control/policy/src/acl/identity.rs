//! The rules service and node identities stand for, and in which datacenter they apply.
//!
//! An identity is a policy template (ACL docs, "Service identities" and "Node identities";
//! Consul's `aclPolicyTemplateServiceIdentity` / `aclPolicyTemplateNodeIdentity`):
//!
//! ```hcl
//! # service identity <name>
//! service "<name>"               { policy = "write" }
//! service "<name>-sidecar-proxy" { policy = "write" }
//! service_prefix ""              { policy = "read" }
//! node_prefix ""                 { policy = "read" }
//!
//! # node identity <name>
//! node "<name>"     { policy = "write" }
//! service_prefix "" { policy = "read" }
//! ```
//!
//! A service identity applies in every datacenter when its `Datacenters` is empty, else in the
//! ones it lists; a node identity only in its one `Datacenter` (Consul scopes the synthetic
//! policy to those datacenters).

use super::model::{AclNodeIdentity, AclServiceIdentity};
use super::rules::{AccessLevel, Rules, ServiceRule};

/// Suffix Consul gives a sidecar proxy's service name.
pub const SIDECAR_PROXY_SUFFIX: &str = "-sidecar-proxy";

const fn rule(policy: AccessLevel) -> ServiceRule {
    ServiceRule {
        policy,
        intentions: None,
    }
}

/// The rules of the service identity for `service_name`.
pub fn service_identity_rules(service_name: &str) -> Rules {
    let mut r = Rules::default();
    r.services
        .insert(service_name.to_string(), rule(AccessLevel::Write));
    r.services.insert(
        format!("{service_name}{SIDECAR_PROXY_SUFFIX}"),
        rule(AccessLevel::Write),
    );
    r.service_prefixes
        .insert(String::new(), rule(AccessLevel::Read));
    r.node_prefixes.insert(String::new(), AccessLevel::Read);
    r
}

/// The rules of the node identity for `node_name`.
pub fn node_identity_rules(node_name: &str) -> Rules {
    let mut r = Rules::default();
    r.nodes.insert(node_name.to_string(), AccessLevel::Write);
    r.service_prefixes
        .insert(String::new(), rule(AccessLevel::Read));
    r
}

impl AclServiceIdentity {
    /// True when the identity applies in `datacenter`: no `Datacenters`, or one of them.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|d| d == datacenter)
    }

    /// The identity's rules ([`service_identity_rules`]).
    pub fn rules(&self) -> Rules {
        service_identity_rules(&self.service_name)
    }
}

impl AclNodeIdentity {
    /// True when the identity applies in `datacenter`: only its own.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenter == datacenter
    }

    /// The identity's rules ([`node_identity_rules`]).
    pub fn rules(&self) -> Rules {
        node_identity_rules(&self.node_name)
    }
}
