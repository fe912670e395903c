//! SPIFFE certificate checks for mutual TLS between proxies.
//!
//! A SPIFFE ID is not a DNS name, so rustls's own server-name check does not apply. Instead:
//!
//! * client side, [`SpiffeServerVerifier`] checks the server's chain against the mesh's trust
//!   bundle (rustls's `verify_server_cert_signed_by_trust_anchor`, which also checks validity
//!   dates and key usage) and then requires exactly one URI SAN, equal to the SPIFFE ID of the
//!   upstream we meant to reach. Any other valid mesh certificate (another service, another
//!   datacenter) is refused: holding a mesh certificate does not let a workload impersonate
//!   another one.
//! * server side, rustls's `WebPkiClientVerifier` checks the client's chain only;
//!   [`peer_spiffe_id`] then reads the client's identity for authorization.
//!
//! Both sides remember the chains they accepted ([`VerifiedChains`]), so a peer seen before
//! costs no chain check while its certificates stay valid; the handshake signature is always
//! checked.

use std::fmt;
use std::sync::Arc;

use mesh_policy::spiffe::{SpiffeId, SpiffeIdError};
use rustls::DistinguishedName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::verified_chains::VerifiedChains;

/// Problems with a peer's certificate identity.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate does not parse: {reason}")]
    Unparsable { reason: String },
    #[error("peer certificate must carry exactly one URI SAN, found {count}")]
    UriSanCount { count: usize },
    #[error("peer URI SAN {uri:?} is not a SPIFFE service ID")]
    InvalidSpiffeId {
        uri: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("server presented identity {got}, expected {expected}")]
    WrongIdentity { expected: String, got: String },
}

/// The SPIFFE ID in `cert`: its only URI SAN, parsed.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::Unparsable {
            reason: e.to_string(),
        })?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = name {
                uris.push(*u);
            }
        }
    }
    match uris.as_slice() {
        [uri] => SpiffeId::parse(uri).map_err(|source| TlsError::InvalidSpiffeId {
            uri: uri.to_string(),
            source,
        }),
        _ => Err(TlsError::UriSanCount { count: uris.len() }),
    }
}

/// The identity of a TLS peer from its certificate chain (end entity first), after rustls has
/// verified the chain.
pub fn peer_spiffe_id(chain: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, TlsError> {
    let leaf = chain
        .and_then(<[_]>::first)
        .ok_or(TlsError::NoPeerCertificate)?;
    spiffe_id_of(leaf)
}

/// A `rustls::Error` carrying `e`, so handshake failures name the identity problem.
fn invalid(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Client-side verifier: chain to the trust bundle, then exactly `expected` as the URI SAN.
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    expected_uri: String,
    algorithms: WebPkiSupportedAlgorithms,
    chains: VerifiedChains,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("roots", &self.roots.len())
            .field("expected", &self.expected_uri)
            .finish()
    }
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: SpiffeId,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            roots,
            expected_uri: expected.uri(),
            expected,
            algorithms,
            chains: VerifiedChains::default(),
        }
    }

    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chains.check_once(end_entity, intermediates, now, || {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &self.roots,
                intermediates,
                now,
                self.algorithms.all,
            )
        })?;
        // Checked on every handshake (it is cheap), remembered chain or not.
        let got = spiffe_id_of(end_entity).map_err(invalid)?;
        if got != self.expected {
            return Err(invalid(TlsError::WrongIdentity {
                expected: self.expected_uri.clone(),
                got: got.uri(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server-side verifier: `inner` (rustls's `WebPkiClientVerifier` over the trust bundle) checks
/// a client's chain the first time; later handshakes presenting the same, still valid chain are
/// answered from the memo. Everything else (hints, signatures, schemes) is `inner`'s.
#[derive(Debug)]
pub struct RememberingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    chains: VerifiedChains,
}

impl RememberingClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self {
            inner,
            chains: VerifiedChains::default(),
        }
    }
}

impl ClientCertVerifier for RememberingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chains.check_once(end_entity, intermediates, now, || {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// Short label of a handshake failure for metrics and logs: a closed set.
pub fn handshake_failure_kind(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        };
    };
    match inner {
        E::NoCertificatesPresented => "no_client_certificate",
        E::InvalidCertificate(CertificateError::Expired)
        | E::InvalidCertificate(CertificateError::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        E::InvalidCertificate(CertificateError::BadSignature) => "bad_signature",
        E::InvalidCertificate(CertificateError::Other(o))
            if o.0.downcast_ref::<TlsError>().is_some() =>
        {
            "wrong_identity"
        }
        E::InvalidCertificate(_) => "invalid_certificate",
        E::AlertReceived(_) => "alert_received",
        _ => "tls",
    }
}
