//! Certificate signing requests: the checks the CA applies before signing, and the CSR an agent
//! builds for one of its services.
//!
//! A CSR is attacker-controlled input. The CA only ever takes the public key out of it; the
//! checks here make sure the request is honest about what it wants (a proof of key possession,
//! exactly the one SPIFFE ID the caller is entitled to, no CA powers, a key type we issue for) so
//! that a bad request is refused with a precise reason instead of being silently narrowed.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, SanType, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo as X509Spki;

use super::CaError;
use crate::spiffe::SpiffeId;
use crate::tls::peer::agent_spiffe_id;

/// A CSR that passed [`validate_csr`]: the identity it names and the public key to certify.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    pub id: SpiffeId,
    /// The requester's public key, the only thing the CA copies from the CSR.
    pub public_key: SubjectPublicKeyInfo,
}

/// Checks `csr_pem` and returns its identity and key if it may be signed for `expected`.
///
/// In order: PEM and DER parse ([`CaError::MalformedCsr`]), the self-signature proves possession
/// of the key ([`CaError::BadCsrSignature`]), no CA powers requested ([`CaError::CsrRequestsCa`]),
/// exactly one URI SAN ([`CaError::MultipleOrMissingUriSan`]) that is a SPIFFE service ID
/// ([`CaError::InvalidSpiffeId`]) in the expected trust domain ([`CaError::WrongTrustDomain`])
/// and equal to `expected` ([`CaError::WrongSpiffeId`]), and an ECDSA P-256/P-384 key
/// ([`CaError::UnsupportedKey`]). Other SAN types and the subject are ignored: they are never
/// copied into the certificate.
pub fn validate_csr(csr_pem: &str, expected: &SpiffeId) -> Result<ValidatedCsr, CaError> {
    let (uris, public_key) = check_csr(csr_pem)?;
    let [uri] = uris.as_slice() else {
        return Err(CaError::MultipleOrMissingUriSan { count: uris.len() });
    };
    let got = SpiffeId::parse(uri).map_err(|source| CaError::InvalidSpiffeId {
        uri: uri.clone(),
        source,
    })?;
    if got.trust_domain != expected.trust_domain {
        return Err(CaError::WrongTrustDomain {
            expected: expected.trust_domain.clone(),
            got: got.trust_domain,
        });
    }
    if &got != expected {
        return Err(CaError::WrongSpiffeId {
            expected: expected.uri(),
            got: got.uri(),
        });
    }
    Ok(ValidatedCsr {
        id: got,
        public_key,
    })
}

/// [`validate_csr`] for an auto-encrypt agent certificate: the same checks, with the one URI
/// SAN an agent ID of `datacenter` for `node` (`spiffe://<td>/agent/client/dc/<dc>/id/<node>`).
/// Its trust domain is not checked: the agent does not know it yet and sends a placeholder,
/// as Consul's does (`dummy.trustdomain`); the certificate carries the cluster's.
pub fn validate_agent_csr(
    csr_pem: &str,
    datacenter: &str,
    node: &str,
) -> Result<SubjectPublicKeyInfo, CaError> {
    let (uris, public_key) = check_csr(csr_pem)?;
    match uris.as_slice() {
        [uri] if crate::tls::peer::agent_node(uri, datacenter) == Some(node) => Ok(public_key),
        [uri] => Err(CaError::WrongSpiffeId {
            expected: agent_spiffe_id("<trust-domain>", datacenter, node),
            got: uri.clone(),
        }),
        _ => Err(CaError::MultipleOrMissingUriSan { count: uris.len() }),
    }
}

