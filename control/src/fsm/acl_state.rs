//! The ACL tables of the replicated state (`State::acl`): tokens by AccessorID with a SecretID
//! index, policies and roles by ID, the bootstrap index; and how they read back (links
//! resolved to current names). Apart from `acl.rs`, which applies the ACL commands to them,
//! so that `state.rs` can hold the tables without importing the code that changes them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::command::Invalid;
use crate::acl::{
    self, ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID, AclLink, AclPolicy, AclRole,
    AclToken, GLOBAL_MANAGEMENT_POLICY_ID,
};
use crate::model::Index;

/// The ACL part of the state. `Debug` never prints a SecretID (the secret index shows only
/// its size; tokens use their own redacting `Debug`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclState {
    /// AccessorID → token.
    pub tokens: BTreeMap<String, AclToken>,
    /// SecretID → AccessorID: keeps secrets unique on write. Requests are not answered from it
    /// (an ordered lookup by secret leaks timing; see `server::acl`).
    pub secrets: BTreeMap<String, String>,
    /// ID → policy.
    pub policies: BTreeMap<String, AclPolicy>,
    /// ID → role.
    pub roles: BTreeMap<String, AclRole>,
    /// Raft index of the bootstrap; 0 until then.
    pub bootstrap_index: Index,
}

impl fmt::Debug for AclState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclState")
            .field("tokens", &self.tokens)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("policies", &self.policies)
            .field("roles", &self.roles)
            .field("bootstrap_index", &self.bootstrap_index)
            .finish()
    }
}

/// The anonymous token as Consul creates it: no policies, so the default policy decides.
pub fn anonymous_token() -> AclToken {
    AclToken {
        accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into(),
        secret_id: ANONYMOUS_TOKEN_SECRET_ID.into(),
        description: "Anonymous Token".into(),
        ..AclToken::default()
    }
}

impl AclState {
    /// True for a state that never saw an ACL write.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrap_index != 0
    }

    pub fn policy_by_name(&self, name: &str) -> Option<&AclPolicy> {
        self.policies.values().find(|p| p.name == name)
    }

    pub fn role_by_name(&self, name: &str) -> Option<&AclRole> {
        self.roles.values().find(|r| r.name == name)
    }

    /// The token as the API shows it: links carry their targets' current names; links to
    /// deleted policies or roles are left out.
    pub fn token_view(&self, token: &AclToken) -> AclToken {
        AclToken {
            policies: named(&token.policies, |id| {
                self.policies.get(id).map(|p| p.name.clone())
            }),
            roles: named(&token.roles, |id| {
                self.roles.get(id).map(|r| r.name.clone())
            }),
            ..token.clone()
        }
    }

    /// The role as the API shows it (see [`Self::token_view`]).
    pub fn role_view(&self, role: &AclRole) -> AclRole {
        AclRole {
            policies: named(&role.policies, |id| {
                self.policies.get(id).map(|p| p.name.clone())
            }),
            ..role.clone()
        }
    }

    /// Policy links as stored: by ID, each naming an existing policy, without duplicates.
    pub(super) fn policy_links(&self, links: &[AclLink]) -> Result<Vec<AclLink>, Invalid> {
        stored_links(
            links,
            |id| self.policies.contains_key(id),
            |name| self.policy_by_name(name).map(|p| p.id.clone()),
            |id| Invalid::AclUnknownPolicyId { id },
            |name| Invalid::AclUnknownPolicyName { name },
        )
    }

    /// Role links as stored (see [`Self::policy_links`]).
    pub(super) fn role_links(&self, links: &[AclLink]) -> Result<Vec<AclLink>, Invalid> {
        stored_links(
            links,
            |id| self.roles.contains_key(id),
            |name| self.role_by_name(name).map(|r| r.id.clone()),
            |id| Invalid::AclUnknownRoleId { id },
            |name| Invalid::AclUnknownRoleName { name },
        )
    }

    /// Checks `token` against Consul's rules and stores it; nothing changes on an error.
    pub(super) fn put_token(&mut self, index: Index, mut token: AclToken) -> Result<(), Invalid> {
        checked(
            acl::validate_token(&token),
            &[
                ("AccessorID", &token.accessor_id),
                ("SecretID", &token.secret_id),
            ],
        )?;
        if token.expiration_ttl.is_some() {
            return Err(Invalid::AclUnconvertedTtl);
        }
        token.policies = self.policy_links(&token.policies)?;
        token.roles = self.role_links(&token.roles)?;
        match self.tokens.get(&token.accessor_id) {
            Some(old) => {
                if old.secret_id != token.secret_id {
                    return Err(Invalid::AclSecretChange);
                }
                match (&old.expiration_time, &token.expiration_time) {
                    (old, Some(new)) if old.as_ref() != Some(new) => {
                        return Err(Invalid::AclExpirationChange);
                    }
                    (old, _) => token.expiration_time = old.clone(),
                }
                token.create_time = old.create_time.clone();
                token.create_index = old.create_index;
            }
            None => {
                // Reserved for the token the bootstrap seeds (creatable before it under the
                // `allow` default policy).
                if token.accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID {
                    return Err(Invalid::AclAccessorReserved);
                }
                if self.secrets.contains_key(&token.secret_id) {
                    return Err(Invalid::AclSecretInUse);
                }
                token.create_index = index;
            }
        }
        token.modify_index = index;
        self.secrets
            .insert(token.secret_id.clone(), token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
        Ok(())
    }

    /// Creates the built-in policy and the anonymous token where missing.
    pub(super) fn seed(&mut self, index: Index, now: &str) {
        self.policies
            .entry(GLOBAL_MANAGEMENT_POLICY_ID.into())
            .or_insert_with(|| AclPolicy {
                create_index: index,
                modify_index: index,
                ..acl::global_management_policy()
            });
        if !self.tokens.contains_key(ANONYMOUS_TOKEN_ACCESSOR_ID) {
            let anonymous = AclToken {
                create_time: now.to_string(),
                create_index: index,
                modify_index: index,
                ..anonymous_token()
            };
            self.secrets
                .insert(anonymous.secret_id.clone(), anonymous.accessor_id.clone());
            self.tokens.insert(anonymous.accessor_id.clone(), anonymous);
        }
    }
}

