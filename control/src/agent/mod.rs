//! The agent: what proxies and applications talk to on their own host. It answers Consul's
//! agent HTTP API from local state and from a cache kept fresh by one multiplexed gRPC
//! connection to the servers, runs the health checks of its services, keeps the catalog in
//! sync with them (anti-entropy), holds leaf certificates whose keys never leave the host, and
//! forwards every other API request to a server over the same connection.
//!
//! Every `meshd server` embeds one (as every Consul server is also an agent); `meshd agent`
//! runs one alone.
//!
//! With a data directory, the local services and checks (with their state) are kept on disk
//! and restored at start, before the API is served or anything is synced (`persist`), so a
//! restarted agent keeps its node's services in the catalog and their health unchanged.
//!
//! With ACLs on, the agent checks its own routes with the caller's token, resolved by the
//! servers and cached per token until the ACL tables change (`acl`); what it does for itself
//! (anti-entropy, heartbeats, watches) acts with the agent token, or with the servers'
//! internal secret in the agent a server embeds (`conn`).

pub mod acl;
pub mod authorize;
pub mod auto_encrypt;
pub mod cache;
pub mod checks;
mod conn;
mod http;
pub mod leaf;
pub mod local;
pub mod maintenance;
pub mod persist;
pub mod registration;
pub mod service_health;
pub mod sync;

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

pub use conn::{AgentIdentity, ConnError, Credential, ServerConn, UnusableToken};

use crate::model::Node;

/// Settings of an agent. `Debug` never shows the agent token.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub datacenter: String,
    /// gRPC addresses of servers, tried in order.
    pub servers: Vec<String>,
    /// HTTP API address; `None` when embedded in a server (the server serves the API).
    pub http_addr: Option<SocketAddr>,
    /// This node's address as registered in the catalog.
    pub address: String,
    /// Cache entries unused for this long are evicted (Consul: 72h).
    pub cache_ttl: Duration,
    /// Leaves are re-issued within this window after a root rotation.
    pub leaf_rotation_jitter: Duration,
    /// Bounds on the cache's entries and on cached leaves (least recently used dropped).
    pub cache_max_entries: usize,
    pub leaf_max_entries: usize,
    /// Timeouts and caps of the HTTP API (this agent's, or its server's when embedded).
    pub http_limits: crate::http::HttpLimits,
    pub heartbeat: Duration,
    /// Periodic anti-entropy even when nothing changed.
    pub sync_interval: Duration,
    pub checks: checks::RunnerConfig,
    /// Where local services and checks are kept across restarts (`persist`); `None` keeps
    /// them in memory only (in-process tests, benchmarks). `meshd agent` requires one.
    pub data_dir: Option<PathBuf>,
    /// Set only for the agent a server embeds: where it reads the servers' internal secret,
    /// which it presents instead of an agent token (it runs in the server's process).
    pub server_secret: Option<ServerSecretSource>,
    /// The agent token (`meshd agent --token`): what the agent's own work (anti-entropy,
    /// heartbeats, watches) acts as when it has no `server_secret`; empty is anonymous.
    /// Changed at runtime with `PUT /v1/agent/token/agent`. Never logged.
    pub token: AgentToken,
    /// TLS to the servers (`--tls-ca-file` and a certificate, or auto-encrypt's); `None`
    /// dials them in plaintext.
    pub tls: Option<Arc<crate::tls::RpcTls>>,
}

/// The agent token: a `String` whose `Debug` never shows it (so `AgentConfig` derives `Debug`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgentToken(pub String);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// Reads the servers' internal secret for an embedded agent (`None` until the cluster has
/// replicated one). The secret is never printed: `Debug` shows only that a source is set.
#[derive(Clone)]
pub struct ServerSecretSource(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for ServerSecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecretSource(..)")
    }
}

impl AgentConfig {
    pub fn new(node: impl Into<String>, servers: Vec<String>) -> Self {
        Self {
            node: node.into(),
            datacenter: "dc1".into(),
            servers,
            http_addr: None,
            address: "127.0.0.1".into(),
            cache_ttl: Duration::from_secs(72 * 3600),
            leaf_rotation_jitter: Duration::from_secs(30),
            cache_max_entries: cache::DEFAULT_MAX_ENTRIES,
            leaf_max_entries: leaf::DEFAULT_MAX_LEAVES,
            http_limits: crate::http::HttpLimits::default(),
            heartbeat: Duration::from_secs(1),
            sync_interval: Duration::from_secs(60),
            checks: checks::RunnerConfig::default(),
            data_dir: None,
            server_secret: None,
            token: AgentToken::default(),
            tls: None,
        }
    }
}

