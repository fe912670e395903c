//! From a request's secret to the token it names and that token's [`Authorizer`]: the one
//! place a server resolves ACL tokens (the HTTP routes call [`Server::acl_resolve`]).
//!
//! * No secret (or an empty one) is the anonymous token: the stored one once the bootstrap has
//!   seeded it, else the built-in one (no policies, so the default policy decides).
//! * An unknown or expired secret is Consul's 403 `ACL not found`.
//! * Secrets are matched without a timing side channel. An ordered or hashed map keyed by the
//!   secret itself compares the presented secret with stored ones byte by byte and stops at the
//!   first difference, so response times say how much of a guess was right. Here the secrets
//!   are indexed by a keyed hash (SipHash under a random key chosen at startup, which the
//!   caller does not know, so the bucket a guess lands in says nothing about any secret), and
//!   the candidate found is then compared in constant time (`subtle`). The SecretID index in
//!   the state (`fsm::AclState::secrets`) only keeps secrets unique on write.
//! * What a lookup needs (policies with parsed rules, roles, the keyed secret index) is built
//!   once per ACL table index and shared until an ACL write changes it.
//!
//! Secrets are never logged; `AclToken`'s `Debug` redacts them.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Server;
use crate::acl::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID, AclIndex, AclLink, AclToken,
    Authorizer, PermissionDenied, ResolvedToken, global_management_policy,
};
use crate::fsm::{State, anonymous_token};
use crate::http::ApiError;
use crate::model::Index;

/// Why a request's token gives it nothing.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// ACLs are off on this server (Consul answers its ACL routes so, with 401).
    #[error("ACL support disabled")]
    Disabled,
    /// The secret names no token, or an expired one.
    #[error("ACL not found")]
    NotFound,
    /// The token lacks the permission; Consul's text.
    #[error(transparent)]
    Denied(#[from] PermissionDenied),
}

impl From<AclError> for ApiError {
    fn from(e: AclError) -> Self {
        match e {
            AclError::Disabled => ApiError::unauthorized(e.to_string()),
            AclError::NotFound | AclError::Denied(_) => ApiError::forbidden(e.to_string()),
        }
    }
}

/// A request's token and what it may do.
pub struct Caller {
    pub token: Arc<AclToken>,
    pub authorizer: Arc<Authorizer>,
}

/// One token of a snapshot: its expiry parsed once and its authorizer compiled on first use
/// (so a request with a known token costs a hash lookup, a constant-time compare and a clock
/// read, not a rules merge).
struct Entry {
    token: Arc<AclToken>,
    /// `None`: never expires. An `ExpirationTime` that does not parse counts as already past
    /// (fail closed).
    expires: Option<OffsetDateTime>,
    authorizer: OnceLock<Arc<Authorizer>>,
}

impl Entry {
    fn new(token: AclToken) -> Arc<Self> {
        let expires = token
            .expiration_time
            .as_deref()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH));
        Arc::new(Self {
            token: Arc::new(token),
            expires,
            authorizer: OnceLock::new(),
        })
    }

    fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// The lookup structures of one ACL table index.
struct Snapshot {
    index: Index,
    acl: AclIndex,
    /// Keyed hash of the SecretID → the tokens with that hash (almost always one).
    by_secret: HashMap<u64, Vec<Arc<Entry>>>,
    anonymous: Arc<Entry>,
}

/// Per-server cache of the last `Snapshot` and the key of its secret index.
pub struct AclResolver {
    key: RandomState,
    cache: Mutex<Option<Arc<Snapshot>>>,
}

impl Default for AclResolver {
    fn default() -> Self {
        Self {
            key: RandomState::new(),
            cache: Mutex::new(None),
        }
    }
}

