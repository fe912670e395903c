//! The agent's side of ACLs: who an HTTP caller is and what it may do, decided here for the
//! agent's own routes (`/v1/agent/*`, the cached health read) as a server would decide it.
//!
//! A caller's token (Consul's order, `crate::http::token::request_token`; the agent's
//! `default` token when it carries none) is resolved by the servers (`Catalog.ResolveToken`,
//! the token in gRPC metadata) into a [`ResolvedToken`], compiled once into an [`Authorizer`]
//! and cached per token ([`TokenCache`]), so a route costs one lookup, not an RPC:
//!
//! * The cache follows the ACL tables: a dedicated watch of `TOPIC_ACL` ([`watch`]) drops
//!   every cached answer when the tables' index moves (a token, policy or role written or
//!   deleted), so a deleted token stops working at once. While that watch is down, an answer
//!   is trusted for [`UNWATCHED_FRESHNESS`] only, so a revocation still takes effect within a
//!   second. An answer is never kept past the token's expiry nor [`MAX_AGE`].
//! * Fail closed: a token the servers do not know is 403 `ACL not found`; a server that
//!   cannot resolve tokens (an error, an older server answering `Unimplemented`) is a 500 and
//!   nothing is served. Only when no server is reachable at all are the last answers reused
//!   (Consul's default `down_policy = "extend-cache"`), so the agent keeps serving what it
//!   served (fail static), and a token it never saw is refused unless the servers last said
//!   ACLs are off.
//! * Secrets are never logged. The cache indexes them by a keyed hash (SipHash under a random
//!   key) and compares the candidates in constant time (`subtle`), as the server does.
//!
//! When the servers run with ACLs off (`ResolvedToken.enabled == false`), nothing is enforced
//! and lists are not filtered.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use super::Agent;
use super::conn::{Credential, UnusableToken};
use crate::acl::{Authorizer, PermissionDenied, ResolvedToken};
use crate::http::ApiError;
use crate::proto::{ResolveTokenRequest, Topic, TopicKind, WatchSet};

/// How long an answer is trusted while the ACL watch is not running.
pub const UNWATCHED_FRESHNESS: Duration = Duration::from_secs(1);

/// The longest an answer is kept even while the watch runs (Consul's `acl.token_ttl`).
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Bound on the cached answers (unknown tokens are cached too): past it, the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// What a token amounts to on this agent.
#[derive(Clone)]
pub enum Resolution {
    /// ACLs are off on the servers: nothing is enforced.
    Disabled,
    /// A live token and what it may do.
    Token(Arc<Authorizer>),
    /// No such token (or an expired one): Consul's `ACL not found`.
    NotFound,
}

/// Why a caller could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AclCheckError {
    #[error("ACL not found")]
    NotFound,
    #[error("cannot check the request's ACL token: no server reachable ({0})")]
    Unavailable(String),
    #[error("cannot check the request's ACL token: the server answered {code:?}: {message}")]
    Server { code: tonic::Code, message: String },
    #[error("cannot check the request's ACL token: malformed answer from the server: {0}")]
    BadReply(String),
}

impl From<AclCheckError> for ApiError {
    fn from(e: AclCheckError) -> Self {
        match e {
            AclCheckError::NotFound => ApiError::forbidden(e.to_string()),
            other => ApiError {
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
            },
        }
    }
}

struct Entry {
    secret: String,
    generation: u64,
    stored: Instant,
    /// Not used past this (the token's expiry, or [`MAX_AGE`]).
    until: Instant,
    resolution: Resolution,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Vec<Entry>>,
    len: usize,
    /// Bumped whenever cached answers may be out of date (the ACL index moved, the watch
    /// stopped): an entry of an older generation is never fresh.
    generation: u64,
    /// Whether the ACL watch is running, and the index it last reported.
    live: bool,
    acl_index: Option<u64>,
    /// What the servers last said about ACLs being enabled.
    known_disabled: bool,
}

