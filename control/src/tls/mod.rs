//! The control plane's own PKI and transport security (issue 13): a CA apart from the mesh's
//! SPIFFE CA, as Consul keeps its agent CA (`consul tls ca create`) apart from Connect's, the
//! server and client certificates it issues, and mutual TLS on the servers' RPC port. Servers
//! are named `server.<dc>.<domain>` so an outgoing connection can verify it reached a server of
//! its datacenter (Consul's `verify_server_hostname`), and a client certificate
//! (`client.<dc>.…`) cannot pass as one.
//!
//! * [`pki`] makes the certificates (pure: PEM in, PEM out); `meshctl tls` writes them to files.
//! * [`rpc`] loads the operator's files into the rustls configurations of both ends.
//! * [`transport`] accepts and dials RPC connections with them.
//! * [`peer`] decides, per connection, who the peer is and which gRPC services admit it.

pub mod peer;
pub mod pki;
pub mod rpc;
pub mod transport;

pub use peer::{Admit, Admits, Peer, RpcPeer};
pub use rpc::{MeshRoots, RpcTls, RpcTlsError, TlsFiles};
