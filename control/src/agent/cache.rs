//! The agent's cache, as Consul's agent cache: populated on demand (nothing is fetched for a
//! service until something asks), kept fresh by multi-topic watch streams from the servers (one
//! for every key, plus one per key added since, on the same connection; see [`Cache::run`]),
//! partitioned by ACL token and datacenter, entries unused for the TTL evicted, and fail
//! static: when no server is reachable the last values keep being served, and the stream
//! resumes from the cached indexes when a server returns.
//!
//! The number of entries is bounded (`max_entries`): a new entry beyond it drops the least
//! recently used one that nothing follows (a renewing leaf follows the roots), so a client
//! asking for many names cannot grow the agent without bound.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic::Status;

use super::conn::ServerConn;
use crate::intentions::IntentionSet;
use crate::model::CaRootList;
use crate::proto::{Topic, TopicKind, WatchEvent, WatchSet};
use crate::wire::IntentionsSnapshot;

/// What a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Roots,
    /// Intentions that can apply to a destination (its own and `*`).
    Intentions,
    /// Connect-capable instances of a service (`passing` filters healthy ones).
    Health,
}

/// Identity of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub kind: Kind,
    pub name: String,
    pub passing: bool,
    pub token: String,
    pub datacenter: String,
}

impl CacheKey {
    pub fn roots(dc: &str) -> Self {
        Self::new(Kind::Roots, "", false, dc)
    }

    pub fn intentions(destination: &str, dc: &str) -> Self {
        Self::new(Kind::Intentions, destination, false, dc)
    }

    pub fn health(service: &str, passing: bool, dc: &str) -> Self {
        Self::new(Kind::Health, service, passing, dc)
    }

    fn new(kind: Kind, name: &str, passing: bool, dc: &str) -> Self {
        Self {
            kind,
            name: name.to_string(),
            passing,
            token: String::new(),
            datacenter: dc.to_string(),
        }
    }

    /// The same entry as seen with ACL token `token`.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = token.to_string();
        self
    }

    fn topic(&self, min_index: u64) -> Topic {
        let kind = match self.kind {
            Kind::Roots => TopicKind::TopicRoots,
            Kind::Intentions => TopicKind::TopicIntentions,
            Kind::Health => TopicKind::TopicHealth,
        };
        Topic {
            kind: kind as i32,
            name: self.name.clone(),
            passing_only: self.passing,
            min_index,
        }
    }
}

/// Intentions for one destination, indexed for fast decisions.
#[derive(Debug)]
pub struct IntentionView {
    pub set: IntentionSet,
    pub trust_domain: String,
    /// The JSON as received (`{DefaultPolicy, TrustDomain, Intentions}`), served to proxies.
    pub raw: Bytes,
}

/// A cached value.
#[derive(Debug, Clone)]
pub enum Value {
    Roots(Arc<CaRootList>),
    Intentions(Arc<IntentionView>),
    /// The JSON body of `/v1/health/connect/:s`.
    Health(Arc<HealthBody>),
}

/// A cached health body, with the node of each entry (what ACL filtering needs) read once
/// when cached, so a read that may see every node serves the body as is.
#[derive(Debug)]
pub struct HealthBody {
    pub raw: Bytes,
    /// The node name of each entry, in order.
    pub nodes: Vec<String>,
}

#[derive(serde::Deserialize)]
struct EntryNode {
    #[serde(rename = "Node")]
    node: NodeName,
}

#[derive(serde::Deserialize)]
struct NodeName {
    #[serde(rename = "Node")]
    name: String,
}

impl HealthBody {
    fn decode(json: &[u8]) -> Result<Self, serde_json::Error> {
        let entries: Vec<EntryNode> = serde_json::from_slice(json)?;
        Ok(Self {
            raw: Bytes::copy_from_slice(json),
            nodes: entries.into_iter().map(|e| e.node.name).collect(),
        })
    }

    /// The body without the entries on nodes `readable` refuses.
    pub fn filtered(&self, readable: impl Fn(&str) -> bool) -> Result<Bytes, serde_json::Error> {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&self.raw)?;
        let kept: Vec<&serde_json::Value> = entries
            .iter()
            .zip(&self.nodes)
            .filter(|(_, node)| readable(node))
            .map(|(e, _)| e)
            .collect();
        serde_json::to_vec(&kept).map(Bytes::from)
    }
}

