//! Who is at the other end of an RPC connection, and which gRPC services admit them: the
//! decision that keeps agents (and anyone else) out of Raft and cluster membership. Pure: the
//! certificate is read once per connection by `tls::incoming`, the decision is made per call
//! by [`Admit`].
//!
//! | service | admits |
//! |---|---|
//! | `Raft`, `Cluster` (membership, join, forwarded writes, read index) | servers only: a certificate naming `server.<dc>.<domain>` from the agent CA |
//! | `Catalog` (the agents' API: registration, watches, leaf signing) | servers and agents (any certificate the CA issued, or an auto-encrypt agent certificate) |
//! | `AutoEncrypt.Sign` | also a TLS connection without a certificate, when the server allows auto-encrypt: it is how an agent gets one |
//!
//! Without TLS (loopback-only setups) every connection is [`Peer::Plaintext`] and admitted;
//! the token and the servers' internal secret still apply. Consul allows the same split
//! (`verify_incoming` for RPC, `verify_server_hostname` for server-to-server).

use tonic::service::Interceptor;
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pki::{DEFAULT_DOMAIN, Role, role_name};

/// The peer of one RPC connection, decided once after its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No TLS on this port (loopback-only setups).
    Plaintext,
    /// TLS without a client certificate (only where auto-encrypt is allowed).
    Anonymous,
    /// A server of this datacenter (`server.<dc>.<domain>` from the agent CA).
    Server,
    /// Any other certificate the agent CA issued (an agent's `-client` certificate).
    Client,
    /// An agent certificate the servers issued through auto-encrypt, for `node`.
    Agent { node: String },
}

impl Peer {
    fn describe(&self) -> &'static str {
        match self {
            Peer::Plaintext => "a plaintext connection",
            Peer::Anonymous => "a TLS connection without a certificate",
            Peer::Server => "a server certificate",
            Peer::Client => "a client certificate",
            Peer::Agent { .. } => "an auto-encrypt agent certificate",
        }
    }
}

/// Who a gRPC service admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    Servers,
    ServersAndAgents,
    /// Agents without a certificate too (auto-encrypt's signing call).
    Anyone,
}

impl Admits {
    /// Whether `peer` may call a service admitting `self`.
    pub fn allows(self, peer: &Peer) -> bool {
        match (self, peer) {
            (_, Peer::Plaintext | Peer::Server) => true,
            (Admits::Servers, _) => false,
            (Admits::ServersAndAgents, Peer::Anonymous) => false,
            (Admits::ServersAndAgents | Admits::Anyone, _) => true,
        }
    }

    fn requirement(self, dc: &str) -> String {
        match self {
            Admits::Servers => format!(
                "a server certificate ({})",
                role_name(Role::Server, dc, DEFAULT_DOMAIN)
            ),
            Admits::ServersAndAgents => "a certificate from the agent CA".to_string(),
            Admits::Anyone => "TLS".to_string(),
        }
    }
}

/// Why a connection's certificate makes no peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    #[error("the peer certificate does not parse: {0}")]
    Unparsable(String),
    #[error(
        "the peer certificate is a mesh certificate for {0}, not an agent certificate: \
         workload certificates do not open the RPC port"
    )]
    NotAnAgent(String),
}

/// What a verified leaf certificate says about its holder.
///
/// `from_agent_ca`: the agent CA (the operator's `--tls-ca-file`) issued it, rather than the
/// mesh CA (auto-encrypt). Only the agent CA makes servers; from the mesh CA only an agent
/// identity `spiffe://<trust-domain>/agent/client/dc/<dc>/id/<node>` counts, so a workload's
/// SVID never opens the RPC port.
pub fn classify(leaf_der: &[u8], from_agent_ca: bool, dc: &str) -> Result<Peer, PeerRefusal> {
    let (_, cert) =
        X509Certificate::from_der(leaf_der).map_err(|e| PeerRefusal::Unparsable(e.to_string()))?;
    let names: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .map_err(|e| PeerRefusal::Unparsable(e.to_string()))?
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    if from_agent_ca {
        let server = role_name(Role::Server, dc, DEFAULT_DOMAIN);
        let is_server = names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(&server)));
        return Ok(if is_server {
            Peer::Server
        } else {
            Peer::Client
        });
    }
    let uri = names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .unwrap_or_default();
    match agent_node(uri, dc) {
        Some(node) => Ok(Peer::Agent {
            node: node.to_string(),
        }),
        None => Err(PeerRefusal::NotAnAgent(uri.to_string())),
    }
}

