//! Certificate generation for the control plane's CA: ECDSA P-256 keys generated here (on the
//! host that will use them), a self-signed CA, and server or client certificates it signs.
//!
//! Choices, following Consul's `tls ca create` / `tls cert create` where it has one:
//! * CA: `-days` 1825 by default, path length 0 (it signs end-entity certificates only), key
//!   usages certificate and CRL signing; a distinct common name per CA (a random suffix), so two
//!   CAs never share a subject.
//! * Server and client certificates: 365 days by default; SANs `<role>.<dc>.<domain>`,
//!   `localhost`, `127.0.0.1` and the `-additional-*` names; both TLS server and client
//!   authentication (an agent dials servers and may serve TLS itself, a server dials servers).
//! * The CA key must match the CA certificate: a mismatched pair is refused here, before it
//!   could sign certificates nobody can verify.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

/// Consul's default lifetime of an agent CA.
pub const DEFAULT_CA_DAYS: u32 = 1825;
/// Consul's default lifetime of a server or client certificate.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Longest lifetime accepted for either (100 years).
pub const MAX_DAYS: u32 = 36_500;
/// The domain of control-plane names (`server.dc1.mesh`), as Consul's `consul`.
pub const DEFAULT_DOMAIN: &str = "mesh";

/// Certificates are valid from a minute ago, for clocks a little behind.
const BACKDATE: Duration = Duration::minutes(1);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} {value:?} is not a DNS label (lowercase letters, digits and '-')")]
    BadLabel { what: &'static str, value: String },
    #[error("-days must be between 1 and {MAX_DAYS}, got {0}")]
    BadDays(u32),
    #[error("-additional-dnsname {0:?} is not a DNS name")]
    BadDnsName(String),
    #[error("the CA certificate does not parse: {0}")]
    BadCaCert(String),
    #[error("the CA key does not parse: {0}")]
    BadCaKey(String),
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (no basic constraints CA:TRUE)")]
    NotACa,
    #[error("generating the {what} failed: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate and its private key, PEM. The key is a secret: `Debug` never shows it.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Whom a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// The name a `role` certificate of datacenter `dc` carries: `server.dc1.mesh`.
pub fn role_name(role: Role, dc: &str, domain: &str) -> String {
    format!("{}.{dc}.{domain}", role.as_str())
}

fn label(what: &'static str, value: &str) -> Result<(), PkiError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadLabel {
            what,
            value: value.to_string(),
        })
    }
}

fn days(d: u32) -> Result<Duration, PkiError> {
    if (1..=MAX_DAYS).contains(&d) {
        Ok(Duration::days(i64::from(d)))
    } else {
        Err(PkiError::BadDays(d))
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// Valid from [`BACKDATE`] before `now` (whole seconds) for `lifetime`, with a random serial.
fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.serial_number = Some(random_serial());
}

/// A new CA for `domain`, valid `ca_days` from `now`.
pub fn create_ca(domain: &str, ca_days: u32, now: OffsetDateTime) -> Result<CertAndKey, PkiError> {
    label("-domain", domain)?;
    let lifetime = days(ca_days)?;
    let generate = |what| move |source| PkiError::Generate { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("CA key"))?;
    let mut params = CertificateParams::default();
    let suffix: u32 = rand::random();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("Mesh Agent CA {suffix:08x} ({domain})"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, lifetime);
    let cert = params
        .self_signed(&key)
        .map_err(generate("CA certificate"))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a server or client certificate is for.
#[derive(Debug, Clone)]
pub struct CertRequest<'a> {
    pub role: Role,
    pub datacenter: &'a str,
    pub domain: &'a str,
    pub days: u32,
    pub extra_dns: &'a [String],
    pub extra_ips: &'a [IpAddr],
}

impl<'a> CertRequest<'a> {
    /// A `role` certificate for `datacenter` with the defaults of `meshctl tls cert create`:
    /// the `mesh` domain, [`DEFAULT_CERT_DAYS`], no additional names.
    pub fn new(role: Role, datacenter: &'a str) -> Self {
        Self {
            role,
            datacenter,
            domain: DEFAULT_DOMAIN,
            days: DEFAULT_CERT_DAYS,
            extra_dns: &[],
            extra_ips: &[],
        }
    }
}

/// A new `req.role` certificate signed by the CA `ca_cert_pem` / `ca_key_pem`, with a key of
/// its own.
pub fn create_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    req: &CertRequest<'_>,
    now: OffsetDateTime,
) -> Result<CertAndKey, PkiError> {
    label("-dc", req.datacenter)?;
    label("-domain", req.domain)?;
    let lifetime = days(req.days)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| PkiError::BadCaKey(e.to_string()))?;
    check_ca(ca_cert_pem, &ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| PkiError::BadCaCert(e.to_string()))?;

    let name = role_name(req.role, req.datacenter, req.domain);
    let mut sans = vec![dns(&name)?, dns("localhost")?];
    for n in req.extra_dns {
        sans.push(dns(n)?);
    }
    sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    sans.extend(req.extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));

    let generate = |what| move |source| PkiError::Generate { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, now, lifetime);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate("certificate"))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn dns(name: &str) -> Result<SanType, PkiError> {
    let bad = || PkiError::BadDnsName(name.to_string());
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(bad());
    }
    Ok(SanType::DnsName(name.try_into().map_err(|_| bad())?))
}

/// The CA certificate is a CA and `key` is its key.
fn check_ca(ca_cert_pem: &str, key: &KeyPair) -> Result<(), PkiError> {
    let der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| PkiError::BadCaCert(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCaCert(e.to_string()))?;
    if !cert.is_ca() {
        return Err(PkiError::NotACa);
    }
    if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(PkiError::KeyMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_req<'a>() -> CertRequest<'a> {
        CertRequest::new(Role::Server, "dc1")
    }

    #[test]
    fn a_ca_signs_a_server_certificate_named_for_its_datacenter() {
        let now = OffsetDateTime::now_utc();
        let ca = create_ca(DEFAULT_DOMAIN, DEFAULT_CA_DAYS, now).unwrap();
        let leaf = create_cert(&ca.cert_pem, &ca.key_pem, &server_req(), now).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", sans.value.general_names);
        assert!(text.contains("server.dc1.mesh"), "{text}");
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn mismatched_or_non_ca_inputs_are_refused() {
        let now = OffsetDateTime::now_utc();
        let a = create_ca(DEFAULT_DOMAIN, 10, now).unwrap();
        let b = create_ca(DEFAULT_DOMAIN, 10, now).unwrap();
        assert!(matches!(
            create_cert(&a.cert_pem, &b.key_pem, &server_req(), now),
            Err(PkiError::KeyMismatch)
        ));
        let leaf = create_cert(&a.cert_pem, &a.key_pem, &server_req(), now).unwrap();
        assert!(matches!(
            create_cert(&leaf.cert_pem, &leaf.key_pem, &server_req(), now),
            Err(PkiError::NotACa)
        ));
        let bad_dc = CertRequest {
            datacenter: "DC 1",
            ..server_req()
        };
        assert!(matches!(
            create_cert(&a.cert_pem, &a.key_pem, &bad_dc, now),
            Err(PkiError::BadLabel { .. })
        ));
        assert!(matches!(
            create_ca("mesh", 0, now),
            Err(PkiError::BadDays(0))
        ));
    }
}
