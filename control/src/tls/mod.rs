//! The control plane's own PKI (issue 13): a CA apart from the mesh's SPIFFE CA, as Consul keeps
//! its agent CA (`consul tls ca create`) apart from Connect's, and the server and client
//! certificates it issues for the servers' and agents' RPC. Servers are named
//! `server.<dc>.<domain>` so an outgoing connection can verify it reached a server of its
//! datacenter (Consul's `verify_server_hostname`), and a client certificate (`client.<dc>.…`)
//! cannot pass as one.
//!
//! [`pki`] makes the certificates (pure: PEM in, PEM out); `meshctl tls` writes them to files.

pub mod pki;
