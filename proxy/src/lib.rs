//! `meshproxy`: the data plane of the mesh, a sidecar proxy in the style of Consul Connect's
//! built-in proxy.
//!
//! Inbound, it terminates mutual TLS on the sidecar's public port, reads the client's SPIFFE ID
//! from its certificate, authorizes it in-process against the intentions of the local service
//! and only then connects to the application. Outbound, it listens on one loopback port per
//! upstream and opens mutual TLS to a healthy instance of the upstream, refusing any server that
//! does not present exactly the upstream's SPIFFE ID.
//!
//! Everything it needs (its sidecar registration, leaf certificate, CA roots, intentions and the
//! healthy instances of its upstreams) comes from the local agent's HTTP API as blocking
//! queries, so certificate rotation and intention changes apply without restarts.
//!
//! Static mode (`meshproxy run --config FILE`, [`static_config`]) runs the same data path
//! without a control plane: certificates, trust bundle and allowed source IDs come from files
//! (e.g. written by SPIRE), polled for changes.
//!
//! Module map: [`config`] (CLI), [`app`] (wiring), [`agent`] (agent client), [`static_config`]
//! (config file and file watcher of static mode), [`identity`] and
//! [`tls`] (certificate store and the SPIFFE verifier), [`authz`] (pure decisions),
//! [`policy_feed`] (agent mode's policy from intentions, roots and protocol),
//! [`inbound`] / [`outbound`] (listeners' per-connection handlers), [`public_listeners`]
//! (the mTLS listeners to open: one, or several named ones in static mode), [`serve`] (the one
//! accept loop they run in), [`copy`] (byte pump), [`connections`] (live inbound
//! connections, re-checked on policy change), [`drain`] (graceful shutdown), [`admin`] and
//! [`metrics`] (observability), [`transport`] (socket options and the socket factory), [`tls_stream`] (the TLS
//! stream on rustls's unbuffered API, over our own buffers).

// `deny`, not `forbid`: an item that needs `unsafe` allows it locally, with a reason and a
// SAFETY note (none does today).
#![deny(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod authz;
pub mod cipher_suites;
pub mod config;
pub mod connections;
pub mod copy;
pub mod drain;
pub mod handoff;
pub mod identity;
pub mod inbound;
pub mod l7;
pub mod metrics;
pub mod outbound;
pub mod policy_feed;
pub mod public_listeners;
pub mod resident;
pub mod serve;
pub mod static_config;
pub mod tls;
pub mod tls_stream;
pub mod transparent;
pub mod transport;
pub mod verified_chains;

/// The build script's name patterns (`link/patterns.rs`), compiled here only for their tests.
#[cfg(test)]
#[path = "../link/patterns.rs"]
mod link_patterns;
