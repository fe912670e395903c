//! The ACL rule language: what a policy's `Rules` text says, parsed into one typed [`Rules`].
//!
//! Consul writes rules in HCL or in the equivalent JSON ("ACL rules reference",
//! <https://developer.hashicorp.com/consul/docs/reference/acl/rule>; the policy guide shows the
//! same rules in both forms). Both forms go through one decoder (`tree`): the HCL body
//! and the JSON object are first turned into the same small tree ([`crate::spanned`]), so the
//! two can never disagree about what a rule means, and equal rules compare equal whatever form
//! they were written in.
//!
//! Resources this mesh enforces:
//!
//! | resource | form | fields |
//! |---|---|---|
//! | `service`, `service_prefix` | `service "<name>" { policy = "..." intentions = "..." }` | `policy` (required), `intentions` |
//! | `node`, `node_prefix` | `node "<name>" { policy = "..." }` | `policy` (required) |
//! | `agent`, `agent_prefix` | `agent "<name>" { policy = "..." }` | `policy` (required) |
//! | `operator`, `acl`, `mesh` | `operator = "..."` | |
//!
//! Access levels are `read`, `write` and `deny` (Consul's `list` exists only for `key_prefix`).
//! Resources Consul has but this mesh does not enforce (`key`, `session`, `event`, `query`,
//! `keyring`, ...) are refused with [`RulesError::UnsupportedResource`]: a policy that grants
//! them would otherwise look like it does something.
//!
//! Where the docs are silent we chose:
//!
//! * A segment given twice in one rule set (two `service "db"` blocks), a field given twice in one
//!   rule, or a scalar given twice is refused ([`RulesError::Duplicate`]). Consul's HCL v1 decoder
//!   keeps both and its merge then applies deny > write > read; refusing is clearer, and JSON
//!   objects cannot express the duplicate portably anyway.
//! * A scalar set to `""` counts as not set, as in Consul (`Operator != ""` guards its check).
//! * The HCL is HCL 2, what `hcl-rs` parses (every example in Consul's docs is valid HCL 2).
//!   Consul itself still parses with HCL 1, which also takes several attributes on one line
//!   (`service "a" { policy = "read" intentions = "read" }`); HCL 2 wants one per line and
//!   refuses that with a syntax error giving line and column.

mod error;
mod tree;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use error::RulesError;

/// The access a rule grants. Ordered by how rules merge: `Read < Write < Deny`, so the merge of
/// two levels is their [`Ord::max`].
///
/// Consul: "DENY has priority over WRITE or READ, WRITE has priority over READ" (policy
/// precedence in the ACL rules reference; `takesPrecedenceOver` in `acl/policy_merger.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Read the resource, not modify it.
    Read,
    /// Read and modify the resource.
    Write,
    /// Neither read nor modify the resource; an explicit denial that no default overrides.
    Deny,
}

