//! openraft wiring: the type configuration, the server identity carried in the membership, and
//! the gRPC transport between servers (with fault injection for partition tests).

mod network;
pub mod secret;
mod service;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use network::{Channels, Faults, MAX_MESSAGE, Network, NetworkFactory};
pub use service::RaftGrpc;

use crate::fsm::{ApplyResult, Command};

/// A server as recorded in the Raft membership: its name and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshNode {
    pub name: String,
    /// gRPC address (`--bind`): Raft, forwarding and the agent API.
    pub rpc_addr: String,
    /// HTTP API address (`--http-addr`).
    pub http_addr: String,
}

impl fmt::Display for MeshNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// Raft types of the mesh servers.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = u64,
        Node = MeshNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;

/// The Raft node ID of a server, derived from its name so that a wiped server that comes back
/// under the same name is the same member and catches up instead of becoming a stranger.
pub fn node_id(name: &str) -> NodeId {
    crate::hash::fnv1a64(name.as_bytes())
}
