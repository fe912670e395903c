//! Tests of the CA with real keys and signatures, checked by x509-parser and by the `openssl`
//! CLI as an independent verifier.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

use super::cert_info::{colon_hex, rfc3339, sha256};
use super::*;
use crate::spiffe::SpiffeId;

const TD: &str = "11111111-2222-3333-4444-555555555555.consul";
const DC: &str = "dc1";
const TTL: Duration = Duration::from_secs(72 * 3600);

fn web_id() -> SpiffeId {
    SpiffeId::service(TD, DC, "web")
}

fn request<'a>(csr_pem: &'a str, service: &'a str) -> LeafRequest<'a> {
    LeafRequest {
        csr_pem,
        trust_domain: TD,
        datacenter: DC,
        service,
        ttl: TTL,
    }
}

fn root(serial: u64, now: OffsetDateTime) -> StoredRoot {
    BuiltinProvider.generate_root(TD, serial, now).unwrap()
}

fn leaf_for(signer: &StoredRoot, service: &'static str, now: OffsetDateTime) -> String {
    let (csr, _key) = generate_csr(&SpiffeId::service(TD, DC, service)).unwrap();
    BuiltinProvider
        .sign_leaf(signer, &request(&csr, service), now)
        .unwrap()
        .cert_pem
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn subject_alt_names<'a>(cert: &'a X509Certificate<'_>) -> &'a [GeneralName<'a>] {
    &cert
        .subject_alternative_name()
        .unwrap()
        .expect("subjectAltName")
        .value
        .general_names
}

fn common_name<'a>(cert: &'a X509Certificate<'_>) -> &'a str {
    cert.subject()
        .iter_common_name()
        .next()
        .expect("CN")
        .as_str()
        .unwrap()
}

/// The subject and authority key identifiers, colon-hex as in `CARoot.SigningKeyID`.
fn key_ids(cert: &X509Certificate<'_>) -> (Option<String>, Option<String>) {
    let mut ski = None;
    let mut aki = None;
    for e in cert.iter_extensions() {
        match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(colon_hex(k.0)),
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                aki = k.key_identifier.as_ref().map(|k| colon_hex(k.0))
            }
            _ => {}
        }
    }
    (ski, aki)
}

/// A CSR for `params` signed by a fresh P-256 key.
fn csr_from(params: &CertificateParams) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn params_with_uris(uris: &[String]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.clone().try_into().unwrap()))
        .collect();
    params
}

fn sign(csr: &str, service: &'static str) -> Result<crate::model::IssuedLeaf, CaError> {
    let now = OffsetDateTime::now_utc();
    BuiltinProvider.sign_leaf(&root(1, now), &request(csr, service), now)
}

/// Minimal PEM encoder for hand-modified DER.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Files for the openssl CLI.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// Runs `openssl verify`; returns whether it succeeded and its combined output.
fn openssl_verify(ca_file: &Path, untrusted: Option<&Path>, cert: &Path) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(ca_file);
    if let Some(untrusted) = untrusted {
        cmd.arg("-untrusted").arg(untrusted);
    }
    let out = cmd.arg(cert).output().expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// Roots