/// A value with the server index it reflects.
#[derive(Debug, Clone)]
pub struct Cached {
    pub index: u64,
    pub value: Value,
}

/// Errors of a cache read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no server reachable and nothing cached yet for {what}")]
    Unavailable { what: String },
    /// The servers answered, but with nothing the cache may serve yet.
    #[error("not ready: nothing usable cached yet for {what}: {reason}")]
    NotReady {
        what: String,
        #[source]
        reason: Arc<DecodeError>,
    },
}

/// Why an update from the servers was not cached.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable update")]
    Json(#[from] serde_json::Error),
    /// An intentions snapshot from before the CA exists: a proxy given it would believe the
    /// mesh's trust domain is `""` and refuse every peer (issue 10 point 2). Current servers
    /// never send one; the cache refuses it from any server.
    #[error(
        "the intentions snapshot carries no trust domain (the servers' CA is not initialized yet)"
    )]
    NoTrustDomain,
}

struct Entry {
    tx: watch::Sender<Option<Cached>>,
    last_used: Mutex<Instant>,
    /// Why the last update was refused, while no value is cached (reported by [`Cache::get`]).
    refused: Mutex<Option<Arc<DecodeError>>>,
}

impl Entry {
    /// Caches an update, or keeps the current value and remembers why not.
    fn offer(&self, kind: Kind, index: u64, json: &[u8]) -> Result<(), ()> {
        match decode(kind, json) {
            Ok(value) => {
                *self.refused.lock() = None;
                self.tx.send_replace(Some(Cached { index, value }));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(?kind, index, error = %e, "cache: update refused; keeping the current value");
                *self.refused.lock() = Some(Arc::new(e));
                Err(())
            }
        }
    }
}

/// Default bound on cache entries.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Drops least recently used entries of `map` that `evictable` allows until `room` more fit
/// within `max`; returns how many were dropped. Entries it may not drop can keep the map above
/// `max`. Shared by the cache and the leaves (`leaf::Leaves`).
pub(super) fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    room: usize,
    last_used: impl Fn(&V) -> Instant,
    evictable: impl Fn(&V) -> bool,
) -> usize {
    let mut dropped = 0;
    while map.len() + room > max {
        let oldest = map
            .iter()
            .filter(|(_, v)| evictable(v))
            .min_by_key(|(_, v)| last_used(v))
            .map(|(k, _)| k.clone());
        let Some(k) = oldest else { break };
        map.remove(&k);
        dropped += 1;
    }
    dropped
}

/// The cache.
pub struct Cache {
    entries: Mutex<HashMap<CacheKey, Arc<Entry>>>,
    /// Woken when the set of keys changes (new keys get a stream; else the watch restarts).
    changed: Notify,
    /// Set by [`Cache::reconnect`]: the next wake restarts every stream.
    reconnect: AtomicBool,
    ttl: Duration,
    max_entries: usize,
    first_fetch: Duration,
}