impl AclResolver {
    fn snapshot(&self, state: &State) -> Arc<Snapshot> {
        let mut cache = self.cache.lock();
        if let Some(s) = cache.as_ref().filter(|s| s.index == state.tables.acl) {
            return s.clone();
        }
        let mut acl = AclIndex::new();
        for p in state.acl.policies.values() {
            // A stored policy passed `validate_policy`; one that no longer parses (a rule
            // language change) grants nothing rather than failing every request.
            if let Err(e) = acl.insert_policy(p.clone()) {
                tracing::warn!(policy = %p.name, error = %e, "stored ACL policy does not parse");
            }
        }
        for r in state.acl.roles.values() {
            acl.insert_role(r.clone());
        }
        let mut by_secret: HashMap<u64, Vec<Arc<Entry>>> = HashMap::new();
        for t in state.acl.tokens.values() {
            by_secret
                .entry(self.key.hash_one(t.secret_id.as_bytes()))
                .or_default()
                .push(Entry::new(t.clone()));
        }
        let anonymous = Entry::new(
            state
                .acl
                .tokens
                .get(ANONYMOUS_TOKEN_ACCESSOR_ID)
                .cloned()
                .unwrap_or_else(anonymous_token),
        );
        let snapshot = Arc::new(Snapshot {
            index: state.tables.acl,
            acl,
            by_secret,
            anonymous,
        });
        *cache = Some(snapshot.clone());
        snapshot
    }

    fn find(&self, snapshot: &Snapshot, secret: &str) -> Option<Arc<Entry>> {
        let candidates = snapshot
            .by_secret
            .get(&self.key.hash_one(secret.as_bytes()))?;
        // Every candidate is compared in full: no early exit on a partial match.
        let mut found = None;
        for t in candidates {
            if bool::from(t.token.secret_id.as_bytes().ct_eq(secret.as_bytes())) {
                found = Some(t.clone());
            }
        }
        found
    }
}

impl Server {
    /// The live token `secret` names (the anonymous token for `None`) in `snapshot`.
    fn acl_token(&self, snapshot: &Snapshot, secret: Option<&str>) -> Result<Arc<Entry>, AclError> {
        let entry = match secret.filter(|s| !s.is_empty()) {
            None => snapshot.anonymous.clone(),
            Some(secret) => match self.acl_resolver.find(snapshot, secret) {
                Some(t) => t,
                None if secret == ANONYMOUS_TOKEN_SECRET_ID => snapshot.anonymous.clone(),
                None => return Err(AclError::NotFound),
            },
        };
        if entry.expired(OffsetDateTime::now_utc()) {
            return Err(AclError::NotFound);
        }
        Ok(entry)
    }

    /// The token `secret` names (the anonymous token for `None`) and its authorizer in this
    /// server's datacenter, compiled once per token and ACL index. Does not check whether ACLs
    /// are enabled.
    pub fn acl_resolve(&self, secret: Option<&str>) -> Result<Caller, AclError> {
        let snapshot = self.state.read(|s| self.acl_resolver.snapshot(s));
        let entry = self.acl_token(&snapshot, secret)?;
        let authorizer = entry
            .authorizer
            .get_or_init(|| {
                Arc::new(snapshot.acl.authorizer(
                    &entry.token,
                    &self.config.datacenter,
                    self.config.acl.default_policy,
                ))
            })
            .clone();
        Ok(Caller {
            token: entry.token.clone(),
            authorizer,
        })
    }

    /// What an agent needs to authorize as this server would (`Catalog.ResolveToken`): the
    /// token `secret` names, its SecretID blanked, with the policies it links directly and
    /// through its roles, and the roles. With ACLs off: the anonymous token, `enabled: false`.
    pub fn acl_resolve_for_agent(&self, secret: Option<&str>) -> Result<ResolvedToken, AclError> {
        let snapshot = self.state.read(|s| self.acl_resolver.snapshot(s));
        let enabled = self.config.acl.enabled;
        let mut token = if enabled {
            AclToken::clone(&self.acl_token(&snapshot, secret)?.token)
        } else {
            AclToken::clone(&snapshot.anonymous.token)
        };
        token.secret_id.clear();
        let roles = linked(&token.roles, |l| snapshot.acl.role(l), |r| &r.id);
        let policy_links = token
            .policies
            .iter()
            .chain(roles.iter().flat_map(|r| &r.policies));
        let policies = linked(policy_links, |l| snapshot.acl.policy(l), |p| &p.id);
        Ok(ResolvedToken {
            enabled,
            token,
            policies,
            roles,
            default_policy: self.config.acl.default_policy,
            acl_index: snapshot.index,
        })
    }