/// The per-token cache of resolutions. Time is passed in (pure; the tests drive it).
pub struct TokenCache {
    key: RandomState,
    inner: Mutex<Inner>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            key: RandomState::new(),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl TokenCache {
    fn find<'a>(&self, inner: &'a Inner, secret: &str) -> Option<&'a Entry> {
        inner
            .entries
            .get(&self.key.hash_one(secret.as_bytes()))?
            .iter()
            .find(|e| bool::from(e.secret.as_bytes().ct_eq(secret.as_bytes())))
    }

    /// The cached answer for `secret` when it may still be trusted at `now`.
    pub fn lookup(&self, secret: &str, now: Instant) -> Option<Resolution> {
        let inner = self.inner.lock();
        let e = self.find(&inner, secret)?;
        let fresh = e.generation == inner.generation
            && now < e.until
            && (inner.live || now.duration_since(e.stored) < UNWATCHED_FRESHNESS);
        fresh.then(|| e.resolution.clone())
    }

    /// The last answer for `secret`, however old (only while no server is reachable), unless
    /// the token has expired since.
    pub fn lookup_stale(&self, secret: &str, now: Instant) -> Option<Resolution> {
        let inner = self.inner.lock();
        let e = self.find(&inner, secret)?;
        let expired = matches!(e.resolution, Resolution::Token(_)) && now >= e.until;
        (!expired).then(|| e.resolution.clone())
    }

    /// The generation to pass to [`TokenCache::store`]: read it before asking the servers.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Whether the servers last said ACLs are off.
    pub fn known_disabled(&self) -> bool {
        self.inner.lock().known_disabled
    }

    /// Caches `resolution` for `secret`, asked for at `generation`; an answer the ACL tables
    /// may have changed under since is dropped (it serves the request that asked, no other).
    pub fn store(
        &self,
        secret: &str,
        generation: u64,
        resolution: Resolution,
        expires: Option<Instant>,
        now: Instant,
    ) {
        let mut inner = self.inner.lock();
        match resolution {
            Resolution::Disabled => inner.known_disabled = true,
            Resolution::Token(_) => inner.known_disabled = false,
            Resolution::NotFound => {}
        }
        if generation != inner.generation {
            return;
        }
        if inner.len >= MAX_ENTRIES {
            inner.entries.clear();
            inner.len = 0;
        }
        let until = (now + MAX_AGE).min(expires.unwrap_or(now + MAX_AGE));
        let bucket = inner
            .entries
            .entry(self.key.hash_one(secret.as_bytes()))
            .or_default();
        let before = bucket.len();
        bucket.retain(|e| !bool::from(e.secret.as_bytes().ct_eq(secret.as_bytes())));
        let removed = before - bucket.len();
        bucket.push(Entry {
            secret: secret.to_string(),
            generation,
            stored: now,
            until,
            resolution,
        });
        inner.len = inner.len + 1 - removed;
    }

    /// The ACL watch reported the tables' index: a move invalidates every answer.
    pub fn acl_index(&self, index: u64) {
        let mut inner = self.inner.lock();
        inner.live = true;
        if inner.acl_index != Some(index) {
            inner.acl_index = Some(index);
            inner.generation += 1;
        }
    }

    /// The ACL watch (re)started or stopped. Stopping invalidates every answer (changes may
    /// be missed from now on); starting lets answers be trusted beyond a second again.
    pub fn set_live(&self, live: bool) {
        let mut inner = self.inner.lock();
        if inner.live && !live {
            inner.generation += 1;
        }
        inner.live = live;
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An HTTP caller of the agent: its token (to act for it towards the servers) and what it may
/// do (`None` when ACLs are off).
pub struct Caller {
    token: Option<String>,
    authorizer: Option<Arc<Authorizer>>,
}

impl Caller {
    /// The credential of RPCs made for this caller.
    pub fn credential(&self) -> Credential {
        // The token already went through `Credential::token` when it was resolved.
        Credential::token(self.token.as_deref()).unwrap_or_default()
    }

    /// The caller's token, for keys partitioned by token.
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }

    /// The token's AccessorID (for logs); `None` with ACLs off.
    pub fn accessor_id(&self) -> Option<&str> {
        self.authorizer.as_deref().map(Authorizer::accessor_id)
    }

    /// Whether ACLs are enforced for this caller.
    pub fn enforced(&self) -> bool {
        self.authorizer.is_some()
    }

    /// `Ok` when allowed (always, with ACLs off), else 403 with Consul's text.
    pub fn require(
        &self,
        decide: impl FnOnce(&Authorizer) -> Result<(), PermissionDenied>,
    ) -> Result<(), ApiError> {
        match &self.authorizer {
            None => Ok(()),
            Some(a) => decide(a).map_err(|e| ApiError::forbidden(e.to_string())),
        }
    }

    /// Whether allowed (always, with ACLs off): for filtering lists.
    pub fn allows(&self, decide: impl FnOnce(&Authorizer) -> bool) -> bool {
        self.authorizer.as_deref().is_none_or(decide)
    }
}

/// Keeps only the items the caller may read; whether any was dropped.
pub fn filter<T>(items: &mut Vec<T>, mut readable: impl FnMut(&T) -> bool) -> bool {
    let before = items.len();
    items.retain(|i| readable(i));
    items.len() != before
}

