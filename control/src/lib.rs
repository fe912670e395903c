//! Control plane of the mesh: the replicated state (catalog, intentions, CA), the Raft servers
//! that hold it, the built-in SPIFFE certificate authority and the operator CLI.
//!
//! Pure decision code (`intentions`, `fsm`, `ca` validation) does no I/O; the servers in
//! `server` wire it to openraft, redb and tonic.

pub mod agent;
pub mod ca;
pub mod fsm;
pub mod raft;
pub mod store;

/// The policy and wire contract live in `mesh-policy` (shared with the proxy); re-exported so
/// `crate::model`, `crate::intentions`, … read the same everywhere in the control plane.
pub use mesh_policy::{
    authorize, config_entries, duration, error_chain, hash, intentions, model, spiffe, wire,
};

/// Generated gRPC types and services (`proto/mesh.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("mesh.v1");
}
pub mod cli;
pub mod http;
pub mod server;
