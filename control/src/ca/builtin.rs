//! The built-in CA provider (Consul's `consul` provider): ECDSA P-256 roots whose private keys
//! live in the replicated state, leaves signed directly by the active root, and rotation by
//! cross-signing the new root with the old one.
//!
//! Every certificate is built from parameters set here. rcgen would happily copy SANs, key usages
//! and `CA:TRUE` out of a CSR, so the only thing taken from a request is its public key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::cert_info::{
    cert_der_from_pem, colon_hex, dn_from_name, parse_cert, random_serial, rfc3339, sha256,
    subject_key_id, uri_sans, whole_seconds_utc,
};
use super::{
    AgentCertRequest, CaError, CaProvider, LeafRequest, StoredRoot, validate_agent_csr,
    validate_csr,
};
use crate::model::{CaRoot, IssuedLeaf};
use crate::spiffe::SpiffeId;
use crate::tls::peer::agent_spiffe_id;

/// Backdating of every certificate's NotBefore, to absorb clock skew between servers and
/// workloads (Consul uses one minute too).
const BACKDATE: time::Duration = time::Duration::minutes(1);

/// Root lifetime: ten years (Consul's built-in roots), counted in days with leap days included.
const ROOT_LIFETIME: time::Duration = time::Duration::days(3652);

/// Key usages of roots and of cross-signed root certificates.
const CA_KEY_USAGES: [KeyUsagePurpose; 3] = [
    KeyUsagePurpose::KeyCertSign,
    KeyUsagePurpose::CrlSign,
    KeyUsagePurpose::DigitalSignature,
];

/// The built-in CA. Stateless: the roots it creates are handed back to the caller to store.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinProvider;

