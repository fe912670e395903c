//! The operator's choice of TLS 1.3 cipher suites (`tls.cipher_suites` in static mode,
//! `--tls-cipher-suites` in agent mode), in preference order.
//!
//! Why: rustls' first preference is AES-256-GCM, while Go, BoringSSL and Envoy pick AES-128-GCM
//! on AES-NI hardware, which is cheaper per byte at the same (TLS 1.3) security level; peers and
//! benches pin a suite and expect the proxy to honour it. Only TLS 1.3 suites exist here (the
//! proxy speaks nothing older), named as IANA and OpenSSL name them. The choice narrows the
//! provider both sides build their configs from, so a proxy offers and accepts exactly these;
//! an empty choice keeps the provider's defaults.

use std::fmt;
use std::sync::Arc;

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;
use serde::Serialize;

/// The TLS 1.3 suites this proxy can be configured with, by their IANA names.
pub const SUPPORTED: [(&str, CipherSuite); 3] = [
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// A list of cipher suite names that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherSuiteError {
    #[error("unknown cipher suite {name:?} (supported: {})", supported_names())]
    Unknown { name: String },
    #[error("cipher suite {name} is listed twice")]
    Duplicate { name: &'static str },
    #[error(
        "the cipher suite list is empty (leave it out for the defaults: {})",
        supported_names()
    )]
    Empty,
}

fn supported_names() -> String {
    SUPPORTED.map(|(n, _)| n).join(", ")
}

/// Chosen suites in preference order; none chosen means the provider's defaults. `Copy`, as
/// the TLS options it is part of.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CipherSuites {
    chosen: [Option<usize>; SUPPORTED.len()],
}

impl CipherSuites {
    /// Parses names (IANA or OpenSSL spelling, any case; `TLS13_` as rustls writes them too).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, CipherSuiteError> {
        if names.is_empty() {
            return Err(CipherSuiteError::Empty);
        }
        let mut out = Self::default();
        for (slot, name) in names.iter().map(AsRef::as_ref).enumerate() {
            let wanted = name
                .trim()
                .to_ascii_uppercase()
                .replacen("TLS13_", "TLS_", 1);
            let i = SUPPORTED
                .iter()
                .position(|(n, _)| *n == wanted)
                .ok_or_else(|| CipherSuiteError::Unknown {
                    name: name.to_string(),
                })?;
            if out.chosen.contains(&Some(i)) {
                return Err(CipherSuiteError::Duplicate {
                    name: SUPPORTED[i].0,
                });
            }
            // At most SUPPORTED.len() distinct names get here.
            out.chosen[slot] = Some(i);
        }
        Ok(out)
    }

    /// A comma-separated list (the flag's form).
    pub fn parse_csv(list: &str) -> Result<Self, CipherSuiteError> {
        let names: Vec<&str> = list.split(',').filter(|s| !s.trim().is_empty()).collect();
        Self::parse(&names)
    }

    /// Whether the defaults apply.
    pub fn is_default(&self) -> bool {
        self.chosen[0].is_none()
    }

    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.chosen.iter().flatten().map(|i| SUPPORTED[*i].0)
    }

    /// `base` narrowed to the chosen suites in their order (`base` itself for the defaults).
    /// Built once per certificate rotation, never per connection.
    pub fn provider(&self, base: &Arc<CryptoProvider>) -> Arc<CryptoProvider> {
        if self.is_default() {
            return base.clone();
        }
        let suites = self
            .chosen
            .iter()
            .flatten()
            .filter_map(|i| {
                base.cipher_suites
                    .iter()
                    .find(|s| s.suite() == SUPPORTED[*i].1)
                    .copied()
            })
            .collect();
        Arc::new(CryptoProvider {
            cipher_suites: suites,
            ..(**base).clone()
        })
    }
}

impl fmt::Debug for CipherSuites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Shown in `/config` as the list of names (`[]` for the defaults).
impl Serialize for CipherSuites {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn names_parse_in_order_in_any_spelling() {
        let c =
            CipherSuites::parse(&["tls_aes_128_gcm_sha256", "TLS13_AES_256_GCM_SHA384"]).unwrap();
        assert_eq!(
            format!("{c:?}"),
            r#"["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]"#
        );
        let p = c.provider(&provider());
        let got: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            got,
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384
            ]
        );
        assert_eq!(
            CipherSuites::parse_csv("TLS_CHACHA20_POLY1305_SHA256").unwrap(),
            CipherSuites::parse(&["TLS_CHACHA20_POLY1305_SHA256"]).unwrap()
        );
    }

    #[test]
    fn the_defaults_keep_the_provider() {
        let base = provider();
        let c = CipherSuites::default();
        assert!(c.is_default());
        assert!(Arc::ptr_eq(&c.provider(&base), &base));
        assert_eq!(serde_json::to_string(&c).unwrap(), "[]");
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        for (names, want) in [
            (vec!["TLS_AES_128_CCM_SHA256"], "unknown cipher suite"),
            (
                vec!["ECDHE-RSA-AES128-GCM-SHA256"],
                "supported: TLS_AES_128_GCM_SHA256",
            ),
            (
                vec!["TLS_AES_128_GCM_SHA256", "tls_aes_128_gcm_sha256"],
                "listed twice",
            ),
            (vec![], "empty"),
        ] {
            let e = CipherSuites::parse(&names).unwrap_err().to_string();
            assert!(e.contains(want), "{names:?}: {e}");
        }
        assert!(CipherSuites::parse_csv(" , ").is_err());
    }
}
