//! From a token to its effective rules: the policies, roles and identities it links, filtered
//! by datacenter and merged.
//!
//! Consul (ACL docs on tokens, roles, policies and identities):
//!
//! * a token's rules are those of its policies, of its roles' policies, of its service and node
//!   identities and of its roles' identities;
//! * a policy counts only in the datacenters its `Datacenters` lists (all when empty); a service
//!   identity likewise; a node identity only in its own `Datacenter`;
//! * links to policies or roles that no longer exist are skipped (a deleted policy simply stops
//!   granting anything);
//! * everything is merged deny > write > read ([`Rules::merge`]).
//!
//! [`AclIndex`] holds the ACL objects of one snapshot with their rules parsed once, so resolving
//! a token never parses HCL.

use std::collections::HashMap;

use super::authorizer::Authorizer;
use super::model::{AclLink, AclPolicy, AclRole, AclToken};
use super::rules::{Rules, RulesError};
use crate::intentions::DefaultPolicy;

#[derive(Debug, Clone)]
struct IndexedPolicy {
    policy: AclPolicy,
    rules: Rules,
}

/// The policies and roles of a snapshot, indexed by ID and by name, policies' rules parsed.
#[derive(Debug, Clone, Default)]
pub struct AclIndex {
    policies: HashMap<String, IndexedPolicy>,
    policy_ids: HashMap<String, String>,
    roles: HashMap<String, AclRole>,
    role_ids: HashMap<String, String>,
}

impl AclIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, by ID) a policy, parsing its rules once. A policy whose rules do not
    /// parse is refused: it could not have passed [`validate_policy`](super::validate_policy).
    pub fn insert_policy(&mut self, policy: AclPolicy) -> Result<(), RulesError> {
        let rules = Rules::parse(&policy.rules)?;
        if let Some(old) = self.policies.get(&policy.id) {
            self.policy_ids.remove(&old.policy.name);
        }
        self.policy_ids
            .insert(policy.name.clone(), policy.id.clone());
        self.policies
            .insert(policy.id.clone(), IndexedPolicy { policy, rules });
        Ok(())
    }

    /// Adds (or replaces, by ID) a role.
    pub fn insert_role(&mut self, role: AclRole) {
        if let Some(old) = self.roles.get(&role.id) {
            self.role_ids.remove(&old.name);
        }
        self.role_ids.insert(role.name.clone(), role.id.clone());
        self.roles.insert(role.id.clone(), role);
    }

    fn indexed_policy(&self, link: &AclLink) -> Option<&IndexedPolicy> {
        if link.id.is_empty() {
            self.policies.get(self.policy_ids.get(&link.name)?)
        } else {
            self.policies.get(&link.id)
        }
    }

    /// The policy a link points to: by `ID`, or by `Name` when the link has no ID.
    pub fn policy(&self, link: &AclLink) -> Option<&AclPolicy> {
        self.indexed_policy(link).map(|p| &p.policy)
    }

    /// The role a link points to: by `ID`, or by `Name` when the link has no ID.
    pub fn role(&self, link: &AclLink) -> Option<&AclRole> {
        if link.id.is_empty() {
            self.roles.get(self.role_ids.get(&link.name)?)
        } else {
            self.roles.get(&link.id)
        }
    }

    fn add_policies(&self, links: &[AclLink], datacenter: &str, into: &mut Rules) {
        for p in links.iter().filter_map(|l| self.indexed_policy(l)) {
            if p.policy.applies_in(datacenter) {
                into.merge(&p.rules);
            }
        }
    }

    /// The merged rules `token` has in `datacenter`.
    pub fn effective_rules(&self, token: &AclToken, datacenter: &str) -> Rules {
        let mut rules = Rules::default();
        self.add_policies(&token.policies, datacenter, &mut rules);
        let roles = token.roles.iter().filter_map(|l| self.role(l));
        let role_services = roles.clone().flat_map(|r| &r.service_identities);
        let role_nodes = roles.clone().flat_map(|r| &r.node_identities);
        for role in roles {
            self.add_policies(&role.policies, datacenter, &mut rules);
        }
        for s in token.service_identities.iter().chain(role_services) {
            if s.applies_in(datacenter) {
                rules.merge(&s.rules());
            }
        }
        for n in token.node_identities.iter().chain(role_nodes) {
            if n.applies_in(datacenter) {
                rules.merge(&n.rules());
            }
        }
        rules
    }

    /// The compiled [`Authorizer`] for `token` in `datacenter`, with the ACL `default` policy.
    ///
    /// Expiry is not checked here (this crate has no clock): resolving a secret to a live token
    /// is the caller's job.
    pub fn authorizer(
        &self,
        token: &AclToken,
        datacenter: &str,
        default: DefaultPolicy,
    ) -> Authorizer {
        Authorizer::new(
            token.accessor_id.as_str(),
            &self.effective_rules(token, datacenter),
            default,
        )
    }
}

/// A token as a server resolved it for an agent (`Catalog.ResolveToken`): everything the agent
/// needs to compile the same [`Authorizer`] the server would, without the secret and without
/// the rest of the ACL tables.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolvedToken {
    /// Whether ACLs are enabled on the server; when not, nothing is enforced.
    pub enabled: bool,
    /// The token, its `SecretID` blanked.
    pub token: AclToken,
    /// The policies the token links, directly or through its roles.
    pub policies: Vec<AclPolicy>,
    /// The roles the token links.
    pub roles: Vec<AclRole>,
    /// What the token's rules leave undecided (the server's `acl.default_policy`).
    pub default_policy: DefaultPolicy,
    /// The ACL tables' index the answer was read at.
    pub acl_index: u64,
}

impl ResolvedToken {
    /// The [`Authorizer`] of this token in `datacenter`. A policy whose rules no longer parse
    /// grants nothing (as on the server).
    pub fn authorizer(&self, datacenter: &str) -> Authorizer {
        let mut index = AclIndex::new();
        for p in &self.policies {
            // Ignored on purpose: an unparsable stored policy grants nothing.
            let _ = index.insert_policy(p.clone());
        }
        for r in &self.roles {
            index.insert_role(r.clone());
        }
        index.authorizer(&self.token, datacenter, self.default_policy)
    }
}