/// When a resolution may be kept until: the token's expiry, if it has one.
fn expiry(resolved: &ResolvedToken, now: Instant) -> Option<Instant> {
    let at = resolved.token.expiration_time.as_deref()?;
    // An expiry that does not parse: use the answer for this request only.
    let Ok(at) = OffsetDateTime::parse(at, &Rfc3339) else {
        return Some(now);
    };
    let left = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    Some(now + Duration::from_secs_f64(left.as_seconds_f64()))
}

/// Handlers take the caller as an argument, so none can forget to resolve it: the token from
/// the request (`?token=`, `X-Consul-Token`, Bearer) or the agent's default token.
impl axum::extract::FromRequestParts<Arc<Agent>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        agent: &Arc<Agent>,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(query) =
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
                .map_err(|e| ApiError::bad_request(e.body_text()))?;
        agent.caller(&parts.headers, &query).await
    }
}

impl Agent {
    /// The caller of an HTTP request: its token resolved (through the cache) and checked.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
    ) -> Result<Caller, ApiError> {
        let token = crate::http::token::request_token(headers, params)
            .map(str::to_string)
            .or_else(|| self.conn.identity().default_token());
        let authorizer = match self.resolve(token.as_deref()).await? {
            Resolution::Disabled => None,
            Resolution::Token(a) => Some(a),
            Resolution::NotFound => return Err(AclCheckError::NotFound.into()),
        };
        Ok(Caller { token, authorizer })
    }

    /// What `token` (`None`: anonymous) amounts to, from the cache or the servers.
    pub async fn resolve(&self, token: Option<&str>) -> Result<Resolution, AclCheckError> {
        let secret = token.unwrap_or("");
        let now = Instant::now();
        if let Some(r) = self.acl.lookup(secret, now) {
            return Ok(r);
        }
        // Known to be cut off from the servers: do not wait for an RPC to fail first.
        if !*self.connected.borrow()
            && let Some(r) = self.resolve_offline(secret, now)
        {
            return Ok(r);
        }
        let generation = self.acl.generation();
        let credential = match Credential::token(token) {
            Ok(c) => c,
            // Not a value any token can have.
            Err(UnusableToken) if self.acl.known_disabled() => return Ok(Resolution::Disabled),
            Err(UnusableToken) => return Ok(Resolution::NotFound),
        };
        let reply = self
            .conn
            .call_as(credential, |mut c| async move {
                c.resolve_token(ResolveTokenRequest {}).await
            })
            .await;
        let (resolution, expires) = match reply {
            Ok(r) => {
                let resolved: ResolvedToken = serde_json::from_slice(&r.into_inner().json)
                    .map_err(|e| AclCheckError::BadReply(e.to_string()))?;
                if resolved.enabled {
                    let expires = expiry(&resolved, now);
                    let authorizer = resolved.authorizer(&self.config.datacenter);
                    (Resolution::Token(Arc::new(authorizer)), expires)
                } else {
                    (Resolution::Disabled, None)
                }
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => (Resolution::NotFound, None),
            Err(s) if is_unreachable(s.code()) => {
                return self
                    .resolve_offline(secret, now)
                    .ok_or_else(|| AclCheckError::Unavailable(s.message().to_string()));
            }
            Err(s) => {
                return Err(AclCheckError::Server {
                    code: s.code(),
                    message: s.message().to_string(),
                });
            }
        };
        self.acl
            .store(secret, generation, resolution.clone(), expires, now);
        Ok(resolution)
    }

    /// While no server answers, the last answer for `secret` (extend-cache), or, for a token
    /// never seen, nothing unless the servers last said ACLs are off.
    fn resolve_offline(&self, secret: &str, now: Instant) -> Option<Resolution> {
        self.acl
            .lookup_stale(secret, now)
            .or_else(|| self.acl.known_disabled().then_some(Resolution::Disabled))
    }
}