impl Cache {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, DEFAULT_MAX_ENTRIES)
    }

    /// A cache of at most `max_entries` entries (at least one) beside the TTL.
    pub fn bounded(ttl: Duration, max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            reconnect: AtomicBool::new(false),
            ttl,
            max_entries: max_entries.max(1),
            first_fetch: Duration::from_secs(10),
        }
    }

    fn entry(&self, key: &CacheKey) -> Arc<Entry> {
        self.entry_at(key, Instant::now())
    }

    /// The entry for `key`, created if missing, marked used at `now`.
    fn entry_at(&self, key: &CacheKey, now: Instant) -> Arc<Entry> {
        let mut map = self.entries.lock();
        if let Some(e) = map.get(key) {
            *e.last_used.lock() = now;
            return e.clone();
        }
        let dropped = make_room(
            &mut map,
            self.max_entries,
            1,
            |e| *e.last_used.lock(),
            |e| e.tx.receiver_count() == 0,
        );
        if dropped > 0 {
            tracing::debug!(
                dropped,
                max = self.max_entries,
                "cache full: least recently used entries dropped"
            );
        }
        let e = Arc::new(Entry {
            tx: watch::Sender::new(None),
            last_used: Mutex::new(now),
            refused: Mutex::new(None),
        });
        map.insert(key.clone(), e.clone());
        drop(map);
        self.changed.notify_one();
        e
    }

    /// Follows an entry (creating it); the receiver sees every update.
    pub fn subscribe(&self, key: &CacheKey) -> watch::Receiver<Option<Cached>> {
        self.entry(key).tx.subscribe()
    }

    /// Marks an entry used (for eviction) without reading it.
    pub fn touch(&self, key: &CacheKey) {
        self.entry(key);
    }

    /// Reads an entry: waits for the first value, then, when `min_index > 0`, until the index
    /// passes it or `wait` elapses (a blocking query).
    pub async fn get(
        &self,
        key: &CacheKey,
        min_index: u64,
        wait: Duration,
    ) -> Result<Cached, CacheError> {
        let entry = self.entry(key);
        let mut rx = entry.tx.subscribe();
        let first = tokio::time::timeout(self.first_fetch, rx.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok());
        if !first {
            let what = format!("{:?} {:?}", key.kind, key.name);
            return Err(match entry.refused.lock().clone() {
                Some(reason) => CacheError::NotReady { what, reason },
                None => CacheError::Unavailable { what },
            });
        }
        if min_index > 0 {
            let _ = tokio::time::timeout(
                wait,
                rx.wait_for(|v| v.as_ref().is_some_and(|c| c.index > min_index)),
            )
            .await;
        }
        let current = rx.borrow().clone();
        current.ok_or_else(|| CacheError::Unavailable {
            what: format!("{:?} {:?}", key.kind, key.name),
        })
    }

    /// Restarts the watch stream (with the agent's current credentials).
    pub fn reconnect(&self) {
        self.reconnect.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Number of entries (for metrics and tests).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries unused for the TTL; returns how many.
    pub fn evict(&self) -> usize {
        self.evict_at(Instant::now())
    }

    /// [`Cache::evict`] as of `now` (the tests pass a time in the future).
    fn evict_at(&self, now: Instant) -> usize {
        let mut map = self.entries.lock();
        let before = map.len();
        map.retain(|_, e| now.duration_since(*e.last_used.lock()) < self.ttl);
        let evicted = before - map.len();
        drop(map);
        if evicted > 0 {
            self.changed.notify_one();
        }
        evicted
    }

    /// The current keys and their entries.
    fn keyed(&self) -> Vec<(CacheKey, Arc<Entry>)> {
        self.entries
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Opens a watch stream for `keys` (each resuming from its cached index); its messages
    /// come tagged with the keys, and its end as one `None`.
    async fn open(
        &self,
        conn: &ServerConn,
        keys: Vec<(CacheKey, Arc<Entry>)>,
    ) -> Result<Tagged, Status> {
        let topics: Vec<Topic> = keys
            .iter()
            .map(|(k, e)| k.topic(e.tx.borrow().as_ref().map_or(0, |c| c.index)))
            .collect();
        let set = WatchSet { topics };
        let stream = conn
            .call(|mut c| {
                let set = set.clone();
                async move { c.watch(set).await }
            })
            .await?
            .into_inner();
        let keys = Arc::new(keys);
        Ok(Box::pin(
            stream
                .map(Some)
                .chain(futures::stream::once(async { None }))
                .map(move |m| (keys.clone(), m)),
        ))
    }

    /// Keeps every entry fresh from the servers until `shutdown` resolves.
    ///
    /// One stream carries every key; a key added later gets a stream of its own on the same
    /// connection at once (its first value costs one round trip, and the streams already
    /// open are not restarted). An eviction, new credentials ([`Cache::reconnect`]), a failed
    /// stream, or [`MAX_STREAMS`] streams restart the watch as one stream of every key.
    pub async fn run(
        self: Arc<Self>,
        conn: Arc<ServerConn>,
        connected: watch::Sender<bool>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut evict_tick = tokio::time::interval(self.ttl.min(Duration::from_secs(60)));
        loop {
            self.reconnect.store(false, Ordering::Relaxed);
            let keys = self.keyed();
            if keys.is_empty() {
                tokio::select! {
                    _ = self.changed.notified() => continue,
                    _ = evict_tick.tick() => { self.evict(); continue }
                    _ = &mut shutdown => return,
                }
            }
            let mut watched: HashSet<CacheKey> = keys.iter().map(|(k, _)| k.clone()).collect();
            let mut streams = SelectAll::new();
            // (why, whether an open stream failed: opening one already failed over).
            let mut failed = match self.open(&conn, keys).await {
                Ok(s) => {
                    streams.push(s);
                    None
                }
                Err(e) => Some((e, false)),
            };
            while failed.is_none() {
                tokio::select! {
                    msg = streams.next() => match msg {
                        Some((keys, Some(Ok(ev)))) => {
                            connected.send_replace(true);
                            backoff = Duration::from_millis(100);
                            let Some((key, entry)) = keys.get(ev.topic as usize) else { continue };
                            let _ = entry.offer(key.kind, ev.index, &ev.json);
                        }
                        Some((_, Some(Err(e)))) => failed = Some((e, true)),
                        Some((_, None)) | None => {
                            failed = Some((Status::unavailable("watch stream ended"), true));
                        }
                    },
                    _ = self.changed.notified() => {
                        let now = self.keyed();
                        let current: HashSet<&CacheKey> = now.iter().map(|(k, _)| k).collect();
                        let restart = self.reconnect.load(Ordering::Relaxed)
                            || streams.len() >= MAX_STREAMS
                            || watched.iter().any(|k| !current.contains(k));
                        drop(current);
                        if restart {
                            break;
                        }
                        let added: Vec<_> =
                            now.into_iter().filter(|(k, _)| !watched.contains(k)).collect();
                        if added.is_empty() {
                            continue;
                        }
                        watched.extend(added.iter().map(|(k, _)| k.clone()));
                        match self.open(&conn, added).await {
                            Ok(s) => streams.push(s),
                            Err(e) => failed = Some((e, false)),
                        }
                    }
                    _ = evict_tick.tick() => {
                        if self.evict() > 0 {
                            break;
                        }
                    }
                    _ = &mut shutdown => return,
                }
            }
            if let Some((e, stream_failed)) = failed {
                connected.send_replace(false);
                if stream_failed {
                    conn.failover();
                }
                tracing::debug!(error = %e, "cache watch: no server; serving cached values");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A watch stream whose messages carry the keys of its topics (by position); `None` at its end.
type Tagged = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = (
                    Arc<Vec<(CacheKey, Arc<Entry>)>>,
                    Option<Result<WatchEvent, Status>>,
                ),
            > + Send,
    >,
>;

/// Streams one watch may grow to (by keys added one at a time) before it restarts as one.
pub const MAX_STREAMS: usize = 32;

fn decode(kind: Kind, json: &[u8]) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Roots => Value::Roots(Arc::new(serde_json::from_slice(json)?)),
        Kind::Intentions => {
            let b: IntentionsSnapshot = serde_json::from_slice(json)?;
            if b.trust_domain.is_empty() {
                return Err(DecodeError::NoTrustDomain);
            }
            let (set, trust_domain) = b.into_parts();
            Value::Intentions(Arc::new(IntentionView {
                set,
                trust_domain,
                raw: Bytes::copy_from_slice(json),
            }))
        }
        Kind::Health => Value::Health(Arc::new(HealthBody::decode(json)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Time is passed explicitly rather than paused: tokio's `test-util` feature in this
    // crate's dev-dependencies would give the test build a second feature set of tokio and
    // everything above it (twice the compile time and disk in CI).
    #[test]
    fn unused_entries_are_evicted_after_the_ttl() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let cache = Cache::new(hours(72));
        let web = CacheKey::health("web", true, "dc1");
        let db = CacheKey::health("db", true, "dc1");
        let t0 = Instant::now();
        cache.entry_at(&web, t0);
        cache.entry_at(&db, t0);
        assert_eq!(cache.len(), 2);
        cache.entry_at(&web, t0 + hours(71));
        assert_eq!(
            cache.evict_at(t0 + hours(71)),
            0,
            "nothing is older than the TTL yet"
        );
        assert_eq!(cache.evict_at(t0 + hours(73)), 1, "db was unused for 73h");
        assert_eq!(cache.len(), 1);
        cache.entry_at(&web, t0 + hours(73));
        assert_eq!(cache.evict_at(t0 + hours(74)), 0);
    }

    #[test]
    fn entries_beyond_the_bound_evict_the_least_recently_used_unfollowed_one() {
        let cache = Cache::bounded(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let key = |n: &str| CacheKey::health(n, true, "dc1");
        cache.entry_at(&key("a"), at(0));
        cache.entry_at(&key("b"), at(1));
        cache.entry_at(&key("c"), at(2));
        // `a` is followed (a subscriber), `b` the oldest one nobody follows.
        let _follow = cache.entry_at(&key("a"), at(0)).tx.subscribe();
        cache.entry_at(&key("d"), at(3));
        assert_eq!(cache.len(), 3);
        let has = |n: &str| cache.entries.lock().contains_key(&key(n));
        assert!(has("a") && !has("b") && has("c") && has("d"));
        for i in 0..100 {
            cache.entry_at(&key(&format!("n{i}")), at(10 + i));
        }
        assert_eq!(cache.len(), 3, "bounded under many names");
        assert!(has("a"), "a followed entry is never dropped");
    }

    #[test]
    fn entries_are_partitioned_by_token_and_datacenter() {
        let cache = Cache::new(Duration::from_secs(60));
        let a = CacheKey::roots("dc1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            cache.touch(&a);
            cache.touch(&a.clone().with_token("t1"));
            cache.touch(&CacheKey::roots("dc2"));
            cache.touch(&a);
        });
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test]
    async fn an_intentions_snapshot_without_trust_domain_is_never_cached() {
        let mut cache = Cache::new(Duration::from_secs(60));
        cache.first_fetch = Duration::from_millis(50);
        let key = CacheKey::intentions("db", "dc1");
        let entry = cache.entry(&key);
        let early = br#"{"DefaultPolicy":"deny","TrustDomain":"","Intentions":[]}"#;
        assert!(entry.offer(Kind::Intentions, 5, early).is_err());
        let err = cache.get(&key, 0, Duration::ZERO).await.unwrap_err();
        let is_no_td = |e: &CacheError| matches!(e, CacheError::NotReady { reason, .. } if matches!(**reason, DecodeError::NoTrustDomain));
        assert!(is_no_td(&err), "{err:?}");
        assert!(err.to_string().contains("no trust domain"), "{err}");
        // Every reader is told the same, not only the first.
        let again = cache.get(&key, 0, Duration::ZERO).await.unwrap_err();
        assert!(is_no_td(&again), "{again:?}");

        let good = br#"{"DefaultPolicy":"deny","TrustDomain":"abc.consul","Intentions":[]}"#;
        entry.offer(Kind::Intentions, 6, good).unwrap();
        // A later TD-less update leaves the good value in place.
        assert!(entry.offer(Kind::Intentions, 7, early).is_err());
        let c = cache.get(&key, 0, Duration::ZERO).await.unwrap();
        assert_eq!(c.index, 6);
        let Value::Intentions(view) = c.value else {
            panic!("not intentions")
        };
        assert_eq!(view.trust_domain, "abc.consul");
        assert!(!view.raw.is_empty() && view.raw.as_ref() == good);
    }

    #[test]
    fn health_bodies_know_their_nodes_and_filter_by_them() {
        let json = br#"[{"Node":{"Node":"n1","Address":"a"},"Service":{"Service":"web"}},
                        {"Node":{"Node":"n2"},"Service":{"Service":"web"}}]"#;
        let h = HealthBody::decode(json).unwrap();
        assert_eq!(h.nodes, ["n1", "n2"]);
        let kept: serde_json::Value =
            serde_json::from_slice(&h.filtered(|n| n == "n2").unwrap()).unwrap();
        assert_eq!(
            kept,
            serde_json::json!([{"Node":{"Node":"n2"},"Service":{"Service":"web"}}])
        );
        assert!(
            HealthBody::decode(br#"[{"Service":{}}]"#).is_err(),
            "no node: refused"
        );
    }

    #[tokio::test]
    async fn a_read_without_servers_or_cached_value_fails_with_a_reason() {
        let mut cache = Cache::new(Duration::from_secs(60));
        cache.first_fetch = Duration::from_millis(50);
        let err = cache
            .get(&CacheKey::roots("dc1"), 0, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no server reachable"), "{err}");
    }
}
