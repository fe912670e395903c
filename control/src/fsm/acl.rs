//! Applying ACL commands to `State::acl`: tokens by AccessorID (with a SecretID index),
//! policies and roles by ID with unique names, and the one-time bootstrap.
//!
//! Consul's rules (ACL token, policy and role HTTP API docs), checked here so every server
//! refuses the same writes:
//!
//! * names are unique; a link to a policy or role names an existing one by `ID` or `Name`, and
//!   is stored by ID only. The `Name` a reader sees is resolved at read time
//!   ([`AclState::token_view`], [`AclState::role_view`]), so a rename shows everywhere and a
//!   deleted policy or role simply drops out of the links that pointed to it;
//! * the built-in `global-management` policy keeps its name, rules and (empty) datacenters and
//!   cannot be deleted; the anonymous token cannot be deleted;
//! * a token's SecretID and ExpirationTime never change after creation.
//!
//! Seeding: the built-in policy and the anonymous token are created by the bootstrap command,
//! not at state init. A state that never used ACLs stays empty (`State::acl` is left out of
//! snapshots and of the digest while empty, so existing clusters keep theirs), and the
//! request-side resolver stands in the built-in anonymous token while none is stored. The
//! built-in policy's name and ID are reserved from the start.

use super::acl_state::checked;
use super::command::{ApplyError, Conflict, Invalid, NotFound};
use super::state::State;
use crate::acl::{
    self, ANONYMOUS_TOKEN_ACCESSOR_ID, AclPolicy, AclRole, AclToken, GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES,
};
use crate::model::Index;

impl State {
    pub(super) fn acl_bootstrap(
        &mut self,
        index: Index,
        mut token: AclToken,
        now: String,
    ) -> Result<(), ApplyError> {
        if self.acl.is_bootstrapped() {
            return Err(Conflict::AclBootstrapped {
                reset_index: self.acl.bootstrap_index,
            }
            .into());
        }
        // Seeding and the token go in together or not at all.
        let mut acl = self.acl.clone();
        acl.seed(index, &now);
        token.create_time = now;
        acl.put_token(index, token)?;
        acl.bootstrap_index = index;
        self.acl = acl;
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_token_set(
        &mut self,
        index: Index,
        token: AclToken,
    ) -> Result<(), ApplyError> {
        self.acl.put_token(index, token)?;
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_token_delete(
        &mut self,
        index: Index,
        accessor_id: &str,
    ) -> Result<(), ApplyError> {
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID {
            return Err(Invalid::AnonymousTokenDelete.into());
        }
        let token = self
            .acl
            .tokens
            .remove(accessor_id)
            .ok_or_else(|| NotFound::AclToken {
                accessor_id: accessor_id.to_string(),
            })?;
        self.acl.secrets.remove(&token.secret_id);
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_policy_set(
        &mut self,
        index: Index,
        mut policy: AclPolicy,
    ) -> Result<(), ApplyError> {
        checked(acl::validate_policy(&policy), &[("ID", &policy.id)])?;
        let name_taken = self
            .acl
            .policy_by_name(&policy.name)
            .is_some_and(|p| p.id != policy.id);
        let reserved = policy.name == GLOBAL_MANAGEMENT_POLICY_NAME
            && policy.id != GLOBAL_MANAGEMENT_POLICY_ID;
        if name_taken || reserved {
            return Err(Invalid::AclPolicyNameTaken { name: policy.name }.into());
        }
        let existing = self.acl.policies.get(&policy.id);
        if policy.id == GLOBAL_MANAGEMENT_POLICY_ID {
            let rules = existing.map_or(GLOBAL_MANAGEMENT_RULES, |p| p.rules.as_str());
            let changed = if policy.name != GLOBAL_MANAGEMENT_POLICY_NAME {
                Some("Name")
            } else if policy.rules != rules {
                Some("Rules")
            } else if !policy.datacenters.is_empty() {
                Some("Datacenters")
            } else {
                None
            };
            if let Some(field) = changed {
                return Err(Invalid::GlobalManagementChange {
                    field: field.to_string(),
                }
                .into());
            }
        }
        policy.create_index = existing.map_or(index, |p| p.create_index);
        policy.modify_index = index;
        self.acl.policies.insert(policy.id.clone(), policy);
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_policy_delete(&mut self, index: Index, id: &str) -> Result<(), ApplyError> {
        if id == GLOBAL_MANAGEMENT_POLICY_ID {
            return Err(Invalid::GlobalManagementDelete.into());
        }
        self.acl
            .policies
            .remove(id)
            .ok_or_else(|| NotFound::AclPolicy { id: id.to_string() })?;
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_role_set(
        &mut self,
        index: Index,
        mut role: AclRole,
    ) -> Result<(), ApplyError> {
        checked(acl::validate_role(&role), &[("ID", &role.id)])?;
        if self
            .acl
            .role_by_name(&role.name)
            .is_some_and(|r| r.id != role.id)
        {
            return Err(Invalid::AclRoleNameTaken { name: role.name }.into());
        }
        role.policies = self.acl.policy_links(&role.policies)?;
        role.create_index = self
            .acl
            .roles
            .get(&role.id)
            .map_or(index, |r| r.create_index);
        role.modify_index = index;
        self.acl.roles.insert(role.id.clone(), role);
        self.tables.acl = index;
        Ok(())
    }

    pub(super) fn acl_role_delete(&mut self, index: Index, id: &str) -> Result<(), ApplyError> {
        self.acl
            .roles
            .remove(id)
            .ok_or_else(|| NotFound::AclRole { id: id.to_string() })?;
        self.tables.acl = index;
        Ok(())
    }
}
