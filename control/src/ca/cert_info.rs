//! Small certificate helpers shared by the CA modules: hashing, hex and time formatting, random
//! serials, and reading back the fields of a certificate we issued.
//!
//! They exist so that the `builtin` provider can describe what it actually wrote (a root's ID,
//! key ID and validity are read back from the encoded certificate, not from the parameters we
//! meant to encode) and so that the cross-signer can copy another root's subject byte for byte.

use rcgen::{DistinguishedName, DnType, DnValue};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{OffsetDateTime, UtcOffset};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::x509::X509Name;

/// Lowercase hex bytes joined by `:`, the form Consul uses for serials and key IDs.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// SHA-256 of `data`.
///
/// Taken from the aws-lc-rs provider that rustls already links (via a TLS 1.3 suite's hash),
/// so the crate needs no second hashing library.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
    debug_assert_eq!(
        suite.common.hash_provider.algorithm(),
        rustls::crypto::hash::HashAlgorithm::SHA256
    );
    suite.common.hash_provider.hash(data).as_ref().to_vec()
}

/// `t` in UTC with the sub-second part dropped: certificates carry whole seconds, and callers
/// record the same instant that ends up in the certificate.
pub(crate) fn whole_seconds_utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
}

/// RFC 3339 in UTC with second precision, e.g. `2024-05-01T12:00:00Z` (Go's `time.RFC3339`).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = whole_seconds_utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A random, positive, minimally encoded 16-byte certificate serial (RFC 5280 section 4.1.2.2
/// wants serials unpredictable and at most 20 bytes).
pub(crate) fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    // Top bit clear keeps the INTEGER positive; a non-zero first byte keeps it 16 bytes long.
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

/// The DER of the first `CERTIFICATE` block of `pem`.
pub(crate) fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("no certificate PEM: {e}"))
}

/// Parses a whole DER certificate (trailing bytes are an error).
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".to_string()),
        Err(e) => Err(format!("unparsable certificate: {e}")),
    }
}

/// The SubjectKeyIdentifier extension's value, if present.
pub(crate) fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(kid) => Some(kid.0.to_vec()),
            _ => None,
        })
}

/// All URI subject alternative names of `cert`.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.iter_extensions()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// Converts a parsed X.509 name into rcgen's form, keeping each attribute's string type so the
/// re-encoded name is byte-identical (rustls/webpki match issuer to subject byte for byte).
pub(crate) fn dn_from_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("multi-valued or empty RDN in name".to_string());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("name attribute OID too large")?
            .collect();
        let value = attr.attr_value();
        let text = std::str::from_utf8(value.data)
            .map_err(|_| "name attribute is not UTF-8".to_string())?;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_string()),
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|e| format!("bad PrintableString: {e}"))?,
            ),
            Tag::Ia5String => {
                DnValue::Ia5String(text.try_into().map_err(|e| format!("bad IA5String: {e}"))?)
            }
            other => return Err(format!("unsupported string type {other} in name")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_hex_formats() {
        assert_eq!(colon_hex(&[]), "");
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x00]), "0a:ff:00");
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            colon_hex(&sha256(b"abc")),
            "ba:78:16:bf:8f:01:cf:ea:41:41:40:de:5d:ae:22:23:b0:03:61:a3:96:17:7a:9c:b4:10:ff:61:f2:00:15:ad"
        );
    }

    #[test]
    fn rfc3339_is_utc_whole_seconds() {
        let t = time::Date::from_calendar_date(2024, time::Month::February, 29)
            .unwrap()
            .with_hms_nano(23, 30, 5, 750_000_000)
            .unwrap()
            .assume_offset(UtcOffset::from_hms(-1, 0, 0).unwrap());
        assert_eq!(rfc3339(t), "2024-03-01T00:30:05Z");
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial();
        let b = random_serial();
        assert_ne!(a, b);
        assert!(a[0] != 0 && a[0] < 0x80);
    }
}
