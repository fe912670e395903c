//! The replicated ACL objects, in Consul's JSON shape (ACL token, policy and role HTTP APIs:
//! <https://developer.hashicorp.com/consul/api-docs/acl/tokens>, `.../acl/policies`,
//! `.../acl/roles`), and the built-in ones every cluster has.
//!
//! These are what the state machine stores and the API carries; an existing Consul client can
//! read and write them unchanged. Times are kept as the RFC 3339 text Consul sends (this crate
//! has no clock and no date library); [`validate_token`](super::validate_token) checks their syntax.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Index;

/// AccessorID of the anonymous token, the one a request without a token acts as (ACL tokens
/// docs, "Anonymous token").
pub const ANONYMOUS_TOKEN_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";

/// SecretID of the anonymous token.
pub const ANONYMOUS_TOKEN_SECRET_ID: &str = "anonymous";

/// ID of the built-in `global-management` policy (ACL policies docs, "Built-in policies").
pub const GLOBAL_MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";

/// Name of the built-in `global-management` policy.
pub const GLOBAL_MANAGEMENT_POLICY_NAME: &str = "global-management";

/// Rules of the built-in `global-management` policy, limited to the resources this mesh
/// enforces. Consul's own text (`structs.ACLPolicyGlobalManagement`) also grants `write` on
/// `event_prefix`, `key_prefix`, `keyring`, `peering`, `query_prefix` and `session_prefix`,
/// which this mesh's rule parser refuses as not supported.
pub const GLOBAL_MANAGEMENT_RULES: &str = r#"acl = "write"
agent_prefix "" {
  policy = "write"
}
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
service_prefix "" {
  policy = "write"
  intentions = "write"
}
"#;

/// The built-in `global-management` policy, as a cluster creates it at bootstrap.
pub fn global_management_policy() -> AclPolicy {
    AclPolicy {
        id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
        name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
        description: "Builtin Policy that grants unlimited access".into(),
        rules: GLOBAL_MANAGEMENT_RULES.into(),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// A link from a token or role to a policy, or from a token to a role: `{"ID": ..., "Name": ...}`.
///
/// Consul accepts either field on write and fills in both; resolution goes by `ID` and falls
/// back to `Name` when `ID` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclLink {
    /// The linked object's ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The linked object's name.
    #[serde(default)]
    pub name: String,
}

/// A service identity: the templated policy that lets a service and its sidecar register and
/// discover others (ACL service identities docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclServiceIdentity {
    /// The service's name.
    pub service_name: String,
    /// Datacenters the identity applies in; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A node identity: the templated policy for a node's agent (ACL node identities docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclNodeIdentity {
    /// The node's name.
    pub node_name: String,
    /// The one datacenter the identity applies in (required).
    pub datacenter: String,
}

/// An ACL token (`/v1/acl/token`).
///
/// `Debug` never prints the `SecretID`: tokens end up in logs through `{:?}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclToken {
    /// Public identifier, a UUID; names the token in logs and denial messages.
    #[serde(rename = "AccessorID", default)]
    pub accessor_id: String,
    /// The bearer secret, a UUID. Never log it.
    #[serde(rename = "SecretID", default)]
    pub secret_id: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Linked policies.
    #[serde(default)]
    pub policies: Vec<AclLink>,
    /// Linked roles.
    #[serde(default)]
    pub roles: Vec<AclLink>,
    /// Service identities.
    #[serde(default)]
    pub service_identities: Vec<AclServiceIdentity>,
    /// Node identities.
    #[serde(default)]
    pub node_identities: Vec<AclNodeIdentity>,
    /// True for a token valid only in the datacenter that created it (not replicated).
    #[serde(default)]
    pub local: bool,
    /// When the token expires, RFC 3339; `None` for a token that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    /// On create only: expire after this long (Go duration text, e.g. `"1h"`); the server turns
    /// it into `ExpirationTime`.
    #[serde(
        rename = "ExpirationTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_ttl: Option<String>,
    /// When the token was created, RFC 3339.
    #[serde(default)]
    pub create_time: String,
    /// Raft index of the creation.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: Index,
}

impl AclToken {
    /// True for the anonymous token.
    pub fn is_anonymous(&self) -> bool {
        self.accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID
    }
}

impl fmt::Debug for AclToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclToken")
            .field("accessor_id", &self.accessor_id)
            .field("secret_id", &"<redacted>")
            .field("description", &self.description)
            .field("policies", &self.policies)
            .field("roles", &self.roles)
            .field("service_identities", &self.service_identities)
            .field("node_identities", &self.node_identities)
            .field("local", &self.local)
            .field("expiration_time", &self.expiration_time)
            .field("expiration_ttl", &self.expiration_ttl)
            .field("create_time", &self.create_time)
            .field("create_index", &self.create_index)
            .field("modify_index", &self.modify_index)
            .finish()
    }
}

/// An ACL policy (`/v1/acl/policy`): named rules, optionally limited to some datacenters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclPolicy {
    /// The policy's ID, a UUID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// The rule text, HCL or JSON ([`Rules::parse`](super::rules::Rules::parse)).
    #[serde(default)]
    pub rules: String,
    /// Datacenters the policy applies in; empty means all, including future ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    /// Raft index of the creation.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: Index,
}

impl AclPolicy {
    /// True when the policy applies in `datacenter` (its `Datacenters` is empty or names it).
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|d| d == datacenter)
    }
}

/// An ACL role (`/v1/acl/role`): policies and identities grouped under one name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclRole {
    /// The role's ID, a UUID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Linked policies.
    #[serde(default)]
    pub policies: Vec<AclLink>,
    /// Service identities.
    #[serde(default)]
    pub service_identities: Vec<AclServiceIdentity>,
    /// Node identities.
    #[serde(default)]
    pub node_identities: Vec<AclNodeIdentity>,
    /// Raft index of the creation.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: Index,
}