impl CaProvider for BuiltinProvider {
    fn name(&self) -> &'static str {
        "consul"
    }

    fn generate_root(
        &self,
        trust_domain: &str,
        serial: u64,
        now: OffsetDateTime,
    ) -> Result<StoredRoot, CaError> {
        let trust_domain = trust_domain.to_ascii_lowercase();
        validate_trust_domain(&trust_domain)?;
        let now = whole_seconds_utc(now);
        let generate = |what| move |source| CaError::Generate { what, source };

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("root key"))?;
        let mut params = CertificateParams::default();
        // A distinct subject per root: chain building matches issuer to subject by name, and two
        // roots sharing a name make verifiers report a bad signature instead of an unknown issuer.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Mesh CA Root {serial}"));
        dn.push(DnType::OrganizationName, trust_domain.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            SpiffeId::trust_domain_uri(&trust_domain)
                .try_into()
                .map_err(generate("root URI SAN"))?,
        )];
        // Unconstrained path length: a cross-signed root sits between a leaf and the old root.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = CA_KEY_USAGES.to_vec();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_LIFETIME;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let cert = params
            .self_signed(&key)
            .map_err(generate("root certificate"))?;

        let parsed = parse_cert(cert.der()).map_err(|reason| CaError::BadStoredRoot {
            root_id: String::new(),
            reason: format!("freshly generated root does not parse: {reason}"),
        })?;
        Ok(StoredRoot {
            root: root_record(cert.der(), cert.pem(), &parsed, serial, trust_domain),
            private_key_pem: key.serialize_pem(),
        })
    }

    fn import_root(
        &self,
        cert_pem: &str,
        key_pem: &str,
        trust_domain: &str,
        serial: u64,
        now: OffsetDateTime,
    ) -> Result<StoredRoot, CaError> {
        let bad = |reason: &str| CaError::InvalidSuppliedRoot {
            reason: reason.to_string(),
        };
        let der =
            cert_der_from_pem(cert_pem).map_err(|_| bad("RootCert is not a PEM certificate"))?;
        let cert = parse_cert(&der).map_err(|e| CaError::InvalidSuppliedRoot {
            reason: format!("RootCert: {e}"),
        })?;
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(bad(
                "RootCert is not a CA certificate: it needs the basicConstraints extension with CA:TRUE",
            ));
        }
        if matches!(cert.key_usage(), Ok(Some(ku)) if !ku.value.key_cert_sign()) {
            return Err(bad("RootCert's keyUsage does not allow keyCertSign"));
        }
        if subject_key_id(&cert).is_none() {
            return Err(bad("RootCert has no SubjectKeyIdentifier extension"));
        }
        let now = whole_seconds_utc(now);
        let (not_before, not_after) = (
            cert.validity().not_before.to_datetime(),
            cert.validity().not_after.to_datetime(),
        );
        if now < not_before || now >= not_after {
            return Err(CaError::InvalidSuppliedRoot {
                reason: format!(
                    "RootCert is not valid now (valid from {} to {})",
                    rfc3339(not_before),
                    rfc3339(not_after)
                ),
            });
        }
        // The key's own parse error is not quoted: it could echo key material.
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| bad("PrivateKey is not a PEM private key (PKCS#8 or SEC1)"))?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(bad(
                "PrivateKey must be an ECDSA P-256 key (the built-in CA's PrivateKeyType \"ec\", PrivateKeyBits 256)",
            ));
        }
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(bad("PrivateKey does not match RootCert's public key"));
        }
        let trust_domain = trust_domain.to_ascii_lowercase();
        validate_trust_domain(&trust_domain)?;
        let pem = pem_of(&der);
        Ok(StoredRoot {
            root: root_record(&der, pem, &cert, serial, trust_domain),
            private_key_pem: key.serialize_pem(),
        })
    }

    fn cross_sign(
        &self,
        old: &StoredRoot,
        new: &StoredRoot,
        now: OffsetDateTime,
    ) -> Result<String, CaError> {
        let now = whole_seconds_utc(now);
        let signer = LoadedRoot::load(old)?;
        let old_not_after = signer.usable_at(now)?;

        let bad_new = |reason: String| CaError::BadStoredRoot {
            root_id: new.root.id.clone(),
            reason,
        };
        let new_der = cert_der_from_pem(&new.root.root_cert).map_err(bad_new)?;
        let new_cert = parse_cert(&new_der).map_err(bad_new)?;
        let new_ski = subject_key_id(&new_cert)
            .ok_or_else(|| bad_new("root has no SubjectKeyIdentifier".to_string()))?;
        let new_public_key = SubjectPublicKeyInfo::from_der(new_cert.public_key().raw)
            .map_err(|e| bad_new(format!("unusable public key: {e}")))?;

        let mut params = CertificateParams::default();
        // Same subject, key and key identifier as the new root, so a leaf issued by the new root
        // chains through this certificate exactly as it would through the new root itself.
        params.distinguished_name = dn_from_name(new_cert.subject()).map_err(bad_new)?;
        params.key_identifier_method = KeyIdMethod::PreSpecified(new_ski);
        params.subject_alt_names = uri_sans(&new_cert)
            .into_iter()
            .map(|uri| uri.try_into().map(SanType::URI))
            .collect::<Result<_, _>>()
            .map_err(|e| bad_new(format!("URI SAN: {e}")))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = CA_KEY_USAGES.to_vec();
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        // Never claim validity the issuing root does not have, nor beyond the new root's own.
        params.not_after = old_not_after.min(new_cert.validity().not_after.to_datetime());
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));

        let cert = params
            .signed_by(&new_public_key, &signer.issuer)
            .map_err(|source| CaError::Sign {
                what: "cross-signed root",
                source,
            })?;
        Ok(cert.pem())
    }

    fn sign_leaf(
        &self,
        signer: &StoredRoot,
        req: &LeafRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaf, CaError> {
        check_signer(signer, req.trust_domain)?;
        let expected = SpiffeId::service(req.trust_domain, req.datacenter, req.service);
        let csr = validate_csr(req.csr_pem, &expected)?;
        issue(
            signer,
            Leaf {
                public_key: &csr.public_key,
                name: req.service,
                uri: expected.uri(),
                ttl: req.ttl,
                extended_key_usages: vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            },
            now,
        )
    }

    fn sign_agent(
        &self,
        signer: &StoredRoot,
        req: &AgentCertRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaf, CaError> {
        check_signer(signer, req.trust_domain)?;
        let uri = agent_spiffe_id(
            &req.trust_domain.to_ascii_lowercase(),
            req.datacenter,
            req.node,
        );
        let public_key = validate_agent_csr(req.csr_pem, req.datacenter, req.node)?;
        issue(
            signer,
            Leaf {
                public_key: &public_key,
                name: req.node,
                uri,
                ttl: req.ttl,
                // It dials servers; it never serves TLS with this certificate.
                extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            },
            now,
        )
    }
}

/// `signer` may sign now for `trust_domain`.
fn check_signer(signer: &StoredRoot, trust_domain: &str) -> Result<(), CaError> {
    if !signer.root.active {
        return Err(CaError::RootNotActive {
            root_id: signer.root.id.clone(),
        });
    }
    let requested_td = trust_domain.to_ascii_lowercase();
    let root_td = &signer.root.external_trust_domain;
    if !root_td.is_empty() && *root_td != requested_td {
        return Err(CaError::RootTrustDomainMismatch {
            root_id: signer.root.id.clone(),
            root_trust_domain: root_td.clone(),
            requested: requested_td,
        });
    }
    Ok(())
}

/// An end-entity certificate to issue: everything in it is chosen here, only the key comes
/// from the request.
struct Leaf<'a> {
    public_key: &'a SubjectPublicKeyInfo,
    /// The common name (a service's or a node's name).
    name: &'a str,
    /// The one URI SAN.
    uri: String,
    ttl: std::time::Duration,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
}

