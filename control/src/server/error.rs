//! Errors of the server's operations, with the HTTP status and gRPC code each maps to.
//!
//! Raft failures keep openraft's own error types (as openraft's `RaftError<C, E>` keeps the
//! API error apart from the fatal one), so a caller can tell a lost leadership from a stopped
//! Raft without parsing text; their messages read as before (`raft: …`).

use axum::http::StatusCode;
use openraft::ConfigError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};

use crate::ca::CaError;
use crate::fsm::ApplyError;
use crate::http::ApiError;
use crate::raft::{MeshNode, NodeId};
use crate::seal::root::RootKeyError;
use crate::store::StoreError;

/// What a proposal (a write or a membership change) can meet in openraft.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, MeshNode>>;
/// What the leader's ReadIndex check can meet in openraft.
pub type ReadIndexError = RaftError<NodeId, CheckIsLeaderError<NodeId, MeshNode>>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("No cluster leader")]
    NoLeader,
    /// This server holds no internal secret yet, so it cannot call the leader's servers-only
    /// methods (nor answer them); the first leader writes it at bootstrap.
    #[error("cluster secret not replicated yet")]
    SecretNotReplicated,
    /// The call to the leader failed (not an answer of the leader's: see [`Self::Leader`]).
    #[error("forwarding to leader {leader} failed: {reason}")]
    Forward {
        leader: String,
        reason: ForwardError,
    },
    /// A proposal failed in Raft (other than leadership moving, which is retried).
    #[error("raft: {0}")]
    Write(#[source] Box<WriteError>),
    /// The leader could not confirm a read index.
    #[error("raft: {0}")]
    ReadIndex(#[source] Box<ReadIndexError>),
    /// Raft could not start (storage or state machine failure).
    #[error("raft: {0}")]
    Start(#[source] Box<Fatal<NodeId>>),
    /// The Raft timings in the server configuration are inconsistent.
    #[error("raft: {0}")]
    Config(#[source] Box<ConfigError>),
    /// This server did not apply a confirmed read index within the write timeout.
    #[error("raft: timed out waiting to apply index {index}")]
    ApplyTimeout { index: u64 },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA root's key does not fit this server's encryption key (see `crate::seal::root`).
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RPC TLS: {0}")]
    Tls(#[source] crate::tls::RpcTlsError),
    #[error("embedded agent: {0}")]
    Agent(#[from] Box<crate::agent::AgentError>),
    /// A request to forward did not encode (a bug, not the caller's fault).
    #[error("cannot encode the request for the leader: {0}")]
    Encode(#[source] serde_json::Error),
    /// The request is refused before it reaches Raft.
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("id {id:?} / address {address:?} was not found in the Raft configuration")]
    PeerNotFound { id: String, address: String },
    /// The leader refused a forwarded operation: its status and message, as it answered them
    /// (the leader's typed error does not cross the wire; its status code does).
    #[error("{message}")]
    Leader {
        status: LeaderRefusal,
        message: String,
    },
}

/// Why a call to the leader did not come back with an answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No channel to the leader's address.
    #[error("{0}")]
    Connect(#[from] tonic::transport::Error),
    /// The call failed in transport or the leader could not run it (its gRPC status).
    #[error("{}", .0.message())]
    Status(tonic::Status),
    /// The leader's reply did not decode.
    #[error("malformed reply: {0}")]
    Reply(#[from] serde_json::Error),
    /// Fault injection (tests) cuts this server off from the leader.
    #[error("partitioned by fault injection")]
    FaultInjected,
}

/// What a leader's refusal of a forwarded operation meant, from its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderRefusal {
    BadRequest,
    NotFound,
    Conflict,
}

/// A request refused by this server's own checks, before anything is proposed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("CA is not initialized yet")]
    CaNotInitialized,
    #[error("cannot remove the last voter")]
    LastVoter,
    #[error(
        "unsupported root key {key_type}/{key_bits}: the built-in CA issues ECDSA P-256 (PrivateKeyType \"ec\", PrivateKeyBits 256)"
    )]
    UnsupportedRootKey { key_type: String, key_bits: u64 },
    #[error("unknown CA provider {provider:?} (available: {available:?})")]
    UnknownCaProvider {
        provider: String,
        available: &'static str,
    },
    #[error(transparent)]
    LeafTtl(crate::fsm::LeafTtlError),
    #[error(transparent)]
    SuppliedRoot(#[from] crate::fsm::SuppliedRootError),
    #[error(
        "cannot sign a leaf for datacenter {requested:?}: this server signs for datacenter {local:?} only"
    )]
    ForeignDatacenter { requested: String, local: String },
}

impl ServerError {
    /// Consul's status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ServerError::Apply(e) => e.http_status(),
            ServerError::Ca(_) | ServerError::Refused(_) => 400,
            ServerError::PeerNotFound { .. } => 404,
            ServerError::Leader { status, .. } => match status {
                LeaderRefusal::BadRequest => 400,
                LeaderRefusal::NotFound => 404,
                LeaderRefusal::Conflict => 409,
            },
            ServerError::NoLeader | ServerError::Forward { .. } => 500,
            _ => 500,
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        match self.http_status() {
            400 => tonic::Status::invalid_argument(self.to_string()),
            404 => tonic::Status::not_found(self.to_string()),
            409 => tonic::Status::already_exists(self.to_string()),
            _ if matches!(
                self,
                ServerError::NoLeader
                    | ServerError::Forward { .. }
                    | ServerError::SecretNotReplicated
            ) =>
            {
                tonic::Status::unavailable(self.to_string())
            }
            _ => tonic::Status::internal(self.to_string()),
        }
    }

    /// Rebuilds an error from a forwarded call's status.
    pub fn from_status(leader: &str, s: tonic::Status) -> Self {
        let status = match s.code() {
            tonic::Code::InvalidArgument => LeaderRefusal::BadRequest,
            tonic::Code::NotFound => LeaderRefusal::NotFound,
            tonic::Code::AlreadyExists => LeaderRefusal::Conflict,
            _ => {
                return ServerError::Forward {
                    leader: leader.to_string(),
                    reason: ForwardError::Status(s),
                };
            }
        };
        ServerError::Leader {
            status,
            message: s.message().to_string(),
        }
    }
}

/// A server error answered over HTTP: Consul's status, the error's text.
impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        Self {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: e.to_string(),
        }
    }
}
