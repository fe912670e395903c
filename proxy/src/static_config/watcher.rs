//! Static mode's file watcher: polls the config file and the PEM files it names, reloads on
//! change and publishes each good load on the same `watch` channels the agent loops feed in
//! agent mode ([`Outputs`]); a failed load keeps the previous material.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_policy::model::CaRootList;
use rustls::crypto::CryptoProvider;
use tokio::sync::watch;

use crate::agent::{Endpoint, LeafCert};
use crate::authz::Policy;
use crate::inbound::LocalApp;

use super::error::error_chain;
use super::load::{Loaded, load};
use super::schema::StaticConfig;

/// How often the watcher looks at the files (SPIRE rotates leaves at half their lifetime, so a
/// second is far below any useful bound and costs four `stat` calls).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `(mtime, len)` of each watched file; `None` for a file that cannot be stat'ed.
type Signature = Vec<Option<(SystemTime, u64)>>;

fn signature(paths: &[&Path]) -> Signature {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

pub(super) fn watched(c: &StaticConfig) -> Signature {
    signature(&[&c.path, &c.cert, &c.key, &c.trust_bundle])
}

/// Publisher of one upstream's instances (what the agent's health loop feeds in agent mode).
pub type EndpointsTx = watch::Sender<Option<Arc<Vec<Endpoint>>>>;

/// Publisher of one inbound listener's local application.
pub type LocalAppTx = watch::Sender<Option<Arc<LocalApp>>>;

/// Sends `value` on the channel named `name` among `txs` unless it holds an equal value
/// already (a name the start did not have is a listener change, applied only by a restart).
fn send_named<K: PartialEq, T: PartialEq>(
    txs: &[(K, watch::Sender<Option<Arc<T>>>)],
    name: &K,
    value: T,
) {
    if let Some((_, tx)) = txs.iter().find(|(n, _)| n == name) {
        tx.send_if_modified(|old| {
            let same = old.as_deref() == Some(&value);
            if !same {
                *old = Some(Arc::new(value));
            }
            !same
        });
    }
}

/// The channels the watcher feeds: the same ones the agent loops feed in agent mode.
#[derive(Debug)]
pub struct Outputs {
    pub leaf: watch::Sender<Option<Arc<LeafCert>>>,
    pub roots: watch::Sender<Option<Arc<CaRootList>>>,
    pub policy: watch::Sender<Option<Arc<Policy>>>,
    /// Per inbound listener name (`None`: the single unnamed listener).
    pub local_apps: Vec<(Option<String>, LocalAppTx)>,
    /// Per upstream name.
    pub endpoints: Vec<(String, EndpointsTx)>,
}

impl Outputs {
    /// Publishes `l`. Values that did not change are not re-sent, so an unchanged
    /// `allowed_sources` does not trigger a re-check.
    pub fn publish(&self, l: &Loaded, generation: u64) {
        self.leaf.send_replace(Some(Arc::new(l.leaf.clone())));
        self.roots.send_replace(Some(Arc::new(l.roots.clone())));
        let sources = l.config.source_patterns();
        self.policy.send_if_modified(|p| {
            let same = p
                .as_ref()
                .filter(|p| p.protocol == l.config.protocol)
                .and_then(|p| p.allowed_sources())
                .is_some_and(|old| old == sources.as_slice());
            if !same {
                *p = Some(Arc::new(l.policy(generation)));
            }
            !same
        });
        for i in &l.config.inbound {
            send_named(&self.local_apps, &i.name, i.local_app.clone());
        }
        for (name, eps) in l.endpoints() {
            send_named(&self.endpoints, &name, eps);
        }
    }
}

/// Polls the files every [`POLL_INTERVAL`] and publishes each successful reload on `out`. Runs
/// until every receiver of the leaf channel is gone (the proxy is shutting down) or the runtime
/// it runs on stops.
pub async fn watch_files(provider: Arc<CryptoProvider>, initial: Loaded, out: Outputs) {
    let path = initial.config.path.clone();
    let start_settings = initial.config.restart_only();
    let mut current = initial.config;
    let mut seen = watched(&current);
    let mut generation = initial.leaf.modify_index;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = out.leaf.closed() => return,
        }
        // Stat before reading: a write after the stat shows up as a change on the next tick.
        let now = watched(&current);
        if now == seen {
            continue;
        }
        seen = now;
        generation += 1;
        match load(&path, &provider, generation) {
            Ok(l) => {
                if l.config.restart_only() != start_settings {
                    tracing::warn!(
                        config = %path.display(),
                        "inbound listeners (names or addresses), upstream names or IDs, admin address or timeouts changed; restart the proxy to apply them (certificates, allowed_sources, each listener's local_app and upstream addresses are applied live)"
                    );
                }
                let paths_moved = (&l.config.cert, &l.config.key, &l.config.trust_bundle)
                    != (&current.cert, &current.key, &current.trust_bundle);
                out.publish(&l, generation);
                tracing::info!(config = %path.display(), generation, id = %l.id, "static configuration reloaded");
                current = l.config;
                if paths_moved {
                    // The signature covered the old paths: look at the new ones next tick.
                    seen.clear();
                }
            }
            Err(e) => tracing::warn!(
                config = %path.display(),
                "reload failed; keeping the previous configuration and certificates: {}",
                error_chain(&e)
            ),
        }
    }
}
