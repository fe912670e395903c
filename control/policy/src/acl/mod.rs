//! Consul-style ACLs, the pure core: the rule language, the replicated objects (tokens,
//! policies, roles), their validation, and the authorizer that answers "may this token do X?".
//!
//! Why here: enforcement on the HTTP and gRPC APIs, storage in Raft and the ACL API are built
//! elsewhere on these types; keeping the decision in one pure place means every caller gives the
//! same answer for the same token and snapshot, as [`crate::authorize`] does for intentions.
//!
//! Flow: [`validate_policy`] / [`validate_token`] / [`validate_role`] on write; an
//! [`AclIndex`] of the snapshot's policies (rules parsed once) and roles; per request,
//! [`AclIndex::authorizer`] compiles the token's effective rules in the local datacenter into an
//! [`Authorizer`], whose [`Decision`]s render Consul's denial message.
//!
//! Semantics follow Consul's documentation (ACL rules reference, ACL policies / roles / tokens,
//! service and node identities); each module cites the part it implements and names the
//! choices made where the docs are silent.

#![deny(missing_docs)]

mod authorizer;
mod decision;
mod identity;
pub mod model;
mod resolve;
pub mod rules;
mod validate;

#[cfg(test)]
mod tests;

pub use authorizer::Authorizer;
pub use decision::{Access, Decision, Permission, PermissionDenied, Reason, Resource};
pub use identity::{SIDECAR_PROXY_SUFFIX, node_identity_rules, service_identity_rules};
pub use model::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID, AclLink, AclNodeIdentity, AclPolicy,
    AclRole, AclServiceIdentity, AclToken, GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES, global_management_policy,
};
pub use resolve::{AclIndex, ResolvedToken};
pub use rules::{AccessLevel, Rules, RulesError, ServiceRule};
pub use validate::{
    AclValidationError, MAX_IDENTITY_NAME_LEN, MAX_POLICY_NAME_LEN, MAX_ROLE_NAME_LEN, is_rfc3339,
    is_uuid, is_valid_identity_name, is_valid_policy_name, is_valid_role_name, validate_policy,
    validate_role, validate_token,
};