/// The checks every CSR passes, whatever it is for: it parses, proves possession of its key,
/// asks for no CA powers and has a supported key. Returns its URI SANs and key.
fn check_csr(csr_pem: &str) -> Result<(Vec<String>, SubjectPublicKeyInfo), CaError> {
    let malformed = |reason: String| CaError::MalformedCsr { reason };

    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| malformed(format!("no CERTIFICATE REQUEST PEM block: {e}")))?;
    let csr = match X509CertificationRequest::from_der(&der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(malformed("trailing bytes after the request".to_string())),
        Err(e) => return Err(malformed(format!("unparsable request: {e}"))),
    };
    csr.verify_signature()
        .map_err(|source| CaError::BadCsrSignature { source })?;

    // Walk every extensionRequest attribute (x509-parser's `requested_extensions` only looks at
    // the first one, and a CSR could carry more).
    let mut uris = Vec::new();
    for attr in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(CaError::CsrRequestsCa {
                        requested: "basicConstraints CA:TRUE",
                    });
                }
                ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() => {
                    return Err(CaError::CsrRequestsCa {
                        requested: "keyUsage keyCertSign",
                    });
                }
                ParsedExtension::KeyUsage(ku) if ku.crl_sign() => {
                    return Err(CaError::CsrRequestsCa {
                        requested: "keyUsage cRLSign",
                    });
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    uris.extend(san.general_names.iter().filter_map(|n| match n {
                        GeneralName::URI(uri) => Some(uri.to_string()),
                        _ => None,
                    }));
                }
                ParsedExtension::ParseError { error } => {
                    return Err(malformed(format!(
                        "unparsable requested extension {}: {error}",
                        ext.oid
                    )));
                }
                _ => {}
            }
        }
    }

    let public_key = supported_key(&csr.certification_request_info.subject_pki)?;
    Ok((uris, public_key))
}

/// Accepts the key types Consul's built-in CA issues for (`ec` 256/384).
fn supported_key(spki: &X509Spki<'_>) -> Result<SubjectPublicKeyInfo, CaError> {
    let unsupported = || CaError::UnsupportedKey {
        algorithm: describe_key_algorithm(spki),
    };
    let key = SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| unsupported())?;
    let alg = rcgen::PublicKeyData::algorithm(&key);
    if alg == &PKCS_ECDSA_P256_SHA256 || alg == &PKCS_ECDSA_P384_SHA384 {
        Ok(key)
    } else {
        Err(unsupported())
    }
}

/// A human name for the key algorithm in `spki`, for error messages.
fn describe_key_algorithm(spki: &X509Spki<'_>) -> String {
    let oid = spki.algorithm.algorithm.to_id_string();
    let param = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (oid.as_str(), param.as_deref()) {
        ("1.2.840.113549.1.1.1", _) => "RSA".to_string(),
        ("1.3.101.112", _) => "Ed25519".to_string(),
        ("1.3.101.113", _) => "Ed448".to_string(),
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => "ECDSA P-256".to_string(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "ECDSA P-384".to_string(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "ECDSA P-521".to_string(),
        (oid, Some(param)) => format!("{oid} ({param})"),
        (oid, None) => oid.to_string(),
    }
}

/// Builds what an agent sends to the CA for `id`: a fresh ECDSA P-256 key (it never leaves the
/// agent) and a CSR carrying exactly one URI SAN, `id`, with CN = the service name.
///
/// Returns `(csr_pem, pkcs8_private_key_pem)`.
pub fn generate_csr(id: &SpiffeId) -> Result<(String, String), CaError> {
    generate_uri_csr(&id.uri(), &id.service)
}

/// A new key and a CSR naming `uri` (common name `cn`): [`generate_csr`] for any SPIFFE ID
/// (an auto-encrypt agent's).
pub fn generate_uri_csr(uri: &str, cn: &str) -> Result<(String, String), CaError> {
    let generate = |what| move |source| CaError::Generate { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("leaf key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        uri.to_string()
            .try_into()
            .map_err(generate("CSR URI SAN"))?,
    )];
    let csr = params
        .serialize_request(&key)
        .map_err(generate("certificate signing request"))?;
    let csr_pem = csr.pem().map_err(generate("CSR PEM"))?;
    Ok((csr_pem, key.serialize_pem()))
}
