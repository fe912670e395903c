//! Auto-encrypt, the server side (Consul's `AutoEncrypt.Sign`): an agent that has only the
//! agent CA file and an ACL token gets its RPC client certificate here, signed by the mesh CA
//! with the identity `spiffe://<trust-domain>/agent/client/dc/<dc>/id/<node>`
//! (`tls::peer` admits such a certificate to the agents' API, never to Raft or membership).
//!
//! Refusals, in order: ACLs off (the token is the only thing vouching for the caller, so
//! without ACLs anyone reaching the port could get a certificate); a node name that is not a
//! plain name; another datacenter; a token without `node:write` on the node; a CSR that does
//! not name exactly that identity. The key stays on the agent: only its CSR travels.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::Server;
use crate::ca::AgentCertRequest;
use crate::proto::auto_encrypt_server::AutoEncrypt;
use crate::proto::{AutoEncryptReply, AutoEncryptRequest};

/// Lifetime of an agent certificate (Consul's default leaf TTL); agents renew at two thirds.
pub const AGENT_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(72 * 3600);

pub(super) struct AutoEncryptApi(pub(super) Arc<Server>);

/// A node name fit for a SPIFFE path segment.
fn valid_node(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 128
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && node != "."
        && node != ".."
}

#[tonic::async_trait]
impl AutoEncrypt for AutoEncryptApi {
    async fn sign(
        &self,
        req: Request<AutoEncryptRequest>,
    ) -> Result<Response<AutoEncryptReply>, Status> {
        let s = &self.0;
        if !s.config.acl.enabled {
            return Err(Status::failed_precondition(
                "auto-encrypt needs ACLs on the servers: the agent's token is what vouches for it",
            ));
        }
        let token = super::grpc::presented_token(&req)?;
        let r = req.get_ref();
        if !valid_node(&r.node) {
            return Err(Status::invalid_argument(format!(
                "node name {:?} is not a valid node name (letters, digits, '-', '_', '.')",
                r.node
            )));
        }
        let dc = s.config.datacenter.as_str();
        if !r.datacenter.is_empty() && r.datacenter != dc {
            return Err(Status::invalid_argument(format!(
                "this server signs for datacenter {dc}, not {}",
                r.datacenter
            )));
        }
        let caller = s
            .acl_resolve(token)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        caller
            .authorizer
            .node_write(&r.node)
            .check()
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let (active, td) = s
            .state
            .read(|st| (st.ca.active().cloned(), st.ca.trust_domain.clone()));
        let active =
            active.ok_or_else(|| Status::unavailable("the mesh CA is not initialized yet"))?;
        let leaf =
            s.ca.sign_agent(
                &active,
                &AgentCertRequest {
                    csr_pem: &r.csr_pem,
                    trust_domain: &td,
                    datacenter: dc,
                    node: &r.node,
                    ttl: AGENT_CERT_TTL,
                },
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| {
                if e.is_client_error() {
                    Status::invalid_argument(e.to_string())
                } else {
                    Status::internal(e.to_string())
                }
            })?;
        tracing::info!(node = %r.node, valid_before = %leaf.valid_before, "auto-encrypt: signed an agent certificate");
        Ok(Response::new(AutoEncryptReply {
            cert_pem: leaf.cert_pem,
            valid_before: leaf.valid_before,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_node;

    #[test]
    fn node_names_are_plain() {
        for ok in ["node-1", "a.b", "n_2"] {
            assert!(valid_node(ok), "{ok}");
        }
        let long = "n".repeat(129);
        for bad in ["", "a/b", "..", ".", "a b", "é", long.as_str()] {
            assert!(!valid_node(bad), "{bad}");
        }
    }
}