/// The SPIFFE ID of an auto-encrypt agent certificate, as Consul names them.
pub fn agent_spiffe_id(trust_domain: &str, dc: &str, node: &str) -> String {
    format!("spiffe://{trust_domain}/agent/client/dc/{dc}/id/{node}")
}

/// The node of an agent SPIFFE ID of datacenter `dc` (any trust domain: the mesh CA that
/// signed it is this cluster's).
pub fn agent_node<'a>(uri: &'a str, dc: &str) -> Option<&'a str> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (_trust_domain, path) = rest.split_once('/')?;
    let node = path.strip_prefix("agent/client/dc/")?.strip_prefix(dc)?;
    let node = node.strip_prefix("/id/")?;
    (!node.is_empty() && !node.contains('/')).then_some(node)
}

/// A tonic interceptor admitting the peers a service admits; refusals are logged with the
/// peer's address and what it presented.
#[derive(Debug, Clone)]
pub struct Admit {
    pub admits: Admits,
    pub service: &'static str,
    pub datacenter: std::sync::Arc<str>,
}

/// What `tls::incoming` attaches to each connection (tonic's connect info).
#[derive(Debug, Clone)]
pub struct RpcPeer {
    pub remote: Option<std::net::SocketAddr>,
    pub peer: Peer,
}

impl Interceptor for Admit {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(rpc) = req.extensions().get::<RpcPeer>() else {
            // Every connection comes through `tls::incoming`; one that did not is refused.
            return Err(Status::permission_denied("unidentified RPC connection"));
        };
        if self.admits.allows(&rpc.peer) {
            return Ok(req);
        }
        let need = self.admits.requirement(&self.datacenter);
        tracing::warn!(
            peer = ?rpc.remote,
            service = self.service,
            presented = rpc.peer.describe(),
            "refused an RPC: {} requires {need}",
            self.service
        );
        Err(Status::permission_denied(format!(
            "{} requires {need}; this connection presented {}",
            self.service,
            rpc.peer.describe()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_only_services_refuse_every_non_server() {
        let all = [
            Peer::Plaintext,
            Peer::Anonymous,
            Peer::Server,
            Peer::Client,
            Peer::Agent { node: "n".into() },
        ];
        let table = [
            (Admits::Servers, [true, false, true, false, false]),
            (Admits::ServersAndAgents, [true, false, true, true, true]),
            (Admits::Anyone, [true, true, true, true, true]),
        ];
        for (admits, expect) in table {
            for (peer, want) in all.iter().zip(expect) {
                assert_eq!(admits.allows(peer), want, "{admits:?} {peer:?}");
            }
        }
    }

    #[test]
    fn agent_ids_name_a_node_of_this_datacenter_only() {
        let id = agent_spiffe_id("abc.mesh", "dc1", "node-1");
        assert_eq!(agent_node(&id, "dc1"), Some("node-1"));
        assert_eq!(agent_node(&id, "dc2"), None);
        assert_eq!(agent_node(&id, "dc"), None, "dc1 must not match dc");
        for bad in [
            "spiffe://abc.mesh/ns/default/dc/dc1/svc/web",
            "spiffe://abc.mesh/agent/client/dc/dc1/id/",
            "spiffe://abc.mesh/agent/client/dc/dc1/id/a/b",
            "https://abc.mesh/agent/client/dc/dc1/id/n",
            "",
        ] {
            assert_eq!(agent_node(bad, "dc1"), None, "{bad}");
        }
    }

    #[test]
    fn only_the_agent_ca_makes_servers() {
        let now = time::OffsetDateTime::now_utc();
        let ca = super::super::pki::create_ca("mesh", 30, now).unwrap();
        let issue = |role| {
            super::super::pki::create_cert(
                &ca.cert_pem,
                &ca.key_pem,
                &super::super::pki::CertRequest::new(role, "dc1"),
                now,
            )
            .unwrap()
        };
        let der = |pem: &str| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec()
        };
        let server = issue(Role::Server);
        let client = issue(Role::Client);
        assert_eq!(
            classify(&der(&server.cert_pem), true, "dc1"),
            Ok(Peer::Server)
        );
        assert_eq!(
            classify(&der(&server.cert_pem), true, "dc2"),
            Ok(Peer::Client)
        );
        assert_eq!(
            classify(&der(&client.cert_pem), true, "dc1"),
            Ok(Peer::Client)
        );
        // The same server certificate, had the mesh CA signed it, is no agent.
        assert!(matches!(
            classify(&der(&server.cert_pem), false, "dc1"),
            Err(PeerRefusal::NotAnAgent(_))
        ));
        assert!(matches!(
            classify(b"junk", true, "dc1"),
            Err(PeerRefusal::Unparsable(_))
        ));
    }
}
