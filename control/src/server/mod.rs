//! `meshd server`: one Raft member holding the replicated state, serving the gRPC API (Raft,
//! cluster membership and forwarding, the agent API) and the HTTP API.
//!
//! Writes go through `Server::write`, which proposes on the leader or forwards to it; reads are
//! linearizable through `Server::read_barrier` (ReadIndex on the leader) unless `?stale`.

pub mod acl;
pub mod api;
mod auto_encrypt;
mod bootstrap;
mod config;
mod error;
mod grpc;
mod grpc_authz;
mod intention_sets;
mod leader;
pub mod liveness;
mod ops;
mod topic_hub;
mod topics;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AclConfig, ServerConfig};
pub use error::{ForwardError, LeaderRefusal, Refused, ServerError};
pub use ops::PeerEntry;

use crate::ca::{BuiltinProvider, CaProvider, cert_der_from_pem};
use crate::raft::{Channels, Faults, MeshNode, NetworkFactory, NodeId, Raft, node_id};
use crate::store::{self, SharedState};

pub use crate::data_dir::AGENT_DIR;

/// A running server.
pub struct Server {
    pub id: NodeId,
    pub me: MeshNode,
    pub config: ServerConfig,
    pub raft: Raft,
    pub state: SharedState,
    /// Test fault injection on this server's outgoing RPCs.
    pub faults: Arc<Faults>,
    pub(crate) channels: Channels,
    pub(crate) ca: Arc<dyn CaProvider>,
    /// Servers seen through discovery (for `--bootstrap-expect`).
    pub(crate) known: Mutex<BTreeMap<NodeId, MeshNode>>,
    pub(crate) liveness: liveness::Liveness,
    /// Resolves request tokens (cached per ACL table index).
    pub(crate) acl_resolver: acl::AclResolver,
    /// TLS of the RPC port, both ways (`None`: plaintext).
    pub(crate) tls: Option<Arc<crate::tls::RpcTls>>,
    /// This server's encryption-key check value, exchanged in `Cluster.Hello` (`crate::seal`).
    pub(crate) seal_check: String,
    /// The watched topics, rendered once per write that moves them (`topic_hub`).
    pub(crate) topics: Arc<topic_hub::TopicHub>,
    /// Compiled intention sets per destination, for the intentions API.
    pub(crate) intention_sets: intention_sets::IntentionSets,
    /// Why the server stopped by itself (see [`Server::fail`]).
    fatal: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
}

/// Owns a server's tasks; `shutdown` stops them and releases the data directory.
pub struct ServerHandle {
    pub server: Arc<Server>,
    /// The agent every server embeds (serves `/v1/agent/*`).
    pub agent: Arc<crate::agent::Agent>,
    agent_handle: crate::agent::AgentHandle,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the store, binds the listeners and starts Raft, the APIs and discovery.
    pub async fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        let (log_store, sm) = store::open(&config.data_dir)?;
        let state = sm.shared();
        let tls = rpc_tls(&config, &state)?;
        let (rpc_listener, rpc_addr) = bind(config.bind).await?;
        let (http_listener, http_addr) = bind(config.http_addr).await?;
        let id = node_id(&config.node);
        let me = MeshNode {
            name: config.node.clone(),
            rpc_addr: rpc_addr.to_string(),
            http_addr: http_addr.to_string(),
        };
        let faults = Arc::new(Faults::default());
        let channels = Channels::new(tls.clone());
        let network = NetworkFactory {
            channels: channels.clone(),
            faults: faults.clone(),
            state: state.clone(),
        };
        let raft_config = raft_config(&config)?;
        let raft = Raft::new(id, raft_config, network, log_store, sm)
            .await
            .map_err(|e| ServerError::Start(Box::new(e)))?;
        // The stored state (snapshot and committed log) is applied now: a server whose
        // encryption key does not open the active root's key stops here, not at its first
        // signature.
        let active = state.read(|s| s.ca.active().cloned());
        if let Some(Err(e)) =
            active.map(|r| crate::seal::root::open(config.encrypt_key.as_ref(), &r).map(drop))
        {
            let _ = raft.shutdown().await;
            return Err(e.into());
        }
        let (shutdown, _) = watch::channel(false);
        let config_key = config.encrypt_key.clone();
        let topics = Arc::new(topic_hub::TopicHub::new(state.clone()));
        let server = Arc::new(Server {
            id,
            me: me.clone(),
            config,
            raft: raft.clone(),
            state,
            faults,
            channels,
            ca: Arc::new(BuiltinProvider),
            known: Mutex::new(BTreeMap::from([(id, me)])),
            liveness: liveness::Liveness::default(),
            acl_resolver: acl::AclResolver::default(),
            tls,
            seal_check: crate::seal::check_value(config_key.as_ref()),
            topics,
            intention_sets: intention_sets::IntentionSets::default(),
            fatal: Mutex::new(None),
            shutdown,
        });
        tracing::info!(node = %server.me.name, id, %rpc_addr, %http_addr, "server started");

