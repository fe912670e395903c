//! Raft transport: openraft's messages as JSON inside gRPC unary calls, one lazily connected
//! HTTP/2 channel per peer.
//!
//! `Faults` lets a test cut a server off from chosen peers at this layer (both directions are
//! cut by setting it on both sides); everything above it, including write forwarding, goes
//! through the same check, so a partitioned minority really cannot commit.
//!
//! Every call carries this server's internal secret once it holds one (`super::secret`); the
//! receiver checks it (`super::service`).

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::{MeshNode, NodeId, TypeConfig};
use crate::proto::RaftPayload;
use crate::proto::raft_client::RaftClient;
use crate::store::SharedState;

/// Largest gRPC message between servers (snapshot chunks are smaller; see `server::raft_config`).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Peers this server must not talk to (test fault injection).
#[derive(Debug, Default)]
pub struct Faults {
    blocked: RwLock<HashSet<NodeId>>,
}

impl Faults {
    pub fn block(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.blocked.write().extend(peers);
    }

    pub fn heal(&self) {
        self.blocked.write().clear();
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked.read().contains(&peer)
    }
}

/// Channels to peers, shared by Raft replication and by forwarding; over TLS (verifying
/// each peer is a server of this datacenter) when the server has it.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<crate::tls::RpcTls>>,
}

impl Channels {
    pub fn new(tls: Option<Arc<crate::tls::RpcTls>>) -> Self {
        Self {
            inner: Arc::default(),
            tls,
        }
    }

    /// A lazily connected channel to `addr` (`host:port`).
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = crate::tls::transport::channel(&endpoint, self.tls.as_ref());
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Creates a `Network` per peer for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    pub channels: Channels,
    pub faults: Arc<Faults>,
    /// This server's state, for the internal secret its calls present.
    pub state: SharedState,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &MeshNode) -> Self::Network {
        Network {
            target,
            addr: node.rpc_addr.clone(),
            channels: self.channels.clone(),
            faults: self.faults.clone(),
            state: self.state.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Network {
    target: NodeId,
    addr: String,
    channels: Channels,
    faults: Arc<Faults>,
    state: SharedState,
}

type RpcErr<E> = RPCError<NodeId, MeshNode, RaftError<NodeId, E>>;

impl Network {
    async fn call<Req, Resp, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        which: Which,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "partitioned by fault injection",
                ),
            )));
        }
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .channels
            .get(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut request = tonic::Request::new(RaftPayload { json });
        request.set_timeout(option.hard_ttl());
        super::secret::attach_held(&mut request, &self.state);
        let reply = match which {
            Which::Append => client.append_entries(request).await,
            Which::Vote => client.vote(request).await,
            Which::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().json)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Which {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(&rpc, &option, Which::Append).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(&rpc, &option, Which::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(&rpc, &option, Which::Vote).await
    }
}
