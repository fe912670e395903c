//! Control plane of the mesh: the replicated state (catalog, intentions, CA), the Raft servers
//! that hold it, the built-in SPIFFE certificate authority and the operator CLI.
//!
//! Pure decision code (`intentions`, `fsm`, `ca` validation) does no I/O; the servers in
//! `server` wire it to openraft, redb and tonic.

pub mod ca;
pub mod duration;
pub mod intentions;
pub mod model;
pub mod spiffe;
pub mod fsm;
pub mod hash;
pub mod raft;
pub mod store;

/// Generated gRPC types and services (`proto/mesh.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("mesh.v1");
}
pub mod http;
pub mod server;
pub mod cli;
