//! Registry of live inbound connections with their peer identity, re-checked whenever the
//! intentions change (ztunnel's `connection_manager.rs`, linkerd's `policy/tcp.rs`).
//!
//! Authorization happens once per connection at accept time; without this registry an
//! intention deleted later would leave already-open connections running forever. On every new
//! [`Policy`] snapshot, [`Registry::recheck`] decides each live connection again with the same
//! pure function and closes the ones now denied (unless the operator asked to keep them), with
//! one log line per connection saying why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_policy::spiffe::SpiffeId;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::authz::Policy;

struct Entry {
    peer: SpiffeId,
    client: SocketAddr,
    close: Arc<Notify>,
    /// Set once a re-check decided to close it (so it is logged once).
    closing: bool,
}

/// Live inbound connections.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len())
            .finish()
    }
}

/// A live connection as shown on `/config`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveConnection {
    pub id: u64,
    pub source: String,
    pub client: SocketAddr,
}

/// Membership of one connection; removes it on drop. `closed()` resolves when a re-check
/// decided to close it.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    registry: Arc<Registry>,
    close: Arc<Notify>,
}

impl Registration {
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .expect("registry lock")
            .remove(&self.id);
    }
}

impl Registry {
    pub fn register(self: &Arc<Self>, peer: SpiffeId, client: SocketAddr) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.entries.lock().expect("registry lock").insert(
            id,
            Entry {
                peer,
                client,
                close: close.clone(),
                closing: false,
            },
        );
        Registration {
            id,
            registry: self.clone(),
            close,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<LiveConnection> {
        let mut v: Vec<LiveConnection> = self
            .entries
            .lock()
            .expect("registry lock")
            .iter()
            .map(|(id, e)| LiveConnection {
                id: *id,
                source: e.peer.uri(),
                client: e.client,
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Decides every live connection again under `policy`; closes (or, with `keep_denied`,
    /// only reports) the denied ones. Returns how many are now denied.
    pub fn recheck(&self, policy: &Policy, keep_denied: bool) -> usize {
        let mut denied = 0;
        let mut entries = self.entries.lock().expect("registry lock");
        for e in entries.values_mut() {
            if e.closing {
                continue;
            }
            let v = policy.authorize(&e.peer);
            if v.allowed {
                continue;
            }
            denied += 1;
            if keep_denied {
                tracing::warn!(
                    source = %e.peer, destination = %policy.destination, client = %e.client,
                    reason = %v.reason,
                    "live connection is now denied; keeping it open (--keep-denied-connections)"
                );
            } else {
                tracing::warn!(
                    source = %e.peer, destination = %policy.destination, client = %e.client,
                    reason = %v.reason,
                    "closing live connection: the policy (intentions, or allowed_sources in static mode) changed and now denies it"
                );
                e.closing = true;
                // A stored permit: the connection sees it even if it is not waiting right now.
                e.close.notify_one();
            }
        }
        denied
    }
}

/// Re-checks the registry on every policy change until the policy channel closes.
pub async fn run_rechecks(
    registry: Arc<Registry>,
    mut policy: watch::Receiver<Option<Arc<Policy>>>,
    keep_denied: bool,
) {
    while policy.changed().await.is_ok() {
        let p = policy.borrow_and_update().clone();
        if let Some(p) = p {
            registry.recheck(&p, keep_denied);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_policy::intentions::DefaultPolicy;
    use std::time::Duration;

    #[tokio::test]
    async fn denied_connections_are_signalled() {
        let r = Arc::new(Registry::default());
        let web = SpiffeId::service("td", "dc1", "web");
        let api = SpiffeId::service("td", "dc1", "api");
        let a = r.register(web, "127.0.0.1:1".parse().unwrap());
        let b = r.register(api, "127.0.0.1:2".parse().unwrap());
        let allow_web: Vec<mesh_policy::model::Intention> = vec![
            serde_json::from_value(serde_json::json!({
                "SourceName": "web", "DestinationName": "db", "Action": "allow"
            }))
            .unwrap(),
        ];
        let p = Policy::new("db", "td", 2, allow_web, DefaultPolicy::Deny);
        assert_eq!(
            r.recheck(&p, true),
            1,
            "keep mode reports but does not close"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), b.closed())
                .await
                .is_err()
        );
        assert_eq!(r.recheck(&p, false), 1);
        tokio::time::timeout(Duration::from_secs(1), b.closed())
            .await
            .expect("api connection told to close");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), a.closed())
                .await
                .is_err(),
            "web stays"
        );
        drop(b);
        assert_eq!(r.len(), 1);
    }
}