#[test]
fn root_is_p256_ca_with_trust_domain_uri() {
    let now = OffsetDateTime::now_utc();
    let stored = root(1, now);
    let der = der_of(&stored.root.root_cert);
    let cert = parse(&der);

    let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().expect("keyUsage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    let td_uri = format!("spiffe://{TD}");
    assert_eq!(subject_alt_names(&cert), [GeneralName::URI(&td_uri)]);
    assert!(matches!(
        cert.public_key().parsed().unwrap(),
        PublicKey::EC(ref p) if p.key_size() == 256
    ));
    assert_eq!(
        cert.public_key()
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap()
            .to_id_string(),
        "1.2.840.10045.3.1.7",
        "prime256v1"
    );
    assert_eq!(cert.subject(), cert.issuer(), "self-signed");
    assert_eq!(cert.raw_serial().len(), 16);
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    assert!((now - time::Duration::minutes(1) - not_before).abs() < time::Duration::seconds(1));
    assert!(not_after - now > time::Duration::days(3650));
    assert!(not_after - now < time::Duration::days(3653));
}

#[test]
fn root_metadata_describes_the_certificate() {
    let now = OffsetDateTime::now_utc();
    let stored = root(7, now);
    let r = &stored.root;
    let der = der_of(&r.root_cert);
    let cert = parse(&der);

    assert_eq!(r.id, colon_hex(&sha256(&der)));
    assert_eq!(r.id.len(), 32 * 3 - 1);
    assert_eq!(r.name, "Mesh CA Primary Cert");
    assert_eq!(r.serial_number, 7);
    assert_eq!(key_ids(&cert).0, Some(r.signing_key_id.clone()));
    assert_eq!(r.external_trust_domain, TD);
    assert_eq!(
        r.not_before,
        rfc3339(cert.validity().not_before.to_datetime())
    );
    assert_eq!(
        r.not_after,
        rfc3339(cert.validity().not_after.to_datetime())
    );
    assert!(r.not_before.ends_with('Z') && r.not_after.ends_with('Z'));
    assert!(r.active);
    assert_eq!(
        (r.private_key_type.as_str(), r.private_key_bits),
        ("ec", 256)
    );
    assert_eq!(
        (r.rotated_out_at, r.create_index, r.modify_index),
        (0, 0, 0)
    );
    assert!(r.intermediate_certs.is_empty());
    assert!(stored.private_key_pem.contains("BEGIN PRIVATE KEY"));
    assert_eq!(BuiltinProvider.name(), "consul");
}

#[test]
fn roots_have_distinct_subjects_and_ids() {
    let now = OffsetDateTime::now_utc();
    let (a, b) = (root(1, now), root(2, now));
    let (da, db) = (der_of(&a.root.root_cert), der_of(&b.root.root_cert));
    assert_ne!(parse(&da).subject().as_raw(), parse(&db).subject().as_raw());
    assert_ne!(a.root.id, b.root.id);
    assert_ne!(a.root.signing_key_id, b.root.signing_key_id);
}

#[test]
fn generate_root_rejects_bad_trust_domain() {
    let now = OffsetDateTime::now_utc();
    for bad in ["", "a/b", "has space", "x%y"] {
        let err = BuiltinProvider.generate_root(bad, 1, now).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidTrustDomain { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Leaves

#[test]
fn leaf_verifies_with_openssl() {
    let now = OffsetDateTime::now_utc();
    let signer = root(1, now);
    let leaf = leaf_for(&signer, "web", now);
    let dir = Scratch::new();
    let ca = dir.write("root.pem", &signer.root.root_cert);
    let leaf = dir.write("leaf.pem", &leaf);
    let (ok, out) = openssl_verify(&ca, None, &leaf);
    assert!(ok, "openssl verify failed: {out}");
}

#[test]
fn leaf_follows_x509_svid_rules() {
    let now = OffsetDateTime::now_utc();
    let signer = root(1, now);
    let (csr, _key) = generate_csr(&web_id()).unwrap();
    let issued = BuiltinProvider
        .sign_leaf(&signer, &request(&csr, "web"), now)
        .unwrap();
    let der = der_of(&issued.cert_pem);
    let cert = parse(&der);

    // Exactly one SAN, the URI.
    assert_eq!(
        subject_alt_names(&cert),
        [GeneralName::URI(&web_id().uri())]
    );
    // Not a CA, cannot sign certificates or CRLs.
    let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().unwrap().expect("keyUsage").value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = cert.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    // Validity now-1min .. now+ttl.
    let not_after = cert.validity().not_after.to_datetime();
    let ttl = time::Duration::try_from(TTL).unwrap();
    assert!((not_after - (now + ttl)).abs() <= time::Duration::seconds(1));
    let not_before = cert.validity().not_before.to_datetime();
    assert!((not_before - (now - time::Duration::minutes(1))).abs() <= time::Duration::seconds(1));
    // Subject, issuer, key IDs, serial.
    assert_eq!(common_name(&cert), "web");
    let root_der = der_of(&signer.root.root_cert);
    assert_eq!(cert.issuer().as_raw(), parse(&root_der).subject().as_raw());
    assert_eq!(key_ids(&cert).1, Some(signer.root.signing_key_id.clone()));
    assert_eq!(cert.raw_serial().len(), 16);
    assert_eq!(issued.serial_number, colon_hex(cert.raw_serial()));
    // Metadata.
    assert_eq!(issued.service, "web");
    assert_eq!(issued.service_uri, web_id().uri());
    assert_eq!(issued.root_id, signer.root.id);
    assert!(issued.valid_after.ends_with('Z') && issued.valid_before.ends_with('Z'));
}

#[test]
fn leaf_takes_only_the_public_key_from_the_csr() {
    // The CSR asks for extra SANs, a different subject and code signing; none of it is copied.
    let mut params = params_with_uris(&[web_id().uri()]);
    params
        .subject_alt_names
        .push(SanType::DnsName("evil.example.com".try_into().unwrap()));
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let issued = sign(&csr_from(&params), "web").unwrap();
    let der = der_of(&issued.cert_pem);
    let cert = parse(&der);
    assert_eq!(
        subject_alt_names(&cert),
        [GeneralName::URI(&web_id().uri())]
    );
    assert_eq!(common_name(&cert), "web");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(!eku.code_signing && eku.server_auth && eku.client_auth);
}

#[test]
fn generated_csr_passes_validation() {
    let (csr, key) = generate_csr(&web_id()).unwrap();
    assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
    assert!(key.contains("BEGIN PRIVATE KEY"));
    let v = validate_csr(&csr, &web_id()).unwrap();
    assert_eq!(v.id, web_id());
    // The CSR's key is the one returned.
    let key = KeyPair::from_pem(&key).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&v.public_key),
        key.public_key_raw()
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections

#[test]
fn rejects_tampered_csr_signature() {
    let (csr, _) = generate_csr(&web_id()).unwrap();
    let mut der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // The request ends with the signature BIT STRING; its last byte is the low byte of `s`.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem_encode("CERTIFICATE REQUEST", &der);
    let err = sign(&tampered, "web").unwrap_err();
    assert!(matches!(err, CaError::BadCsrSignature { .. }), "{err:?}");
    assert_eq!(err.code(), "bad_csr_signature");
}

#[test]
fn rejects_csr_for_another_service() {
    let (csr, _) = generate_csr(&SpiffeId::service(TD, DC, "db")).unwrap();
    let err = sign(&csr, "web").unwrap_err();
    match err {
        CaError::WrongSpiffeId { expected, got } => {
            assert_eq!(expected, web_id().uri());
            assert_eq!(got, SpiffeId::service(TD, DC, "db").uri());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_csr_for_another_datacenter() {
    let (csr, _) = generate_csr(&SpiffeId::service(TD, "dc2", "web")).unwrap();
    let err = sign(&csr, "web").unwrap_err();
    assert!(matches!(err, CaError::WrongSpiffeId { .. }), "{err:?}");
}

#[test]
fn rejects_csr_for_another_trust_domain() {
    let (csr, _) = generate_csr(&SpiffeId::service("other.consul", DC, "web")).unwrap();
    let err = sign(&csr, "web").unwrap_err();
    match err {
        CaError::WrongTrustDomain { expected, got } => {
            assert_eq!(expected, TD);
            assert_eq!(got, "other.consul");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_csr_with_two_uri_sans() {
    let params = params_with_uris(&[web_id().uri(), SpiffeId::service(TD, DC, "db").uri()]);
    let err = sign(&csr_from(&params), "web").unwrap_err();
    assert!(
        matches!(err, CaError::MultipleOrMissingUriSan { count: 2 }),
        "{err:?}"
    );
}

#[test]
fn rejects_csr_without_uri_san() {
    let mut params = params_with_uris(&[]);
    params.subject_alt_names = vec![SanType::DnsName("web.service.consul".try_into().unwrap())];
    let err = sign(&csr_from(&params), "web").unwrap_err();
    assert!(
        matches!(err, CaError::MultipleOrMissingUriSan { count: 0 }),
        "{err:?}"
    );
    // No extensions at all.
    let err = sign(&csr_from(&params_with_uris(&[])), "web").unwrap_err();
    assert!(
        matches!(err, CaError::MultipleOrMissingUriSan { count: 0 }),
        "{err:?}"
    );
}

#[test]
fn rejects_csr_with_non_spiffe_uri() {
    for uri in ["https://web.example.com/", &format!("spiffe://{TD}/web")] {
        let params = params_with_uris(&[uri.to_string()]);
        let err = sign(&csr_from(&params), "web").unwrap_err();
        assert!(
            matches!(err, CaError::InvalidSpiffeId { .. }),
            "{uri}: {err:?}"
        );
    }
}

#[test]
fn rejects_csr_requesting_ca() {
    let mut params = params_with_uris(&[web_id().uri()]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let err = sign(&csr_from(&params), "web").unwrap_err();
    assert!(
        matches!(
            err,
            CaError::CsrRequestsCa {
                requested: "basicConstraints CA:TRUE"
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rejects_csr_requesting_cert_or_crl_signing() {
    for (usage, requested) in [
        (KeyUsagePurpose::KeyCertSign, "keyUsage keyCertSign"),
        (KeyUsagePurpose::CrlSign, "keyUsage cRLSign"),
    ] {
        let mut params = params_with_uris(&[web_id().uri()]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, usage];
        let err = sign(&csr_from(&params), "web").unwrap_err();
        match err {
            CaError::CsrRequestsCa { requested: got } => assert_eq!(got, requested),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn rejects_garbage_pem() {
    for garbage in [
        "",
        "not a pem at all",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = sign(garbage, "web").unwrap_err();
        assert!(
            matches!(err, CaError::MalformedCsr { .. }),
            "{garbage:?}: {err:?}"
        );
        assert!(err.is_client_error());
    }
    // A certificate is not a request.
    let now = OffsetDateTime::now_utc();
    let err = sign(&root(1, now).root.root_cert, "web").unwrap_err();
    assert!(matches!(err, CaError::MalformedCsr { .. }), "{err:?}");
}

#[test]
fn rejects_unsupported_key() {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = params_with_uris(&[web_id().uri()])
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let err = sign(&csr, "web").unwrap_err();
    match err {
        CaError::UnsupportedKey { algorithm } => assert_eq!(algorithm, "Ed25519"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_bad_ttl_and_unusable_roots() {
    let now = OffsetDateTime::now_utc();
    let signer = root(1, now);
    let (csr, _) = generate_csr(&web_id()).unwrap();

    // Signing `csr` for web with this root, TTL and time must fail.
    let refuse = |signer: &StoredRoot, ttl: Duration, at: OffsetDateTime| {
        let req = LeafRequest {
            ttl,
            ..request(&csr, "web")
        };
        BuiltinProvider.sign_leaf(signer, &req, at).unwrap_err()
    };

    let err = refuse(&signer, Duration::ZERO, now);
    assert!(matches!(err, CaError::InvalidTtl { .. }), "{err:?}");
    let err = refuse(&signer, Duration::from_secs(20 * 365 * 24 * 3600), now);
    assert!(matches!(err, CaError::InvalidTtl { .. }), "{err:?}");

    let mut inactive = signer.clone();
    inactive.root.active = false;
    let err = refuse(&inactive, TTL, now);
    assert!(matches!(err, CaError::RootNotActive { .. }), "{err:?}");

    let err = refuse(&signer, TTL, now + time::Duration::days(3660));
    assert!(matches!(err, CaError::RootExpired { .. }), "{err:?}");

    let mut wrong_key = signer.clone();
    wrong_key.private_key_pem = root(2, now).private_key_pem;
    let err = refuse(&wrong_key, TTL, now);
    assert!(matches!(err, CaError::BadStoredRoot { .. }), "{err:?}");

    let other_td = BuiltinProvider
        .generate_root("other.consul", 3, now)
        .unwrap();
    let err = refuse(&other_td, TTL, now);
    assert!(
        matches!(err, CaError::RootTrustDomainMismatch { .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rotation

#[test]
fn rotation_cross_sign_chains_with_openssl() {
    let now = OffsetDateTime::now_utc();
    let a = root(1, now);
    let leaf_a = leaf_for(&a, "web", now);
    let b = root(2, now);
    let cross = BuiltinProvider.cross_sign(&a, &b, now).unwrap();
    let leaf_b = leaf_for(&b, "web", now);

    let dir = Scratch::new();
    let a_pem = dir.write("a.pem", &a.root.root_cert);
    let b_pem = dir.write("b.pem", &b.root.root_cert);
    let bundle = dir.write(
        "bundle.pem",
        &trust_bundle_pem(&[a.root.clone(), b.root.clone()]),
    );
    let cross_pem = dir.write("cross.pem", &cross);
    let leaf_a = dir.write("leaf_a.pem", &leaf_a);
    let leaf_b = dir.write("leaf_b.pem", &leaf_b);

    let (ok, out) = openssl_verify(&bundle, None, &leaf_a);
    assert!(ok, "bundle must verify L_A: {out}");
    let (ok, out) = openssl_verify(&bundle, None, &leaf_b);
    assert!(ok, "bundle must verify L_B: {out}");
    let (ok, out) = openssl_verify(&a_pem, Some(&cross_pem), &leaf_b);
    assert!(ok, "old root + cross-signed cert must verify L_B: {out}");
    let (ok, out) = openssl_verify(&a_pem, None, &leaf_b);
    assert!(!ok, "old root alone must not verify L_B: {out}");
    assert!(
        out.contains("unable to get local issuer certificate"),
        "{out}"
    );
    let (ok, out) = openssl_verify(&b_pem, None, &leaf_a);
    assert!(!ok, "new root must not verify L_A: {out}");
    assert!(
        out.contains("unable to get local issuer certificate"),
        "{out}"
    );
    // The cross-signed certificate itself chains to the old root.
    let (ok, out) = openssl_verify(&a_pem, None, &cross_pem);
    assert!(ok, "cross-signed cert must verify under A: {out}");
}

/// rustls/webpki (what the proxy uses) builds the same chains as openssl, matching names byte
/// for byte.
#[test]
fn rotation_chains_verify_with_rustls_webpki() {
    use rustls::RootCertStore;
    use rustls::client::verify_server_cert_signed_by_trust_anchor;
    use rustls::server::ParsedCertificate;
    use rustls_pki_types::UnixTime;

    let now = OffsetDateTime::now_utc();
    let a = root(1, now);
    let b = root(2, now);
    let cross = der_of(&BuiltinProvider.cross_sign(&a, &b, now).unwrap());
    let leaf_b = der_of(&leaf_for(&b, "web", now));
    let algs = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(now.unix_timestamp() as u64));
    let store = |roots: &[&StoredRoot]| {
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(der_of(&r.root.root_cert)).unwrap();
        }
        store
    };
    let parsed = ParsedCertificate::try_from(&leaf_b).unwrap();

    verify_server_cert_signed_by_trust_anchor(&parsed, &store(&[&b]), &[], at, algs).unwrap();
    verify_server_cert_signed_by_trust_anchor(&parsed, &store(&[&a]), &[cross], at, algs).unwrap();
    let err = verify_server_cert_signed_by_trust_anchor(&parsed, &store(&[&a]), &[], at, algs)
        .unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

#[test]
fn cross_signed_cert_carries_new_root_identity() {
    let now = OffsetDateTime::now_utc();
    let a = root(1, now);
    let b = root(2, now);
    let cross = BuiltinProvider
        .cross_sign(&a, &b, now + time::Duration::days(1))
        .unwrap();
    let (cross_der, a_der, b_der) = (
        der_of(&cross),
        der_of(&a.root.root_cert),
        der_of(&b.root.root_cert),
    );
    let (x, ca, cb) = (parse(&cross_der), parse(&a_der), parse(&b_der));

    assert_eq!(
        x.subject().as_raw(),
        cb.subject().as_raw(),
        "byte-identical subject"
    );
    assert_eq!(x.issuer().as_raw(), ca.subject().as_raw());
    assert_eq!(x.public_key().raw, cb.public_key().raw);
    assert!(x.basic_constraints().unwrap().unwrap().value.ca);
    let (x_ski, x_aki) = key_ids(&x);
    assert_eq!(x_ski.as_deref(), Some(b.root.signing_key_id.as_str()));
    assert_eq!(x_aki.as_deref(), Some(a.root.signing_key_id.as_str()));
    assert!(x.validity().not_after.to_datetime() <= ca.validity().not_after.to_datetime());
    let td_uri = format!("spiffe://{TD}");
    assert_eq!(subject_alt_names(&x), [GeneralName::URI(&td_uri)]);
}

#[test]
fn cross_sign_refuses_expired_old_root() {
    let now = OffsetDateTime::now_utc();
    let a = root(1, now);
    let later = now + time::Duration::days(3660);
    let b = root(2, later);
    let err = BuiltinProvider.cross_sign(&a, &b, later).unwrap_err();
    assert!(matches!(err, CaError::RootExpired { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Stored roots and bundles

#[test]
fn debug_never_prints_private_key() {
    let stored = root(1, OffsetDateTime::now_utc());
    let debug = format!("{stored:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("<redacted>"));
    let pretty = format!("{stored:#?}");
    assert!(!pretty.contains("PRIVATE KEY"));
}

#[test]
fn stored_root_round_trips_through_json_and_still_signs() {
    let now = OffsetDateTime::now_utc();
    let stored = root(1, now);
    let json = serde_json::to_string(&stored).unwrap();
    let back: StoredRoot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stored);
    let (csr, _) = generate_csr(&web_id()).unwrap();
    BuiltinProvider
        .sign_leaf(&back, &request(&csr, "web"), now)
        .unwrap();
}

#[test]
fn trust_bundle_concatenates_roots() {
    let now = OffsetDateTime::now_utc();
    let (a, b) = (root(1, now), root(2, now));
    let bundle = trust_bundle_pem(&[a.root.clone(), b.root.clone()]);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        certs,
        vec![der_of(&a.root.root_cert), der_of(&b.root.root_cert)]
    );
    assert_eq!(trust_bundle_pem(&[]), "");
}

#[test]
fn active_root_selection() {
    let now = OffsetDateTime::now_utc();
    let mut a = root(1, now);
    let b = root(2, now);
    a.root.active = false;
    assert_eq!(
        active_root(&[a.clone(), b.clone()]).unwrap().root.id,
        b.root.id
    );
    assert!(matches!(active_root(&[a]), Err(CaError::NoActiveRoot)));
}

proptest::proptest! {
    /// Arbitrary bytes in a CSR PEM envelope are rejected, never a panic.
    #[test]
    fn validate_csr_rejects_arbitrary_der(der in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let pem = pem_encode("CERTIFICATE REQUEST", &der);
        proptest::prop_assert!(validate_csr(&pem, &web_id()).is_err());
    }
}

/// A CA certificate made outside the CA (as an operator would with openssl), signed by its own
/// key; `ca` false makes an end-entity certificate instead.
fn operator_cert(key: &KeyPair, ca: bool, now: OffsetDateTime, days: i64) -> String {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Operator Root");
    params.distinguished_name = dn;
    params.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    params.self_signed(key).unwrap().pem()
}

#[test]
fn a_supplied_root_must_be_a_current_ca_with_its_own_p256_key() {
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let good = operator_cert(&key, true, now, 30);
    let cases = [
        (
            operator_cert(&key, false, now, 30),
            key.serialize_pem(),
            "not a CA certificate",
        ),
        (good.clone(), other.serialize_pem(), "does not match"),
        (
            good.clone(),
            "not a key".to_string(),
            "not a PEM private key",
        ),
        (
            operator_cert(&ed, true, now, 30),
            ed.serialize_pem(),
            "ECDSA P-256",
        ),
        (
            operator_cert(&key, true, now - time::Duration::days(10), 2),
            key.serialize_pem(),
            "not valid now",
        ),
        (
            "garbage".to_string(),
            key.serialize_pem(),
            "not a PEM certificate",
        ),
    ];
    for (cert, key_pem, expected) in cases {
        let e = BuiltinProvider
            .import_root(&cert, &key_pem, TD, 2, now)
            .unwrap_err();
        assert!(matches!(e, CaError::InvalidSuppliedRoot { .. }) && e.is_client_error());
        assert!(e.to_string().contains(expected), "{expected}: {e}");
        assert!(!e.to_string().contains("PRIVATE KEY"));
    }

    // A valid one: described from its certificate, cross-signable by the current root, and
    // able to sign leaves for the cluster's trust domain.
    let imported = BuiltinProvider
        .import_root(&good, &key.serialize_pem(), TD, 2, now)
        .unwrap();
    assert_eq!(imported.root.id, colon_hex(&sha256(&der_of(&good))));
    assert_eq!(imported.root.serial_number, 2);
    assert_eq!(imported.root.external_trust_domain, TD);
    let old = root(1, now);
    let cross = BuiltinProvider.cross_sign(&old, &imported, now).unwrap();
    let leaf = leaf_for(&imported, "web", now);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let (old_pem, cross_pem, leaf_pem) = (
        file("old.pem", &old.root.root_cert),
        file("cross.pem", &cross),
        file("leaf.pem", &leaf),
    );
    let (ok, out) = openssl_verify(&old_pem, Some(&cross_pem), &leaf_pem);
    assert!(ok, "{out}");
}
