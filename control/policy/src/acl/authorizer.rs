//! A token's effective rules compiled for fast decisions.
//!
//! Semantics (Consul's; ACL rules reference, "Policy precedence" and each resource's section,
//! and `acl/policy_authorizer.go`):
//!
//! * For a named resource, an exact rule for the name beats every prefix rule; otherwise the
//!   longest matching prefix rule decides (`service_prefix ""` matches every name).
//! * Rules from several policies, roles and identities are merged first, per segment and kind,
//!   deny > write > read ([`Rules::merge`]); so "deny wins" only among rules for the *same*
//!   segment: `service "db" { policy = "write" }` still beats a merged `service_prefix ""` deny.
//! * A rule that matches decides: `write` grants read and write, `read` grants only read,
//!   `deny` nothing. Only when no rule matches does the ACL default policy apply.
//! * `intentions` of a service rule, when absent, is `read` if the rule's policy is `read` or
//!   `write` and `deny` otherwise (derived after merging).
//! * `mesh`, when no policy sets it, is decided by `operator`; `operator` and `acl` stand
//!   alone. Then the default policy.
//!
//! Compiled form: one byte trie per named resource (services, intentions, nodes, agents) whose
//! nodes hold the exact and the prefix rule ending there, as Consul's radix tree does. A lookup
//! walks the name once, remembering the last prefix rule passed, and takes the exact rule if the
//! walk ends on one: O(length of the name), whatever the number of rules.

use std::sync::Arc;

use super::decision::{Access, Decision, Permission, Reason, Resource};
use super::rules::{AccessLevel, Rules};
use crate::intentions::DefaultPolicy;

/// The rule a trie lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Exact(AccessLevel),
    Prefix(usize, AccessLevel),
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, usize)>,
    exact: Option<AccessLevel>,
    prefix: Option<AccessLevel>,
}

/// Exact and prefix rules of one named resource.
#[derive(Debug, Clone)]
struct SegmentTrie {
    /// Node 0 is the root (the empty string).
    nodes: Vec<TrieNode>,
}

impl SegmentTrie {
    fn new<'r>(
        exact: impl IntoIterator<Item = (&'r str, AccessLevel)>,
        prefix: impl IntoIterator<Item = (&'r str, AccessLevel)>,
    ) -> Self {
        let mut t = SegmentTrie {
            nodes: vec![TrieNode::default()],
        };
        for (k, level) in exact {
            let n = t.node_for(k);
            t.nodes[n].exact = Some(level);
        }
        for (k, level) in prefix {
            let n = t.node_for(k);
            t.nodes[n].prefix = Some(level);
        }
        t
    }

    /// The node for `key`, created with its ancestors as needed.
    fn node_for(&mut self, key: &str) -> usize {
        let mut n = 0;
        for &b in key.as_bytes() {
            n = match self.nodes[n].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[n].children[i].1,
                Err(i) => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[n].children.insert(i, (b, child));
                    child
                }
            };
        }
        n
    }

    fn lookup(&self, name: &str) -> Option<Match> {
        let bytes = name.as_bytes();
        let mut best = None;
        let mut n = &self.nodes[0];
        let mut depth = 0;
        loop {
            if depth == bytes.len()
                && let Some(level) = n.exact
            {
                return Some(Match::Exact(level));
            }
            if let Some(level) = n.prefix {
                best = Some(Match::Prefix(depth, level));
            }
            let Some(&b) = bytes.get(depth) else {
                return best;
            };
            match n.children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => n = &self.nodes[n.children[i].1],
                Err(_) => return best,
            }
            depth += 1;
        }
    }
}

/// A token's compiled permissions: asks "may this token do X on Y?".
///
/// Build it from merged rules with [`Authorizer::new`], or from a token and the ACL objects with
/// [`AclIndex::authorizer`](super::AclIndex::authorizer). Immutable once built: share one per
/// token behind an `Arc`. Decisions do not allocate.
#[derive(Debug, Clone)]
pub struct Authorizer {
    accessor_id: Arc<str>,
    default: DefaultPolicy,
    services: SegmentTrie,
    intentions: SegmentTrie,
    nodes: SegmentTrie,
    agents: SegmentTrie,
    operator: Option<AccessLevel>,
    acl: Option<AccessLevel>,
    mesh: Option<AccessLevel>,
}

