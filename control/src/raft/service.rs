//! The receiving side of the Raft transport: decodes openraft's messages and hands them to the
//! local Raft node; its answer (or Raft error) goes back as JSON.
//!
//! A server holding the internal secret accepts only calls presenting it (`PermissionDenied`
//! otherwise); one that holds none yet accepts the leader's calls that bring it
//! (`super::secret::require_if_held`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::Raft;
use crate::proto::RaftPayload;
use crate::proto::raft_server;
use crate::store::SharedState;

/// gRPC service for openraft's three RPCs.
#[derive(Clone)]
pub struct RaftGrpc {
    pub raft: Raft,
    /// This server's state, for the internal secret callers must present.
    pub state: SharedState,
}

/// Decodes an openraft request, hands it to the local node's `rpc`, and encodes its answer
/// (a Raft error included: the caller's openraft reads it as the remote's).
async fn relay<Req, Resp, Fut>(
    state: &SharedState,
    request: Request<RaftPayload>,
    rpc: impl FnOnce(Req) -> Fut,
) -> Result<Response<RaftPayload>, Status>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Resp>,
{
    super::secret::require_if_held(state, &request)?;
    let req = serde_json::from_slice(&request.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))?;
    let json = serde_json::to_vec(&rpc(req).await).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { json }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        relay(&self.state, request, |rpc| self.raft.append_entries(rpc)).await
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        relay(&self.state, request, |rpc| self.raft.vote(rpc)).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        relay(&self.state, request, |rpc| self.raft.install_snapshot(rpc)).await
    }
}
