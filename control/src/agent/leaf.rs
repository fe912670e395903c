//! Leaf certificates for local services, as Consul's agent manages them: the private key is
//! generated here (P-256) and only a CSR goes to the servers; the leaf is renewed at a random
//! point between 60% and 90% of its lifetime; when the active root changes, every leaf is
//! re-issued after a random delay within the rotation jitter window, so a rotation does not
//! make every agent sign at once. When no server answers, the current leaf keeps being served
//! and renewal is retried (fail static).
//!
//! As in Consul, leaves are kept per ACL token: the token that asked for a leaf is the one
//! its signing and every renewal present to the servers (`SignCsr` checks `service:write` on
//! the service). When that token is deleted, renewals are refused: the refusal is logged
//! (service and AccessorID, never the secret) and the current leaf keeps being served until
//! it expires, so live traffic is not cut by a revocation, only the next leaf.
//!
//! A server's refusal (its gRPC status says the request itself is wrong: an invalid name, a
//! denied token, a bad CSR; see [`refusal_status`]) is final: the first caller and every
//! waiter get it at once as a 4xx with the server's reason, the entry is dropped and nothing is
//! retried in the background. Only transient failures (no leader, no server reachable) are
//! retried, with capped exponential backoff and one log line per distinct cause.
//!
//! Entries are bounded: beyond `max_entries` the least recently used one is dropped (its
//! renewal task with it).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Agent;
use super::acl::Caller;
use super::cache::{CacheKey, Value, make_room};
use super::conn::Credential;
use crate::ca::generate_csr;
use crate::model::IssuedLeaf;
use crate::proto::SignCsrRequest;
use crate::spiffe::SpiffeId;
use crate::wire::LeafCert;

/// What a leaf entry shows its readers.
#[derive(Debug, Clone)]
enum Slot {
    /// Nothing issued yet; the last transient failure, if any.
    Pending(Option<Arc<str>>),
    Ready(Arc<LeafCert>),
    /// A server refused to sign: final, never retried.
    Refused(tonic::Code, Arc<str>),
}

impl Slot {
    fn leaf(&self) -> Option<&Arc<LeafCert>> {
        match self {
            Slot::Ready(l) => Some(l),
            _ => None,
        }
    }
}

struct Entry {
    /// Tells this entry apart from a later one under the same key.
    id: u64,
    tx: watch::Sender<Slot>,
    last_used: Mutex<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A leaf's identity: the service, and the token that asked for it (the route authorized that
/// token before the lookup, so keying by it leaks nothing about other secrets).
type LeafKey = (String, String);

/// Default bound on cached leaves (one per service and token).
pub const DEFAULT_MAX_LEAVES: usize = 1_000;

/// Leaves of the local services.
pub struct Leaves {
    entries: Mutex<HashMap<LeafKey, Arc<Entry>>>,
    next_index: Mutex<u64>,
    next_id: Mutex<u64>,
    max_entries: usize,
}

impl Leaves {
    /// Leaves bounded to `max_entries` (at least one).
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            ..Self::default()
        }
    }
}

impl Default for Leaves {
    /// Leaf indexes are this agent's own (servers keep no index for a leaf), so they start
    /// from the wall clock in milliseconds: a restarted agent must hand out indexes above the
    /// ones its previous run did. Its new leaf (with a new key: keys are never persisted) came
    /// otherwise under the very index a proxy already held from before the restart, the proxy's
    /// blocking query took it for "no change", and the proxy kept its old leaf, possibly until
    /// that leaf expired (`tests/tests/agent/t80_restart.rs` caught it).
    fn default() -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2));
        Leaves {
            entries: Mutex::default(),
            next_index: Mutex::new(now_ms),
            next_id: Mutex::new(0),
            max_entries: DEFAULT_MAX_LEAVES,
        }
    }
}

/// Errors of a leaf read.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("no leaf certificate for {service:?} yet: {reason}")]
    Unavailable { service: String, reason: String },
    /// A server refused to sign; `status` is the HTTP status its gRPC code maps to.
    #[error("the servers refused to sign a leaf certificate for {service:?}: {reason}")]
    Refused {
        service: String,
        status: u16,
        reason: String,
    },
}