        let grpc_task = tokio::spawn(grpc::serve(
            server.clone(),
            crate::tls::transport::incoming(rpc_listener, server.tls.clone()),
        ));
        let mut agent_config =
            crate::agent::AgentConfig::new(server.me.name.clone(), vec![rpc_addr.to_string()]);
        agent_config.datacenter = server.config.datacenter.clone();
        agent_config.address = rpc_addr.ip().to_string();
        agent_config.leaf_rotation_jitter = server.config.leaf_rotation_jitter;
        agent_config.http_limits = server.config.http_limits.clone();
        // It dials this server with the server's own certificate.
        agent_config.tls = server.tls.clone();
        // The embedded agent's services survive a restart too, in a directory of its own.
        agent_config.data_dir = Some(server.config.data_dir.join(AGENT_DIR));
        // The embedded agent runs in this process: it presents the servers' internal secret
        // (management rights on the Catalog methods) instead of an agent token.
        let secret_state = server.state.clone();
        agent_config.server_secret = Some(crate::agent::ServerSecretSource(Arc::new(move || {
            crate::raft::secret::held(&secret_state).map(|s| s.expose().to_string())
        })));
        let agent_handle = crate::agent::Agent::start(agent_config)
            .await
            .map_err(|e| ServerError::Agent(Box::new(e)))?;
        let agent = agent_handle.agent.clone();
        let app = agent
            .router(false)
            .with_state(agent.clone())
            .merge(api::router(server.clone()))
            .fallback(crate::http::not_found);
        let tasks = vec![
            grpc_task,
            tokio::spawn(crate::http::serve(
                app,
                http_listener,
                agent.config.http_limits.clone(),
                server.shutdown_signal(),
            )),
            tokio::spawn(bootstrap::run(server.clone())),
            tokio::spawn(leader::run(server.clone())),
            tokio::spawn(topic_hub::run(
                server.topics.clone(),
                server.shutdown_signal(),
            )),
        ];
        Ok(ServerHandle {
            server,
            agent,
            agent_handle,
            rpc_addr,
            http_addr,
            tasks,
        })
    }

    /// Resolves when shutdown starts.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops the server for a reason it cannot run with (e.g. the cluster it would join uses
    /// another encryption key): logs it, keeps it for [`Server::fatal_error`], and starts
    /// shutdown.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "stopping the server");
        *self.fatal.lock() = Some(reason);
        self.shutdown.send_replace(true);
    }

    /// Whether a server that greets this one (`Cluster.Hello`) with key-check value `check`
    /// holds the same encryption key; one that does not is not counted toward bootstrap (it
    /// sees the mismatch in the reply and stops), and the refusal is logged here.
    pub(crate) fn same_key_as(&self, peer: &crate::proto::ServerInfo, check: &str) -> bool {
        match crate::seal::check_peer(&self.seal_check, check) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(peer = %peer.rpc_addr, reason = %e, "ignoring a server with another encryption key");
                false
            }
        }
    }

    /// Why the server stopped by itself, if it did.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    /// This server's view of readiness: a leader is known and an active CA root is applied
    /// here, so leaves can be signed and intentions carry the trust domain. `None` until then.
    pub fn readiness(&self) -> Option<Readiness> {
        let trust_domain = self.state.read(|s| {
            s.ca.active()
                .is_some()
                .then(|| s.ca.trust_domain.clone())
                .filter(|td| !td.is_empty())
        })?;
        let m = self.raft.metrics().borrow().clone();
        let leader = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())?;
        Some(Readiness {
            leader_rpc_addr: leader.rpc_addr,
            trust_domain,
        })
    }

    /// Resolves once [`Server::readiness`] is `Some` (it may never on a server whose peers do
    /// not come: callers race it with their own shutdown).
    pub async fn wait_ready(&self) -> Readiness {
        let mut applied = self.state.subscribe();
        let mut metrics = self.raft.metrics();
        // Each round waits for a new applied index or Raft metrics change; no fixed count.
        loop {
            if let Some(r) = self.readiness() {
                return r;
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { std::future::pending::<()>().await },
                r = metrics.changed() => if r.is_err() { std::future::pending::<()>().await },
            }
        }
    }
}