impl AccessLevel {
    /// The level's spelling in rules: `"read"`, `"write"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Read => "read",
            AccessLevel::Write => "write",
            AccessLevel::Deny => "deny",
        }
    }

    /// Parses a level as written in rules (case-sensitive, as Consul).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(AccessLevel::Read),
            "write" => Some(AccessLevel::Write),
            "deny" => Some(AccessLevel::Deny),
            _ => None,
        }
    }

    /// The level two policies' rules for the same segment merge into: deny > write > read.
    pub fn merge(self, other: AccessLevel) -> AccessLevel {
        self.max(other)
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `service` or `service_prefix` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceRule {
    /// Access to the service itself (`policy`).
    pub policy: AccessLevel,
    /// Access to intentions whose destination is the service (`intentions`). `None` when the
    /// rule does not say; the authorizer then derives it from `policy` as Consul does (see
    /// [`ServiceRule::effective_intentions`]).
    pub intentions: Option<AccessLevel>,
}

impl ServiceRule {
    /// The intentions access this rule grants: the explicit `intentions`, else `read` when
    /// `policy` is `read` or `write`, else `deny`.
    ///
    /// Consul: services with `service:read` or `service:write` are implicitly granted
    /// `intentions:read` ("Create and manage intentions", ACL requirements;
    /// `acl/policy_authorizer.go` `loadRules`).
    pub fn effective_intentions(&self) -> AccessLevel {
        self.intentions.unwrap_or(match self.policy {
            AccessLevel::Read | AccessLevel::Write => AccessLevel::Read,
            AccessLevel::Deny => AccessLevel::Deny,
        })
    }

    /// Merges another rule for the same segment: each field deny > write > read, an explicit
    /// `intentions` beats an absent one (Consul merges the raw fields before deriving).
    pub fn merge(self, other: ServiceRule) -> ServiceRule {
        ServiceRule {
            policy: self.policy.merge(other.policy),
            intentions: match (self.intentions, other.intentions) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// A typed ACL rule set: the content of one policy's `Rules`, or the merge of several.
///
/// Keys are segments (service, node or agent names, or prefixes of them; `""` as a prefix
/// matches everything). Build one with [`Rules::parse`], [`Rules::from_hcl`] or
/// [`Rules::from_json`], or field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `service "<name>"`: rules for exactly that service.
    pub services: BTreeMap<String, ServiceRule>,
    /// `service_prefix "<prefix>"`: rules for every service whose name starts with the prefix.
    pub service_prefixes: BTreeMap<String, ServiceRule>,
    /// `node "<name>"`.
    pub nodes: BTreeMap<String, AccessLevel>,
    /// `node_prefix "<prefix>"`.
    pub node_prefixes: BTreeMap<String, AccessLevel>,
    /// `agent "<node name>"`.
    pub agents: BTreeMap<String, AccessLevel>,
    /// `agent_prefix "<prefix>"`.
    pub agent_prefixes: BTreeMap<String, AccessLevel>,
    /// `operator = "..."`: cluster-level operator endpoints (Raft, autopilot, ...).
    pub operator: Option<AccessLevel>,
    /// `acl = "..."`: the ACL API itself.
    pub acl: Option<AccessLevel>,
    /// `mesh = "..."`: mesh-wide configuration; when absent, `operator` applies.
    pub mesh: Option<AccessLevel>,
}

impl Rules {
    /// Parses rules the way Consul reads a policy's `Rules` field: JSON when the text starts
    /// with `{` (after whitespace), HCL otherwise. An empty text is an empty rule set.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        if text.trim_start().starts_with('{') {
            Rules::from_json(text)
        } else {
            Rules::from_hcl(text)
        }
    }

    /// Parses the HCL form.
    pub fn from_hcl(text: &str) -> Result<Rules, RulesError> {
        tree::decode(&crate::spanned::parse_hcl(text)?)
    }

    /// Parses Consul's JSON form of the same rules.
    pub fn from_json(text: &str) -> Result<Rules, RulesError> {
        tree::decode(&crate::spanned::parse_json(text)?)
    }

    /// True when the set holds no rule at all.
    pub fn is_empty(&self) -> bool {
        self == &Rules::default()
    }

    /// Merges `other` into `self` as Consul merges a token's policies: rules for different
    /// segments are all kept; for the same segment (and the same kind, exact or prefix) and for
    /// the scalars, deny > write > read ([`AccessLevel::merge`], [`ServiceRule::merge`]).
    pub fn merge(&mut self, other: &Rules) {
        fn merge_map<V: Copy>(
            into: &mut BTreeMap<String, V>,
            from: &BTreeMap<String, V>,
            f: impl Fn(V, V) -> V,
        ) {
            for (k, v) in from {
                into.entry(k.clone())
                    .and_modify(|e| *e = f(*e, *v))
                    .or_insert(*v);
            }
        }
        fn merge_scalar(into: &mut Option<AccessLevel>, from: Option<AccessLevel>) {
            *into = match (*into, from) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (a, b) => a.or(b),
            };
        }
        merge_map(&mut self.services, &other.services, ServiceRule::merge);
        merge_map(
            &mut self.service_prefixes,
            &other.service_prefixes,
            ServiceRule::merge,
        );
        merge_map(&mut self.nodes, &other.nodes, AccessLevel::merge);
        merge_map(
            &mut self.node_prefixes,
            &other.node_prefixes,
            AccessLevel::merge,
        );
        merge_map(&mut self.agents, &other.agents, AccessLevel::merge);
        merge_map(
            &mut self.agent_prefixes,
            &other.agent_prefixes,
            AccessLevel::merge,
        );
        merge_scalar(&mut self.operator, other.operator);
        merge_scalar(&mut self.acl, other.acl);
        merge_scalar(&mut self.mesh, other.mesh);
    }
}

#[cfg(test)]
mod tests;