/// The HTTP status a server's refusal with gRPC `code` is answered with, or `None` when the
/// failure is transient (no leader, no server reachable, a timeout) and worth retrying.
pub fn refusal_status(code: tonic::Code) -> Option<u16> {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::FailedPrecondition | C::OutOfRange => Some(400),
        C::Unauthenticated | C::PermissionDenied => Some(403),
        C::NotFound => Some(404),
        C::AlreadyExists => Some(409),
        C::Unimplemented => Some(501),
        C::Ok
        | C::Cancelled
        | C::Unknown
        | C::DeadlineExceeded
        | C::ResourceExhausted
        | C::Aborted
        | C::Internal
        | C::Unavailable
        | C::DataLoss => None,
    }
}

/// Logs a failure once per distinct cause: a warning when the cause changes, a debug line
/// while it repeats (so 300 failing entries do not make 300 warnings every few seconds).
#[derive(Default)]
struct CauseLog {
    last: Option<(tonic::Code, String)>,
}

impl CauseLog {
    /// Whether `e` is a cause other than the last one reported (and remembers it).
    fn is_new(&mut self, e: &tonic::Status) -> bool {
        let cause = (e.code(), e.message().to_string());
        let new = self.last.as_ref() != Some(&cause);
        self.last = Some(cause);
        new
    }
}

impl Leaves {
    fn index_after(&self, floor: u64) -> u64 {
        let mut i = self.next_index.lock();
        *i = (*i + 1).max(floor);
        *i
    }

    fn next_id(&self) -> u64 {
        let mut i = self.next_id.lock();
        *i += 1;
        *i
    }

    /// Removes the entry `id` under `key`, if it is still that one.
    fn remove(&self, key: &LeafKey, id: u64) {
        let mut map = self.entries.lock();
        if map.get(key).is_some_and(|e| e.id == id) {
            map.remove(key);
        }
    }

