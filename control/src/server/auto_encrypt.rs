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

use tonic::{Request, Response, Status};

use super::Server;
use crate::proto::auto_encrypt_server::AutoEncrypt;
use crate::proto::{AutoEncryptReply, AutoEncryptRequest};

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
        let token = super::acl::presented_token(&req)?;
        let r = req.get_ref();
        if !valid_node(&r.node) {
            return Err(Status::invalid_argument(format!(
                "node name {:?} is not a valid node name (letters, digits, '-', '_', '.')",
                r.node
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
        let leaf = s
            .sign_agent_csr(&r.node, &r.datacenter, &r.csr_pem)
            .map_err(|e| e.to_status())?;
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
