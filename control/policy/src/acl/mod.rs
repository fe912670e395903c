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

pub mod rules;

pub use rules::{AccessLevel, Rules, RulesError, ServiceRule};