    /// Drops leaves unused for `ttl`.
    pub fn evict(&self, ttl: Duration) -> usize {
        let now = Instant::now();
        let mut map = self.entries.lock();
        let before = map.len();
        map.retain(|_, e| now.duration_since(*e.last_used.lock()) < ttl);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Agent {
    /// The leaf for `service` as `caller` holds it, issuing one (signed with the caller's
    /// token) on first use; with `min_index > 0` waits until a newer leaf exists or `wait`
    /// passes. The caller must have been authorized for `service:write` on `service`.
    pub async fn leaf(
        self: &Arc<Self>,
        service: &str,
        caller: &Caller,
        min_index: u64,
        wait: Duration,
    ) -> Result<Arc<LeafCert>, LeafError> {
        let key = (service.to_string(), caller.token().to_string());
        let entry = {
            let mut map = self.leaves.entries.lock();
            match map.get(&key) {
                Some(e) => e.clone(),
                None => {
                    make_room(
                        &mut map,
                        self.leaves.max_entries,
                        1,
                        |e| *e.last_used.lock(),
                        |_| true,
                    );
                    let tx = watch::Sender::new(Slot::Pending(None));
                    let id = self.leaves.next_id();
                    let owner = Owner {
                        credential: caller.credential(),
                        accessor_id: caller.accessor_id().map(str::to_string),
                    };
                    let task =
                        tokio::spawn(maintain(self.clone(), key.clone(), id, owner, tx.clone()));
                    let e = Arc::new(Entry {
                        id,
                        tx,
                        last_used: Mutex::new(Instant::now()),
                        task,
                    });
                    map.insert(key, e.clone());
                    e
                }
            }
        };
        *entry.last_used.lock() = Instant::now();
        let mut rx = entry.tx.subscribe();
        let unavailable = |reason: &str| LeafError::Unavailable {
            service: service.to_string(),
            reason: reason.to_string(),
        };
        let settled = tokio::time::timeout(
            Duration::from_secs(15),
            rx.wait_for(|s| !matches!(s, Slot::Pending(_))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if min_index > 0 && settled {
            let _ = tokio::time::timeout(
                wait,
                rx.wait_for(|s| match s {
                    Slot::Ready(l) => l.modify_index > min_index,
                    _ => true,
                }),
            )
            .await;
        }
        let current = rx.borrow().clone();
        match current {
            Slot::Ready(l) => Ok(l),
            Slot::Refused(code, reason) => Err(LeafError::Refused {
                service: service.to_string(),
                status: refusal_status(code).unwrap_or(400),
                reason: reason.to_string(),
            }),
            Slot::Pending(last) => Err(unavailable(&match last {
                Some(cause) => format!("no server signed it yet (last failure: {cause})"),
                None => "no server answered the signing request".to_string(),
            })),
        }
    }
}

fn renew_point(leaf: &IssuedLeaf) -> Option<OffsetDateTime> {
    let fmt = time::format_description::well_known::Rfc3339;
    let after = OffsetDateTime::parse(&leaf.valid_after, &fmt).ok()?;
    let before = OffsetDateTime::parse(&leaf.valid_before, &fmt).ok()?;
    // ValidAfter is backdated (a minute, for clock skew): measured from it, a leaf with a short
    // LeafCertTTL would be "due" the moment it is issued and re-signed in a tight loop. The
    // lifetime that matters for renewal starts when the leaf was issued (now: this runs right
    // after issuing).
    let after = after.max(OffsetDateTime::now_utc()).min(before);
    let life = before - after;
    let frac = rand::rng().random_range(0.6..0.9);
    Some(after + life * frac)
}

/// When a leaf that expires at `valid_before` (RFC 3339) stops being servable, if still ahead.
fn expiry(valid_before: &str) -> Option<Instant> {
    let fmt = time::format_description::well_known::Rfc3339;
    let before = OffsetDateTime::parse(valid_before, &fmt).ok()?;
    let left = before - OffsetDateTime::now_utc();
    (left > time::Duration::ZERO)
        .then(|| Instant::now() + Duration::from_secs_f64(left.as_seconds_f64()))
}

/// The token a leaf is signed and renewed with.
struct Owner {
    credential: Credential,
    /// For the log when renewal is refused.
    accessor_id: Option<String>,
}

/// First and longest wait between attempts after a transient failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Issues and renews the leaf of one service for as long as it is cached.
async fn maintain(agent: Arc<Agent>, key: LeafKey, id: u64, owner: Owner, tx: watch::Sender<Slot>) {
    let service = key.0.clone();
    let roots_key = CacheKey::roots(&agent.config.datacenter);
    let mut roots = agent.cache.subscribe(&roots_key);
    let mut renew_at: Option<Instant> = None;
    let mut root_of_leaf = String::new();
    let mut backoff = BACKOFF_MIN;
    let mut causes = CauseLog::default();
    let jitter = agent.config.leaf_rotation_jitter;
    loop {
        agent.cache.touch(&roots_key);
        let (active, td, roots_index) = match roots.borrow().as_ref() {
            Some(c) => match &c.value {
                Value::Roots(r) => (r.active_root_id.clone(), r.trust_domain.clone(), c.index),
                _ => (String::new(), String::new(), 0),
            },
            None => (String::new(), String::new(), 0),
        };
        if active.is_empty() {
            // No roots yet: wait for them.
            if roots.changed().await.is_err() {
                return;
            }
            continue;
        }
        let have = tx.borrow().leaf().is_some();
        let due = renew_at.is_none_or(|t| Instant::now() >= t);
        if !have || due {
            match issue(&agent, &service, &td, &owner.credential).await {
                Ok((leaf, key)) => {
                    let renew = renew_point(&leaf).map(|t| {
                        let left = (t - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                        Instant::now() + Duration::from_secs_f64(left.as_seconds_f64())
                    });
                    renew_at = renew;
                    root_of_leaf = leaf.root_id.clone();
                    let index = agent.leaves.index_after(roots_index);
                    let create = tx.borrow().leaf().map_or(index, |l| l.create_index);
                    if causes.last.take().is_some() {
                        tracing::info!(%service, "leaf signing recovered");
                    }
                    tracing::info!(%service, root = %leaf.root_id, "leaf certificate issued");
                    tx.send_replace(Slot::Ready(Arc::new(LeafCert {
                        serial_number: leaf.serial_number,
                        cert_pem: leaf.cert_pem,
                        private_key_pem: key,
                        service: leaf.service,
                        service_uri: leaf.service_uri,
                        valid_after: leaf.valid_after,
                        valid_before: leaf.valid_before,
                        create_index: create,
                        modify_index: index,
                        root_id: leaf.root_id,
                    })));
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    let new_cause = causes.is_new(&e);
                    let accessor_id = owner.accessor_id.as_deref().unwrap_or("");
                    if refusal_status(e.code()).is_some() {
                        // Final: keep a current leaf until it expires, but never retry.
                        let held = tx.borrow().leaf().and_then(|l| {
                            expiry(&l.valid_before).map(|at| (at, l.valid_before.clone()))
                        });
                        match held {
                            Some((until, kept_until)) => {
                                if new_cause {
                                    tracing::warn!(
                                        %service, accessor_id, code = ?e.code(), error = %e.message(),
                                        %kept_until,
                                        "leaf renewal refused by the servers; the current leaf is \
                                         served until it expires, and renewal is not retried before"
                                    );
                                }
                                renew_at = Some(until);
                            }
                            None => {
                                // The caller gets the refusal with its reason (4xx): a log line
                                // per refused request would let any client flood the log.
                                tracing::debug!(
                                    %service, accessor_id, code = ?e.code(), error = %e.message(),
                                    "leaf signing refused by the servers; answered, not retried"
                                );
                                tx.send_replace(Slot::Refused(e.code(), e.message().into()));
                                agent.leaves.remove(&key, id);
                                return;
                            }
                        }
                    } else {
                        if new_cause {
                            tracing::warn!(
                                %service, code = ?e.code(), error = %e.message(),
                                "leaf signing failed; retrying with backoff (logged again only if the cause changes)"
                            );
                        } else {
                            tracing::debug!(%service, error = %e.message(), ?backoff, "leaf signing failed again");
                        }
                        if !have {
                            tx.send_replace(Slot::Pending(Some(e.message().into())));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        }
        // Sleep until renewal, or until the active root changes.
        let sleep_until = renew_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {}
            changed = roots.changed() => {
                if changed.is_err() {
                    return;
                }
                let new_active = match roots.borrow().as_ref().map(|c| &c.value) {
                    Some(Value::Roots(r)) => r.active_root_id.clone(),
                    _ => String::new(),
                };
                if !new_active.is_empty() && new_active != root_of_leaf {
                    let delay = if jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        rand::rng().random_range(Duration::ZERO..jitter)
                    };
                    tracing::info!(%service, ?delay, "active root changed; re-issuing leaf");
                    // The jitter never postpones a renewal that is due sooner: a short-lived
                    // leaf must not expire while waiting its turn after a rotation.
                    let jittered = Instant::now() + delay;
                    renew_at = Some(renew_at.map_or(jittered, |due| due.min(jittered)));
                }
            }
        }
    }
}

/// Generates a key and CSR here and has a server sign it, presenting `credential`.
async fn issue(
    agent: &Agent,
    service: &str,
    td: &str,
    credential: &Credential,
) -> Result<(IssuedLeaf, String), tonic::Status> {
    let id = SpiffeId::service(td, &agent.config.datacenter, service);
    let (csr, key) = generate_csr(&id).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let dc = agent.config.datacenter.clone();
    let reply = agent
        .conn
        .call_as(credential.clone(), |mut c| {
            let req = SignCsrRequest {
                service: service.to_string(),
                datacenter: dc.clone(),
                csr_pem: csr.clone(),
            };
            async move { c.sign_csr(req).await }
        })
        .await?;
    let leaf: IssuedLeaf = serde_json::from_slice(&reply.into_inner().json)
        .map_err(|e| tonic::Status::internal(format!("malformed leaf from the server: {e}")))?;
    Ok((leaf, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_outages_are_retried() {
        use tonic::Code;
        for (code, status) in [
            (Code::InvalidArgument, Some(400)),
            (Code::FailedPrecondition, Some(400)),
            (Code::PermissionDenied, Some(403)),
            (Code::Unauthenticated, Some(403)),
            (Code::NotFound, Some(404)),
            (Code::Unavailable, None),
            (Code::DeadlineExceeded, None),
            (Code::Internal, None),
        ] {
            assert_eq!(refusal_status(code), status, "{code:?}");
        }
    }

    #[test]
    fn a_cause_is_logged_once_until_it_changes() {
        let mut log = CauseLog::default();
        let down = tonic::Status::unavailable("no leader");
        assert!(log.is_new(&down));
        for _ in 0..10 {
            assert!(!log.is_new(&down), "the same cause again");
        }
        assert!(log.is_new(&tonic::Status::unavailable("connection refused")));
        assert!(log.is_new(&down), "back to the first cause: a change");
    }
}