fn issue(signer: &StoredRoot, leaf: Leaf<'_>, now: OffsetDateTime) -> Result<IssuedLeaf, CaError> {
    let now = whole_seconds_utc(now);
    let loaded = LoadedRoot::load(signer)?;
    let root_not_after = loaded.usable_at(now)?;
    let not_after = leaf_not_after(now, leaf.ttl, root_not_after)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, leaf.name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(leaf.uri.clone().try_into().map_err(
        |source| CaError::Sign {
            what: "leaf URI SAN",
            source,
        },
    )?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = leaf.extended_key_usages;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let cert = params
        .signed_by(leaf.public_key, &loaded.issuer)
        .map_err(|source| CaError::Sign {
            what: "leaf certificate",
            source,
        })?;
    Ok(IssuedLeaf {
        serial_number: colon_hex(&serial),
        cert_pem: cert.pem(),
        service: leaf.name.to_string(),
        service_uri: leaf.uri,
        valid_after: rfc3339(params.not_before),
        valid_before: rfc3339(params.not_after),
        root_id: signer.root.id.clone(),
    })
}

/// The public record of a root whose certificate is `der` (`pem`, `parsed`), active, as the
/// `serial`th root of the cluster signing for `trust_domain`. Everything is read back from the
/// certificate, for generated and supplied roots alike.
fn root_record(
    der: &[u8],
    pem: String,
    parsed: &x509_parser::certificate::X509Certificate<'_>,
    serial: u64,
    trust_domain: String,
) -> CaRoot {
    let ski = subject_key_id(parsed).unwrap_or_default();
    CaRoot {
        id: colon_hex(&sha256(der)),
        name: "Mesh CA Primary Cert".to_string(),
        serial_number: serial,
        signing_key_id: colon_hex(&ski),
        external_trust_domain: trust_domain,
        not_before: rfc3339(parsed.validity().not_before.to_datetime()),
        not_after: rfc3339(parsed.validity().not_after.to_datetime()),
        root_cert: pem,
        intermediate_certs: Vec::new(),
        active: true,
        private_key_type: "ec".to_string(),
        private_key_bits: 256,
        rotated_out_at: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// `der` as one PEM `CERTIFICATE` block (a supplied PEM is re-encoded: only its first
/// certificate, without comments or other blocks, becomes the root).
fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Rejects trust domains that could not appear in a SPIFFE ID, using the one SPIFFE parser.
fn validate_trust_domain(trust_domain: &str) -> Result<(), CaError> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/default/dc/dc/svc/svc"))
        .map(|_| ())
        .map_err(|source| CaError::InvalidTrustDomain {
            trust_domain: trust_domain.to_string(),
            source,
        })
}

/// `now + ttl`, refusing a zero TTL and a leaf that would outlive its root.
fn leaf_not_after(
    now: OffsetDateTime,
    ttl: std::time::Duration,
    root_not_after: OffsetDateTime,
) -> Result<OffsetDateTime, CaError> {
    let invalid = |reason| CaError::InvalidTtl { ttl, reason };
    if ttl < std::time::Duration::from_secs(1) {
        return Err(invalid("must be at least one second"));
    }
    let not_after = time::Duration::try_from(ttl)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| invalid("too large"))?;
    if not_after > root_not_after {
        return Err(invalid("the leaf would outlive its signing root"));
    }
    Ok(whole_seconds_utc(not_after))
}

/// A stored root parsed back into something that can sign.
struct LoadedRoot<'a> {
    stored: &'a StoredRoot,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl<'a> LoadedRoot<'a> {
    fn load(stored: &'a StoredRoot) -> Result<Self, CaError> {
        let bad = |reason: String| CaError::BadStoredRoot {
            root_id: stored.root.id.clone(),
            reason,
        };
        let der: CertificateDer<'static> =
            cert_der_from_pem(&stored.root.root_cert).map_err(bad)?;
        let cert = parse_cert(&der).map_err(bad)?;
        let key = KeyPair::from_pem(&stored.private_key_pem)
            .map_err(|e| bad(format!("private key: {e}")))?;
        // A key that does not match the certificate would produce leaves nobody can verify.
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(bad("private key does not match the root certificate".into()));
        }
        if subject_key_id(&cert).is_none() {
            return Err(bad("root has no SubjectKeyIdentifier".into()));
        }
        let not_after = cert.validity().not_after.to_datetime();
        // Takes the subject and SubjectKeyIdentifier from the certificate, so issued
        // certificates name this root exactly and carry its key ID as AuthorityKeyIdentifier.
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| bad(format!("not usable as an issuer: {e}")))?;
        Ok(Self {
            stored,
            not_after,
            issuer,
        })
    }

    /// The root's NotAfter, if `now` is inside its validity.
    fn usable_at(&self, now: OffsetDateTime) -> Result<OffsetDateTime, CaError> {
        if now > self.not_after {
            return Err(CaError::RootExpired {
                root_id: self.stored.root.id.clone(),
                not_after: rfc3339(self.not_after),
            });
        }
        Ok(self.not_after)
    }
}