impl Authorizer {
    /// Compiles already-merged `rules` for the token `accessor_id`, with the ACL `default`
    /// policy deciding what no rule covers.
    pub fn new(accessor_id: impl Into<Arc<str>>, rules: &Rules, default: DefaultPolicy) -> Self {
        fn pairs(
            m: &std::collections::BTreeMap<String, AccessLevel>,
        ) -> impl Iterator<Item = (&str, AccessLevel)> {
            m.iter().map(|(k, v)| (k.as_str(), *v))
        }
        Authorizer {
            accessor_id: accessor_id.into(),
            default,
            services: SegmentTrie::new(
                rules.services.iter().map(|(k, r)| (k.as_str(), r.policy)),
                rules
                    .service_prefixes
                    .iter()
                    .map(|(k, r)| (k.as_str(), r.policy)),
            ),
            intentions: SegmentTrie::new(
                rules
                    .services
                    .iter()
                    .map(|(k, r)| (k.as_str(), r.effective_intentions())),
                rules
                    .service_prefixes
                    .iter()
                    .map(|(k, r)| (k.as_str(), r.effective_intentions())),
            ),
            nodes: SegmentTrie::new(pairs(&rules.nodes), pairs(&rules.node_prefixes)),
            agents: SegmentTrie::new(pairs(&rules.agents), pairs(&rules.agent_prefixes)),
            operator: rules.operator,
            acl: rules.acl,
            mesh: rules.mesh,
        }
    }

    /// The AccessorID of the token this authorizer is for.
    pub fn accessor_id(&self) -> &str {
        &self.accessor_id
    }

    /// The ACL default policy this authorizer falls back to.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    fn named<'a>(
        &'a self,
        trie: &SegmentTrie,
        resource: Resource,
        access: Access,
        name: &'a str,
    ) -> Decision<'a> {
        let reason = match trie.lookup(name) {
            Some(Match::Exact(level)) => Reason::Exact { level },
            Some(Match::Prefix(len, level)) => Reason::Prefix { len, level },
            None => Reason::Default(self.default),
        };
        self.decision(Permission { resource, access }, Some(name), reason)
    }

    fn scalar(
        &self,
        rule: Option<AccessLevel>,
        resource: Resource,
        access: Access,
    ) -> Decision<'_> {
        let reason = match rule {
            Some(level) => Reason::Scalar { level },
            None => Reason::Default(self.default),
        };
        self.decision(Permission { resource, access }, None, reason)
    }

    fn decision<'a>(
        &'a self,
        permission: Permission,
        name: Option<&'a str>,
        reason: Reason,
    ) -> Decision<'a> {
        let allowed = match reason {
            Reason::Exact { level }
            | Reason::Prefix { level, .. }
            | Reason::Scalar { level }
            | Reason::OperatorFallback { level } => permission.access.granted_by(level),
            Reason::Default(d) => d.allows(),
        };
        Decision {
            allowed,
            permission,
            name,
            reason,
            accessor_id: &self.accessor_id,
        }
    }

    /// `service:read` on `name` (discover the service in the catalog and health APIs).
    pub fn service_read<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.services, Resource::Service, Access::Read, name)
    }

    /// `service:write` on `name` (register the service, obtain its leaf certificate).
    pub fn service_write<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.services, Resource::Service, Access::Write, name)
    }

    /// `intention:read` on destination `name`.
    pub fn intentions_read<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.intentions, Resource::Intention, Access::Read, name)
    }

    /// `intention:write` on destination `name`.
    pub fn intentions_write<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.intentions, Resource::Intention, Access::Write, name)
    }

    /// `node:read` on `name`.
    pub fn node_read<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.nodes, Resource::Node, Access::Read, name)
    }

    /// `node:write` on `name` (register the node).
    pub fn node_write<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.nodes, Resource::Node, Access::Write, name)
    }

    /// `agent:read` on the agent of node `name`.
    pub fn agent_read<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.agents, Resource::Agent, Access::Read, name)
    }

    /// `agent:write` on the agent of node `name`.
    pub fn agent_write<'a>(&'a self, name: &'a str) -> Decision<'a> {
        self.named(&self.agents, Resource::Agent, Access::Write, name)
    }

    /// `operator:read`.
    pub fn operator_read(&self) -> Decision<'_> {
        self.scalar(self.operator, Resource::Operator, Access::Read)
    }

    /// `operator:write`.
    pub fn operator_write(&self) -> Decision<'_> {
        self.scalar(self.operator, Resource::Operator, Access::Write)
    }

    /// `acl:read`.
    pub fn acl_read(&self) -> Decision<'_> {
        self.scalar(self.acl, Resource::Acl, Access::Read)
    }

    /// `acl:write`.
    pub fn acl_write(&self) -> Decision<'_> {
        self.scalar(self.acl, Resource::Acl, Access::Write)
    }

    fn mesh(&self, access: Access) -> Decision<'_> {
        let reason = match (self.mesh, self.operator) {
            (Some(level), _) => Reason::Scalar { level },
            (None, Some(level)) => Reason::OperatorFallback { level },
            (None, None) => Reason::Default(self.default),
        };
        self.decision(
            Permission {
                resource: Resource::Mesh,
                access,
            },
            None,
            reason,
        )
    }

    /// `mesh:read`; without a `mesh` rule, `operator` decides.
    pub fn mesh_read(&self) -> Decision<'_> {
        self.mesh(Access::Read)
    }

    /// `mesh:write`; without a `mesh` rule, `operator` decides.
    pub fn mesh_write(&self) -> Decision<'_> {
        self.mesh(Access::Write)
    }
}