    /// [`ResolvedToken`] of the servers' internal secret: management rights (the built-in
    /// `global-management` policy), under no real token's AccessorID.
    pub fn acl_resolved_internal(&self) -> ResolvedToken {
        let policy = global_management_policy();
        let token = AclToken {
            accessor_id: INTERNAL_ACCESSOR_ID.to_string(),
            description: "the servers' internal secret".to_string(),
            policies: vec![AclLink {
                id: policy.id.clone(),
                name: policy.name.clone(),
            }],
            ..AclToken::default()
        };
        ResolvedToken {
            enabled: self.config.acl.enabled,
            token,
            policies: vec![policy],
            roles: Vec::new(),
            default_policy: self.config.acl.default_policy,
            acl_index: self.state.read(|s| s.tables.acl),
        }
    }
}

/// The AccessorID a resolved internal secret carries (no stored token has it: stored
/// AccessorIDs are UUIDs).
pub const INTERNAL_ACCESSOR_ID: &str = "server-internal";

/// The objects `links` point to, each once (by `id`), in link order; dangling links skipped.
fn linked<'a, L, T, F, K>(links: L, get: F, id: K) -> Vec<T>
where
    L: IntoIterator<Item = &'a AclLink>,
    T: Clone + 'a,
    F: Fn(&AclLink) -> Option<&'a T>,
    K: Fn(&T) -> &String,
{
    let mut out: Vec<T> = Vec::new();
    for found in links.into_iter().filter_map(get) {
        if !out.iter().any(|o| id(o) == id(found)) {
            out.push(found.clone());
        }
    }
    out
}

/// An ACL refusal as a gRPC status: `PermissionDenied` with Consul's text.
pub(crate) fn acl_status(e: AclError) -> tonic::Status {
    tonic::Status::permission_denied(e.to_string())
}

/// The token a call presents in `x-consul-token`; one that is not text names no token.
pub(crate) fn presented_token<T>(req: &tonic::Request<T>) -> Result<Option<&str>, tonic::Status> {
    req.metadata()
        .get(crate::http::token::GRPC_TOKEN_METADATA)
        .map(|v| v.to_str().map_err(|_| acl_status(AclError::NotFound)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_checked_and_fails_closed() {
        let now = OffsetDateTime::parse("2024-01-01T00:00:00Z", &Rfc3339).unwrap();
        let with = |t: Option<&str>| {
            Entry::new(AclToken {
                expiration_time: t.map(str::to_string),
                ..AclToken::default()
            })
        };
        assert!(!with(None).expired(now));
        assert!(!with(Some("2024-01-01T00:00:01Z")).expired(now));
        assert!(with(Some("2024-01-01T00:00:00Z")).expired(now));
        assert!(with(Some("yesterday")).expired(now));
    }

    #[test]
    fn secrets_are_found_only_whole() {
        let resolver = AclResolver::default();
        let mut state = State::default();
        let token = AclToken {
            accessor_id: "a".into(),
            secret_id: "0123456789".into(),
            ..AclToken::default()
        };
        state.acl.tokens.insert("a".into(), token);
        state.tables.acl = 1;
        let snapshot = resolver.snapshot(&state);
        assert!(resolver.find(&snapshot, "0123456789").is_some());
        assert!(resolver.find(&snapshot, "012345678").is_none());
        assert!(resolver.find(&snapshot, "0123456780").is_none());
        // Cached per ACL index.
        assert!(Arc::ptr_eq(&snapshot, &resolver.snapshot(&state)));
    }
}