/// Which of the agent's tokens (`PUT /v1/agent/token/:kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// What the agent's own work acts as (Consul's `agent`, formerly `acl_agent_token`).
    Agent,
    /// What requests without a token act as (Consul's `default`, formerly `acl_token`).
    Default,
}

impl TokenKind {
    /// The kind a path segment names (Consul's current and legacy names).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" | "acl_agent_token" => Some(Self::Agent),
            "default" | "acl_token" => Some(Self::Default),
            _ => None,
        }
    }
}

/// Errors starting an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be used (every variant names the path).
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
}

/// A running agent.
pub struct Agent {
    pub config: AgentConfig,
    pub conn: Arc<ServerConn>,
    pub cache: Arc<cache::Cache>,
    pub leaves: leaf::Leaves,
    pub local: Mutex<local::LocalState>,
    /// Whether a server answered recently.
    pub connected: watch::Sender<bool>,
    /// Local index the catalog was last brought up to by anti-entropy.
    pub synced: watch::Sender<u64>,
    /// Changes of the local state (blocking queries on `/v1/agent/*`).
    pub local_index: watch::Sender<u64>,
    /// Resolved ACL tokens of HTTP callers (`acl`).
    pub acl: acl::TokenCache,
    /// Woken when the agent's own tokens change: its watch streams restart with them.
    identity_changed: Notify,
    check_updates: mpsc::Sender<checks::CheckUpdate>,
    /// The data directory, when there is one.
    store: Option<persist::Store>,
    /// Serializes writes to the data directory, so the last snapshot taken is the last written.
    persist_lock: tokio::sync::Mutex<()>,
    sync_now: Notify,
    node_id: String,
    shutdown: watch::Sender<bool>,
}