fn is_unreachable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// Follows the ACL tables' index (`TOPIC_ACL`) as the agent itself, so cached answers are
/// dropped as soon as they may be wrong; restarts when the agent's identity changes.
pub async fn watch(agent: Arc<Agent>) {
    let mut shutdown = std::pin::pin!(agent.shutdown_signal());
    let mut backoff = Duration::from_millis(100);
    let set = WatchSet {
        topics: vec![Topic {
            kind: TopicKind::TopicAcl as i32,
            name: String::new(),
            passing_only: false,
            min_index: 0,
        }],
    };
    loop {
        let stream = agent
            .conn
            .call(|mut c| {
                let set = set.clone();
                async move { c.watch(set).await }
            })
            .await;
        match stream {
            Ok(s) => {
                let mut s = s.into_inner();
                agent.acl.set_live(true);
                backoff = Duration::from_millis(100);
                loop {
                    tokio::select! {
                        msg = s.message() => match msg {
                            Ok(Some(ev)) => agent.acl.acl_index(ev.index),
                            Ok(None) | Err(_) => break,
                        },
                        _ = agent.identity_changed.notified() => break,
                        _ = &mut shutdown => return,
                    }
                }
                agent.acl.set_live(false);
            }
            Err(e) => {
                tracing::debug!(code = ?e.code(), error = %e.message(), "ACL watch refused; cached ACL answers are trusted for 1s");
                agent.acl.set_live(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut shutdown => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intentions::DefaultPolicy;

    fn token(name: &str) -> Resolution {
        Resolution::Token(Arc::new(Authorizer::new(
            name,
            &Default::default(),
            DefaultPolicy::Deny,
        )))
    }

    fn accessor(r: Option<Resolution>) -> Option<String> {
        match r? {
            Resolution::Token(a) => Some(a.accessor_id().to_string()),
            Resolution::Disabled => Some("disabled".into()),
            Resolution::NotFound => Some("not found".into()),
        }
    }

    fn live_cache() -> TokenCache {
        let c = TokenCache::default();
        c.acl_index(5);
        c
    }

    #[test]
    fn an_acl_index_move_drops_every_answer() {
        let c = live_cache();
        let t0 = Instant::now();
        c.store("s1", c.generation(), token("a1"), None, t0);
        c.store("s2", c.generation(), Resolution::NotFound, None, t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(accessor(c.lookup("s1", later)).as_deref(), Some("a1"));
        assert_eq!(
            accessor(c.lookup("s2", later)).as_deref(),
            Some("not found")
        );
        assert!(c.lookup("s3", later).is_none(), "never resolved");
        c.acl_index(5);
        assert!(c.lookup("s1", later).is_some(), "same index: still valid");
        c.acl_index(6);
        assert!(
            c.lookup("s1", later).is_none(),
            "a token was written or deleted"
        );
        assert!(c.lookup("s2", later).is_none());
        // The old answer stays available only for when no server answers.
        assert_eq!(accessor(c.lookup_stale("s1", later)).as_deref(), Some("a1"));
    }

    #[test]
    fn an_answer_asked_before_an_acl_change_is_not_kept() {
        let c = live_cache();
        let t0 = Instant::now();
        let asked_at = c.generation();
        c.acl_index(6);
        c.store("s1", asked_at, token("a1"), None, t0);
        assert!(c.lookup("s1", t0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn without_the_watch_answers_are_trusted_for_a_second() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        c.store("s1", c.generation(), token("a1"), None, t0);
        assert!(c.lookup("s1", t0 + Duration::from_millis(900)).is_some());
        assert!(c.lookup("s1", t0 + UNWATCHED_FRESHNESS).is_none());
        // A watch that stops invalidates what was cached while it ran.
        let c = live_cache();
        c.store("s1", c.generation(), token("a1"), None, t0);
        c.set_live(false);
        assert!(c.lookup("s1", t0).is_none());
    }

    #[test]
    fn answers_end_at_the_token_expiry_and_max_age() {
        let c = live_cache();
        let t0 = Instant::now();
        let expires = t0 + Duration::from_secs(3);
        c.store("s1", c.generation(), token("a1"), Some(expires), t0);
        c.store("s2", c.generation(), token("a2"), None, t0);
        assert!(c.lookup("s1", t0 + Duration::from_secs(2)).is_some());
        assert!(c.lookup("s1", expires).is_none());
        assert!(c.lookup_stale("s1", expires).is_none(), "expired for good");
        assert!(c.lookup("s2", t0 + MAX_AGE).is_none());
    }

    #[test]
    fn secrets_are_told_apart_and_replaced() {
        let c = live_cache();
        let t0 = Instant::now();
        c.store("secret-1", c.generation(), token("a1"), None, t0);
        c.store("secret-2", c.generation(), token("a2"), None, t0);
        c.store("secret-1", c.generation(), token("a3"), None, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(accessor(c.lookup("secret-1", t0)).as_deref(), Some("a3"));
        assert_eq!(accessor(c.lookup("secret-2", t0)).as_deref(), Some("a2"));
        assert!(c.lookup("secret-", t0).is_none());
    }

    #[test]
    fn the_cache_is_bounded_and_remembers_acls_off() {
        let c = live_cache();
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.store(
                &format!("s{i}"),
                c.generation(),
                Resolution::NotFound,
                None,
                t0,
            );
        }
        assert!(c.len() <= MAX_ENTRIES);
        assert!(!c.known_disabled());
        c.store("x", c.generation(), Resolution::Disabled, None, t0);
        assert!(c.known_disabled());
        c.store("y", c.generation(), token("a"), None, t0);
        assert!(!c.known_disabled());
    }
}
