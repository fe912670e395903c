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
use super::cache::{CacheKey, Value};
use super::conn::Credential;
use crate::ca::generate_csr;
use crate::model::IssuedLeaf;
use crate::proto::SignCsrRequest;
use crate::spiffe::SpiffeId;
use crate::wire::LeafCert;

struct Entry {
    tx: watch::Sender<Option<Arc<LeafCert>>>,
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

/// Leaves of the local services.
pub struct Leaves {
    entries: Mutex<HashMap<LeafKey, Arc<Entry>>>,
    next_index: Mutex<u64>,
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
        }
    }
}

/// Errors of a leaf read.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("no leaf certificate for {service:?} yet: {reason}")]
    Unavailable { service: String, reason: String },
}

impl Leaves {
    fn index_after(&self, floor: u64) -> u64 {
        let mut i = self.next_index.lock();
        *i = (*i + 1).max(floor);
        *i
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
        let entry = {
            let mut map = self.leaves.entries.lock();
            map.entry((service.to_string(), caller.token().to_string()))
                .or_insert_with(|| {
                    let (tx, _) = watch::channel(None);
                    let owner = Owner {
                        credential: caller.credential(),
                        accessor_id: caller.accessor_id().map(str::to_string),
                    };
                    let task = tokio::spawn(maintain(
                        self.clone(),
                        service.to_string(),
                        owner,
                        tx.clone(),
                    ));
                    Arc::new(Entry {
                        tx,
                        last_used: Mutex::new(Instant::now()),
                        task,
                    })
                })
                .clone()
        };
        *entry.last_used.lock() = Instant::now();
        let mut rx = entry.tx.subscribe();
        let unavailable = |reason: &str| LeafError::Unavailable {
            service: service.to_string(),
            reason: reason.to_string(),
        };
        tokio::time::timeout(Duration::from_secs(15), rx.wait_for(Option::is_some))
            .await
            .map_err(|_| unavailable("no server answered the signing request"))?
            .map_err(|_| unavailable("leaf manager stopped"))?;
        if min_index > 0 {
            let _ = tokio::time::timeout(
                wait,
                rx.wait_for(|l| l.as_ref().is_some_and(|l| l.modify_index > min_index)),
            )
            .await;
        }
        let current = rx.borrow().clone();
        current.ok_or_else(|| unavailable("leaf manager stopped"))
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

/// The token a leaf is signed and renewed with.
struct Owner {
    credential: Credential,
    /// For the log when renewal is refused.
    accessor_id: Option<String>,
}

/// Issues and renews the leaf of one service for as long as it is cached.
async fn maintain(
    agent: Arc<Agent>,
    service: String,
    owner: Owner,
    tx: watch::Sender<Option<Arc<LeafCert>>>,
) {
    let roots_key = CacheKey::roots(&agent.config.datacenter);
    let mut roots = agent.cache.subscribe(&roots_key);
    let mut renew_at: Option<Instant> = None;
    let mut root_of_leaf = String::new();
    let mut backoff = Duration::from_millis(200);
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
        let have = tx.borrow().is_some();
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
                    let create = tx.borrow().as_ref().map_or(index, |l| l.create_index);
                    tracing::info!(%service, root = %leaf.root_id, "leaf certificate issued");
                    tx.send_replace(Some(Arc::new(LeafCert {
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
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    let denied = e.code() == tonic::Code::PermissionDenied;
                    let accessor_id = owner.accessor_id.as_deref().unwrap_or("");
                    if denied {
                        tracing::warn!(
                            %service, accessor_id, error = %e.message(),
                            "leaf signing refused: the token that asked for this leaf lacks \
                             service:write or was deleted; keeping the current leaf until it expires"
                        );
                    } else {
                        tracing::warn!(%service, error = %e.message(), "leaf signing failed; keeping the current leaf");
                    }
                    tokio::time::sleep(backoff).await;
                    let most = Duration::from_secs(if denied { 60 } else { 10 });
                    backoff = (backoff * 2).min(most);
                    continue;
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
