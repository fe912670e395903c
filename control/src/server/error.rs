//! Errors of the server's operations, with the HTTP status and gRPC code each maps to.

use axum::http::StatusCode;

use crate::ca::CaError;
use crate::fsm::ApplyError;
use crate::http::ApiError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("No cluster leader")]
    NoLeader,
    #[error("forwarding to leader {leader} failed: {message}")]
    Forward { leader: String, message: String },
    #[error("raft: {0}")]
    Raft(String),
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
}

impl ServerError {
    /// Consul's status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ServerError::Apply(e) => e.http_status(),
            ServerError::Ca(_) | ServerError::BadRequest(_) => 400,
            ServerError::NotFound(_) => 404,
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
            tonic::Code::AlreadyExists => {
                ServerError::Apply(ApplyError::Conflict(s.message().to_string()))
            }
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
