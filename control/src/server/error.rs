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
use crate::store::StoreError;

/// What a proposal (a write or a membership change) can meet in openraft.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, MeshNode>>;
/// What the leader's ReadIndex check can meet in openraft.
pub type ReadIndexError = RaftError<NodeId, CheckIsLeaderError<NodeId, MeshNode>>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("No cluster leader")]
    NoLeader,
    #[error("forwarding to leader {leader} failed: {message}")]
    Forward { leader: String, message: String },
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded agent: {0}")]
    Agent(#[from] Box<crate::agent::AgentError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A conflict the leader reported over gRPC (its message); a local one is `Apply`.
    #[error("{0}")]
    Conflict(String),
}

impl ServerError {
    /// Consul's status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ServerError::Apply(e) => e.http_status(),
            ServerError::Ca(_) | ServerError::BadRequest(_) => 400,
            ServerError::NotFound(_) => 404,
            ServerError::Conflict(_) => 409,
            ServerError::NoLeader | ServerError::Forward { .. } => 500,
            _ => 500,
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        match self.http_status() {
            400 => tonic::Status::invalid_argument(self.to_string()),
            404 => tonic::Status::not_found(self.to_string()),
            409 => tonic::Status::already_exists(self.to_string()),
            _ if matches!(self, ServerError::NoLeader | ServerError::Forward { .. }) => {
                tonic::Status::unavailable(self.to_string())
            }
            _ => tonic::Status::internal(self.to_string()),
        }
    }

    /// Rebuilds an error from a forwarded call's status.
    pub fn from_status(leader: &str, s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument => ServerError::BadRequest(s.message().to_string()),
            tonic::Code::NotFound => ServerError::NotFound(s.message().to_string()),
            tonic::Code::AlreadyExists => ServerError::Conflict(s.message().to_string()),
            _ => ServerError::Forward {
                leader: leader.to_string(),
                message: s.message().to_string(),
            },
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