/// What [`Server::wait_ready`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub leader_rpc_addr: String,
    pub trust_domain: String,
}

impl ServerHandle {
    /// Stops the APIs and Raft and waits for every task, so the data directory can be reopened.
    pub async fn shutdown(self) {
        self.agent_handle.shutdown().await;
        self.server.shutdown.send_replace(true);
        let _ = self.server.raft.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The RPC port's TLS from the configured files; with auto-encrypt allowed, agent
/// certificates under the mesh CA's current roots are accepted too.
fn rpc_tls(
    config: &ServerConfig,
    state: &SharedState,
) -> Result<Option<Arc<crate::tls::RpcTls>>, ServerError> {
    if config.auto_encrypt_allow_tls && !config.acl.enabled {
        return Err(ServerError::Tls(
            crate::tls::RpcTlsError::AutoEncryptNeedsAcls,
        ));
    }
    let Some(files) = &config.tls else {
        if config.auto_encrypt_allow_tls {
            return Err(ServerError::Tls(
                crate::tls::RpcTlsError::AutoEncryptNeedsTls,
            ));
        }
        return Ok(None);
    };
    let mesh_roots = config.auto_encrypt_allow_tls.then(|| {
        let state = state.clone();
        let roots: crate::tls::MeshRoots = Arc::new(move |held| {
            state.read(|s| {
                // Parsed only when the roots changed since `held`.
                (held != Some(s.tables.roots)).then(|| {
                    let certs = s.ca.roots.iter();
                    let certs = certs.filter_map(|r| cert_der_from_pem(&r.root.root_cert).ok());
                    (s.tables.roots, certs.collect())
                })
            })
        });
        roots
    });
    crate::tls::RpcTls::server(files, &config.datacenter, mesh_roots)
        .map(Some)
        .map_err(ServerError::Tls)
}

/// Binds `addr` and returns the listener with the address it got (the port, when `addr` asked
/// for any).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let error = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

fn raft_config(c: &ServerConfig) -> Result<Arc<openraft::Config>, ServerError> {
    let config = openraft::Config {
        cluster_name: "mesh".to_string(),
        heartbeat_interval: c.heartbeat.as_millis() as u64,
        election_timeout_min: c.election_timeout_min.as_millis() as u64,
        election_timeout_max: c.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_threshold),
        max_in_snapshot_log_to_keep: (c.snapshot_threshold / 10).max(10),
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| ServerError::Config(Box::new(e)))?,
    ))
}