/// Owns an agent's tasks.
pub struct AgentHandle {
    pub agent: Arc<Agent>,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops every task of the agent (check runners included).
    pub async fn shutdown(self) {
        self.agent.shutdown.send_replace(true);
        self.agent.local.lock().checks.clear();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A UUID-shaped node ID derived from the node name, stable across restarts.
fn node_id(name: &str) -> String {
    let a = crate::hash::fnv1a64(name.as_bytes());
    let b = crate::hash::fnv1a64(format!("{name}/node-id").as_bytes());
    let h = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Agent {
    /// Starts the agent; serves the HTTP API when `config.http_addr` is set.
    pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        let identity = Arc::new(AgentIdentity::new(
            config.token.0.clone(),
            config.server_secret.clone(),
        ));
        let conn = Arc::new(ServerConn::new(
            &config.servers,
            identity,
            config.tls.clone(),
        )?);
        // Read the data directory first: a directory that cannot be used stops the agent
        // before it binds anything.
        let (store, loaded) = match &config.data_dir {
            Some(dir) => {
                let store = persist::Store::open(dir)?;
                let loaded = store.load()?;
                (Some(store), loaded)
            }
            None => (None, persist::Loaded::default()),
        };
        let listener = match config.http_addr {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| AgentError::Bind {
                            addr: addr.to_string(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let (check_updates, mut check_rx) = mpsc::channel(256);
        let agent = Arc::new(Agent {
            node_id: node_id(&config.node),
            cache: Arc::new(cache::Cache::bounded(
                config.cache_ttl,
                config.cache_max_entries,
            )),
            leaves: leaf::Leaves::new(config.leaf_max_entries),
            // Index 1 before anything is synced, so `wait_synced` waits for the first pass
            // (which registers the node) even when nothing was registered locally.
            local: Mutex::new(local::LocalState {
                index: 1,
                ..Default::default()
            }),
            connected: watch::Sender::new(false),
            synced: watch::Sender::new(0),
            local_index: watch::Sender::new(0),
            acl: acl::TokenCache::default(),
            identity_changed: Notify::new(),
            check_updates,
            store,
            persist_lock: tokio::sync::Mutex::new(()),
            sync_now: Notify::new(),
            shutdown: watch::Sender::new(false),
            conn,
            config,
        });
        // Before any task runs: the first anti-entropy pass and the first answer of the API
        // must already see the restored services.
        agent.restore(loaded)?;
        let mut tasks = vec![
            tokio::spawn(agent.cache.clone().run(
                agent.conn.clone(),
                agent.connected.clone(),
                agent.shutdown_signal(),
            )),
            tokio::spawn(acl::watch(agent.clone())),
            tokio::spawn(sync::run(agent.clone())),
            tokio::spawn(sync::heartbeat(agent.clone())),
        ];
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(u) = check_rx.recv().await {
                let check_id = u.check_id.clone();
                let (changed, service) = {
                    let mut local = a.local.lock();
                    (local.apply_update(u), local.service_of_check(&check_id))
                };
                if changed {
                    a.local_changed();
                    if let Some(sid) = service.filter(|s| !s.is_empty())
                        && let Err(e) = a.persist(vec![sid]).await
                    {
                        tracing::warn!(check_id, error = %e, "cannot persist the check's new status");
                    }
                }
            }
        }));
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut shutdown = std::pin::pin!(a.shutdown_signal());
            let period = a.config.cache_ttl.min(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => { a.leaves.evict(a.config.cache_ttl); }
                    _ = &mut shutdown => return,
                }
            }
        }));
        let mut http_addr = None;
        if let Some(listener) = listener {
            http_addr = listener.local_addr().ok();
            let app = agent
                .router(true)
                .fallback(http::passthrough)
                .with_state(agent.clone());
            tasks.push(tokio::spawn(crate::http::serve(
                app,
                listener,
                agent.config.http_limits.clone(),
                agent.shutdown_signal(),
            )));
        }
        tracing::info!(node = %agent.config.node, servers = ?agent.config.servers, ?http_addr, "agent started");
        Ok(AgentHandle {
            agent,
            http_addr,
            tasks,
        })
    }

    /// Re-registers the services read from the data directory. A service whose record no
    /// longer validates is set aside like an undecodable file (see `persist`).
    fn restore(&self, loaded: persist::Loaded) -> Result<(), AgentError> {
        // Undecodable files were already set aside and logged by `Store::load`.
        let Some(store) = &self.store else {
            return Ok(());
        };
        let now = SystemTime::now();
        let mut restored = 0;
        for (path, rec) in loaded.services {
            let id = rec.service.id.clone();
            let result = self.local.lock().restore(
                &self.config.node,
                rec,
                &self.check_updates,
                &self.config.checks,
                now,
            );
            match result {
                Ok(()) => restored += 1,
                Err(e) => {
                    let reason = e.to_string();
                    let aside = store.set_aside(&path, &reason)?;
                    tracing::error!(
                        service_id = %id, file = %path.display(),
                        moved_to = %aside.moved_to.display(), %reason,
                        "cannot restore a persisted service; skipped it and set the file aside"
                    );
                }
            }
        }
        tracing::info!(
            dir = %store.dir().display(), services = restored,
            set_aside = loaded.set_aside.len(), "restored local services"
        );
        Ok(())
    }

    /// Writes the current state of services `ids` to the data directory (deleting the file of
    /// those no longer registered). A no-op without a data directory. Snapshots are taken
    /// under `persist_lock`, so concurrent callers write in the order they read.
    pub async fn persist(&self, ids: Vec<String>) -> Result<(), persist::PersistError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _guard = self.persist_lock.lock().await;
        let records: Vec<(String, Option<persist::PersistedService>)> = {
            let local = self.local.lock();
            ids.into_iter()
                .map(|id| {
                    let r = local.record(&id);
                    (id, r)
                })
                .collect()
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            for (id, rec) in records {
                match rec {
                    Some(r) => store.save(&r)?,
                    None => {
                        store.remove(&id)?;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| persist::PersistError::Task(e.to_string()))?
    }

    /// The data directory, when the agent has one.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.store.as_ref().map(persist::Store::dir)
    }

    /// The agent's routes (`/v1/agent/*`, plus cached health reads when `cached_health`).
    pub fn router(self: &Arc<Self>, cached_health: bool) -> axum::Router<Arc<Agent>> {
        http::routes(cached_health)
    }

    /// This agent's catalog node.
    pub fn node(&self) -> Node {
        Node {
            id: self.node_id.clone(),
            node: self.config.node.clone(),
            address: self.config.address.clone(),
            datacenter: self.config.datacenter.clone(),
            meta: Default::default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Resolves when shutdown starts.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Replaces the agent token (its own work acts with it from now on: the watch streams
    /// reconnect with it and anti-entropy runs again) or the default token.
    pub fn set_token(&self, kind: TokenKind, token: String) {
        let identity = self.conn.identity();
        match kind {
            TokenKind::Agent => {
                identity.set_token(token);
                self.identity_changed.notify_waiters();
                self.cache.reconnect();
                self.sync_now.notify_one();
            }
            TokenKind::Default => identity.set_default_token(token),
        }
        tracing::info!(?kind, "agent token changed");
    }

    /// Records a local change: wakes blocking queries and the anti-entropy sync.
    pub fn local_changed(&self) {
        let index = self.local.lock().index;
        self.local_index.send_replace(index);
        self.sync_now.notify_one();
    }

    /// Waits until the catalog reflects the local state (tests, readiness).
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let want = self.local.lock().index;
        self.sync_now.notify_one();
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s >= want))
            .await
            .is_ok()
    }
}