/// `links` with their current target names; links whose target is gone are dropped.
fn named(links: &[AclLink], name_of: impl Fn(&str) -> Option<String>) -> Vec<AclLink> {
    links
        .iter()
        .filter_map(|l| {
            name_of(&l.id).map(|name| AclLink {
                id: l.id.clone(),
                name,
            })
        })
        .collect()
}

/// Resolves each link (by `ID`, else by `Name`) to the ID it is stored under.
fn stored_links(
    links: &[AclLink],
    exists: impl Fn(&str) -> bool,
    id_of_name: impl Fn(&str) -> Option<String>,
    unknown_id: impl Fn(String) -> Invalid,
    unknown_name: impl Fn(String) -> Invalid,
) -> Result<Vec<AclLink>, Invalid> {
    let mut out: Vec<AclLink> = Vec::with_capacity(links.len());
    for link in links {
        let id = if link.id.is_empty() {
            id_of_name(&link.name).ok_or_else(|| unknown_name(link.name.clone()))?
        } else if exists(&link.id) {
            link.id.clone()
        } else {
            return Err(unknown_id(link.id.clone()));
        };
        if !out.iter().any(|l| l.id == id) {
            out.push(AclLink {
                id,
                name: String::new(),
            });
        }
    }
    Ok(out)
}

/// The object passed `validation` (the same checks the API ran before proposing it) and has
/// the server-generated IDs `ids` (field name, value) filled in.
pub(super) fn checked<V>(
    validation: Result<V, acl::AclValidationError>,
    ids: &[(&str, &str)],
) -> Result<(), Invalid> {
    validation.map_err(|e| Invalid::Acl {
        reason: e.to_string(),
    })?;
    ids.iter()
        .try_for_each(|(field, value)| require_id(field, value))
}

pub(super) fn require_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        Err(Invalid::AclMissingId {
            field: field.to_string(),
        })
    } else {
        Ok(())
    }
}
