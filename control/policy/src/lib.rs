//! The mesh's policy and wire contract, shared by the control plane (`mesh-control`), the data
//! plane (`meshproxy`), the CLI and the fuzz targets.
//!
//! Why a crate of its own: the proxy needs the SPIFFE ID type, the intention matcher, the
//! request normalization and the JSON shapes the agent serves, and nothing of the servers
//! (openraft, redb, tonic, axum). Keeping these here means one implementation of each decision,
//! linked by every caller, and a proxy that does not carry the control plane's dependency tree.
//!
//! Pure code, no I/O and no clocks.

#![deny(missing_docs)]

#[cfg(feature = "acl")]
pub mod acl;
pub mod authorize;
pub mod config_entries;
pub mod decode;
pub mod duration;
pub mod error_chain;
pub mod explanation;
pub mod filter;
pub mod hash;
pub mod intentions;
pub mod model;
#[cfg(feature = "spanned")]
pub mod spanned;
pub mod spiffe;
pub mod wire;
