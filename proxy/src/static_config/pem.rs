//! PEM and X.509 loading for static mode: the leaf chain and its PKCS#8 key (whose file mode
//! must keep it private), and the trust bundle, turned into the [`LeafCert`] and
//! [`CaRootList`] the agent would have served, with every error naming the file.

use std::path::Path;

use mesh_policy::model::{CaRoot, CaRootList};
use mesh_policy::spiffe::SpiffeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::agent::LeafCert;
use crate::tls::TlsError;

use super::error::{StaticConfigError, invalid};

pub(super) fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, StaticConfigError> {
    std::fs::read(path).map_err(|source| StaticConfigError::ReadFile {
        field,
        path: path.to_path_buf(),
        source,
    })
}

/// The key must not be accessible by group or others (like ssh and SPIRE's own files).
pub(super) fn check_key_mode(path: &Path) -> Result<(), StaticConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| StaticConfigError::ReadFile {
        field: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StaticConfigError::KeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The PEM blocks of type CERTIFICATE in `text`, each as its own PEM string.
fn certificate_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// The trust bundle as the agent's root list: one root per certificate, IDs from a hash of the
/// certificate so a changed bundle shows as changed root IDs.
pub(super) fn roots_from_bundle(
    path: &Path,
    bytes: &[u8],
    trust_domain: &str,
) -> Result<CaRootList, StaticConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        invalid(
            "trust_bundle",
            format!("{} is not PEM text", path.display()),
        )
    })?;
    let mut roots = Vec::new();
    for (i, pem) in certificate_blocks(text).into_iter().enumerate() {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            invalid(
                "trust_bundle",
                format!("certificate {i} in {} does not parse: {e}", path.display()),
            )
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            invalid(
                "trust_bundle",
                format!("certificate {i} in {} does not parse: {e}", path.display()),
            )
        })?;
        let validity = cert.validity();
        roots.push(CaRoot {
            id: format!("{:016x}", mesh_policy::hash::fnv1a64(&der)),
            name: cert.subject().to_string(),
            serial_number: 0,
            signing_key_id: String::new(),
            external_trust_domain: String::new(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
            root_cert: pem,
            intermediate_certs: Vec::new(),
            active: i == 0,
            private_key_type: String::new(),
            private_key_bits: 0,
            rotated_out_at: 0,
            create_index: 0,
            modify_index: 0,
        });
    }
    if roots.is_empty() {
        return Err(invalid(
            "trust_bundle",
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(CaRootList {
        active_root_id: roots[0].id.clone(),
        trust_domain: trust_domain.to_string(),
        roots,
    })
}

/// The leaf as the agent would serve it, after the X.509-SVID checks: a certificate chain, the
/// first one not a CA and carrying exactly one URI SAN that is a SPIFFE service ID.
pub(super) fn leaf_from_files(
    cert_path: &Path,
    cert: &[u8],
    key: &[u8],
    generation: u64,
) -> Result<(LeafCert, SpiffeId), StaticConfigError> {
    let bad = |reason: String| invalid("cert", format!("{}: {reason}", cert_path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("PEM does not parse: {e}")))?;
    let first = chain
        .first()
        .ok_or_else(|| bad("holds no PEM certificate".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| bad(format!("leaf certificate does not parse: {e}")))?;
    if parsed.is_ca() {
        return Err(bad(
            "the first certificate is a CA, not an X.509-SVID leaf".into()
        ));
    }
    let id = crate::tls::spiffe_id_of(first).map_err(|e| match e {
        TlsError::UriSanCount { count } => bad(format!(
            "not a SPIFFE X.509-SVID: it must carry exactly one URI SAN, found {count}"
        )),
        TlsError::InvalidSpiffeId { source, .. } => bad(format!("its URI SAN: {source}")),
        e => bad(format!("not a SPIFFE X.509-SVID: {e}")),
    })?;
    let key_text = std::str::from_utf8(key).unwrap_or_default();
    match PrivateKeyDer::from_pem_slice(key) {
        Ok(PrivateKeyDer::Pkcs8(_)) => {}
        Ok(_) => {
            return Err(invalid(
                "key",
                "expected a PKCS#8 key (-----BEGIN PRIVATE KEY-----)",
            ));
        }
        Err(e) => return Err(invalid("key", format!("PEM does not parse: {e}"))),
    }
    let validity = parsed.validity();
    Ok((
        LeafCert {
            serial_number: parsed.raw_serial_as_string(),
            cert_pem: String::from_utf8_lossy(cert).into_owned(),
            private_key_pem: key_text.to_string(),
            service: id.service.clone(),
            service_uri: id.uri(),
            valid_after: validity.not_before.to_string(),
            valid_before: validity.not_after.to_string(),
            create_index: generation,
            modify_index: generation,
            root_id: String::new(),
        },
        id,
    ))
}
