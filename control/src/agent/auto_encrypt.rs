//! Auto-encrypt, the agent side (Consul's `auto_encrypt.tls`): an agent started with only the
//! agent CA file and a token generates a key here, sends a CSR for its agent identity to a
//! server over a TLS connection that verifies the server (`server.<dc>.<domain>`) but
//! presents no certificate, and installs the certificate it gets as the one all its RPC
//! connections present. It renews at two thirds of the certificate's life, retrying every
//! [`RETRY`] until the certificate expires.
//!
//! A refusal (`PermissionDenied`: the token lacks `node:write` on the node; `InvalidArgument`;
//! `FailedPrecondition`: the servers do not allow it) is final and returned at once, with the
//! server's reason; an unreachable server is tried again.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tonic::transport::Endpoint;

use super::conn::Credential;
use crate::ca::generate_uri_csr;
use crate::proto::AutoEncryptRequest;
use crate::proto::auto_encrypt_client::AutoEncryptClient;
use crate::tls::RpcTls;
use crate::tls::peer::agent_spiffe_id;

/// The trust domain an agent's CSR names (the server puts the cluster's in the certificate).
pub const PLACEHOLDER_TRUST_DOMAIN: &str = "dummy.trustdomain";

/// Pause between attempts when no server answered.
pub const RETRY: Duration = Duration::from_secs(2);

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum AutoEncryptError {
    #[error("the server at {server} refused auto-encrypt: {reason}")]
    Refused { server: String, reason: String },
    #[error("no server answered the auto-encrypt request (last: {0})")]
    Unreachable(String),
    #[error("building the certificate request: {0}")]
    Csr(String),
    #[error("the server's certificate is unusable: {0}")]
    BadCertificate(String),
}

/// Asks the servers, in order, for this agent's certificate and installs it in `tls`;
/// returns when it expires.
pub async fn obtain(
    tls: &Arc<RpcTls>,
    servers: &[String],
    credential: Credential,
    node: &str,
) -> Result<OffsetDateTime, AutoEncryptError> {
    let mut last = String::from("no server address");
    for server in servers {
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| AutoEncryptError::Unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(2));
        let channel = crate::tls::transport::channel(&endpoint, Some(tls));
        let mut client = AutoEncryptClient::with_interceptor(channel, credential.clone());
        match sign_once(&mut client, tls, node).await {
            Ok(expiry) => return Ok(expiry),
            Err(Attempt::Final(reason)) => {
                return Err(AutoEncryptError::Refused {
                    server: server.clone(),
                    reason,
                });
            }
            Err(Attempt::Again(reason)) => {
                tracing::warn!(%server, %reason, "auto-encrypt: server unavailable");
                last = reason;
            }
            Err(Attempt::Local(e)) => return Err(e),
        }
    }
    Err(AutoEncryptError::Unreachable(last))
}

enum Attempt {
    Final(String),
    Again(String),
    Local(AutoEncryptError),
}

type Client = AutoEncryptClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credential>,
>;

async fn sign_once(
    client: &mut Client,
    tls: &RpcTls,
    node: &str,
) -> Result<OffsetDateTime, Attempt> {
    let status = |s: tonic::Status| match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            Attempt::Again(s.message().to_string())
        }
        _ => Attempt::Final(s.message().to_string()),
    };
    let ask = |csr_pem: String| {
        let mut req = tonic::Request::new(AutoEncryptRequest {
            node: node.to_string(),
            datacenter: tls.datacenter().to_string(),
            csr_pem,
        });
        req.set_timeout(Duration::from_secs(10));
        req
    };
    // The agent does not know the cluster's trust domain: its CSR names a placeholder, which
    // the server replaces (as Consul's `dummy.trustdomain`).
    let placeholder = agent_spiffe_id(PLACEHOLDER_TRUST_DOMAIN, tls.datacenter(), node);
    let (csr_pem, key_pem) = generate_uri_csr(&placeholder, node)
        .map_err(|e| Attempt::Local(AutoEncryptError::Csr(e.to_string())))?;
    let reply = client
        .sign(ask(csr_pem))
        .await
        .map_err(status)?
        .into_inner();
    install(tls, &reply.cert_pem, &key_pem).map_err(Attempt::Local)?;
    let expiry = OffsetDateTime::parse(
        &reply.valid_before,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| Attempt::Local(AutoEncryptError::BadCertificate(e.to_string())))?;
    tracing::info!(%node, valid_before = %reply.valid_before, "auto-encrypt: installed the agent certificate");
    Ok(expiry)
}

fn install(tls: &RpcTls, cert_pem: &str, key_pem: &str) -> Result<(), AutoEncryptError> {
    let bad = |e: String| AutoEncryptError::BadCertificate(e);
    let cert =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let certified =
        CertifiedKey::from_der(vec![cert], key, tls.provider()).map_err(|e| bad(e.to_string()))?;
    tls.identity().set(Arc::new(certified));
    Ok(())
}

/// Renews the certificate at two thirds of its remaining life, for as long as the process
/// runs; `credential` is read at each renewal (the agent token may have changed).
pub fn spawn_renewal(
    tls: Arc<RpcTls>,
    servers: Vec<String>,
    credential: impl Fn() -> Credential + Send + 'static,
    node: String,
    mut expiry: OffsetDateTime,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let left = (expiry - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            let wait = Duration::try_from(left * 2 / 3).unwrap_or(RETRY);
            tokio::time::sleep(wait.max(RETRY)).await;
            match obtain(&tls, &servers, credential(), &node).await {
                Ok(e) => expiry = e,
                Err(e) => tracing::warn!(error = %e, "auto-encrypt: renewal failed; will retry"),
            }
        }
    })
}
