//! SPIFFE identities of mesh services.
//!
//! Every workload certificate carries exactly one URI SAN of the form
//! `spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<svc>` (Consul's layout). This module is the one
//! place that formats and parses those IDs, so the CA, the agent's authorize endpoint and the
//! proxy all agree on what a valid identity is.

use std::fmt;
use std::str::FromStr;

/// Errors parsing a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The ID does not start with `spiffe://`.
    #[error("SPIFFE ID {id:?} must start with spiffe://")]
    Scheme {
        /// The ID as given.
        id: String,
    },
    /// The trust domain is empty or has characters other than `a-z 0-9 - . _`.
    #[error("SPIFFE ID {id:?} has an empty or invalid trust domain")]
    TrustDomain {
        /// The ID as given.
        id: String,
    },
    /// The path is not `/ns/<ns>/dc/<dc>/svc/<svc>`.
    #[error("SPIFFE ID {id:?} is not of the form spiffe://<td>/ns/<ns>/dc/<dc>/svc/<svc>")]
    Path {
        /// The ID as given.
        id: String,
    },
    /// A namespace, datacenter or service segment is empty, `.`, `..` or not RFC 3986 unreserved,
    /// or the service is longer than [`MAX_SERVICE_NAME_LEN`].
    #[error("SPIFFE ID {id:?} has an invalid segment {segment:?}")]
    Segment {
        /// The ID as given.
        id: String,
        /// The offending segment as written in the ID.
        segment: String,
    },
}

/// A service identity: `spiffe://<trust_domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The mesh's trust domain, lower-case (Consul's `<cluster-id>.consul`); the ID's host part.
    pub trust_domain: String,
    /// Consul namespace of the service (`default` in open source).
    pub namespace: String,
    /// Datacenter the service is registered in.
    pub datacenter: String,
    /// Service name: what intentions name as source or destination.
    pub service: String,
}

impl SpiffeId {
    /// Builds the identity of `service` in the default namespace.
    pub fn service(trust_domain: &str, datacenter: &str, service: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_ascii_lowercase(),
            namespace: "default".to_string(),
            datacenter: datacenter.to_string(),
            service: service.to_string(),
        }
    }

    /// The trust domain's own ID, as carried by root certificates: `spiffe://<td>`.
    pub fn trust_domain_uri(trust_domain: &str) -> String {
        format!("spiffe://{}", trust_domain.to_ascii_lowercase())
    }

    /// Parses `s`, requiring the service layout.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let err_path = || SpiffeIdError::Path { id: s.to_string() };
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme { id: s.to_string() })?;
        let (td, path) = rest.split_once('/').ok_or_else(err_path)?;
        if td.is_empty()
            || !td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(SpiffeIdError::TrustDomain { id: s.to_string() });
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "dc", dc, "svc", svc] => {
                let valid = [
                    valid_segment(ns),
                    valid_segment(dc),
                    is_valid_service_name(svc),
                ];
                for (seg, ok) in [ns, dc, svc].into_iter().zip(valid) {
                    if !ok {
                        return Err(SpiffeIdError::Segment {
                            id: s.to_string(),
                            segment: seg.to_string(),
                        });
                    }
                }
                Ok(Self {
                    trust_domain: td.to_string(),
                    namespace: ns.to_string(),
                    datacenter: dc.to_string(),
                    service: svc.to_string(),
                })
            }
            _ => Err(err_path()),
        }
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

/// The longest service name a leaf is issued for: Consul's DNS limit (a service name longer
/// than one DNS label, 63 bytes, is not discoverable through Consul's DNS interface), which also
/// keeps the leaf's common name within X.509's 64 characters.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// Why a name cannot be the service segment of a SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    /// Longer than [`MAX_SERVICE_NAME_LEN`].
    #[error(
        "is {len} bytes long: a service name is at most {MAX_SERVICE_NAME_LEN} bytes (one DNS \
         label, as Consul's DNS interface requires)"
    )]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// Empty, `.`, `..`, or a character outside RFC 3986's unreserved set.
    #[error("cannot be part of a SPIFFE ID: use letters, digits and - . _ ~ (not . or .. alone)")]
    Characters,
}

/// Checks that `name` can be the service segment of a SPIFFE ID (what a leaf can be issued
/// for): the check the CA applies to a CSR, for callers that refuse a name before any signing.
pub fn check_service_name(name: &str) -> Result<(), ServiceNameError> {
    if !valid_segment(name) {
        return Err(ServiceNameError::Characters);
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(ServiceNameError::TooLong { len: name.len() });
    }
    Ok(())
}

/// Whether [`check_service_name`] accepts `name`.
pub fn is_valid_service_name(name: &str) -> bool {
    check_service_name(name).is_ok()
}

/// Segments are the unreserved characters of RFC 3986 (SPIFFE ID spec, section 2.2).
fn valid_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/dc/{}/svc/{}",
            self.trust_domain, self.namespace, self.datacenter, self.service
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = SpiffeId::service("11111111-2222-3333-4444-555555555555.consul", "dc1", "web");
        let s = id.to_string();
        assert_eq!(
            s,
            "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
        );
        assert_eq!(SpiffeId::parse(&s).unwrap(), id);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://td/ns/default/dc/dc1/svc/web",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "spiffe://TD/ns/default/dc/dc1/svc/web",
            "spiffe://td/ns/default/dc/dc1/svc/",
            "spiffe://td/ns/default/dc/dc1/svc/web/extra",
            "spiffe://td/ns/default/dc/dc1/svc/..",
            "spiffe://td",
            "spiffe://td/ns/default/svc/web",
            "spiffe://td/ns/default/dc/dc1/svc/we%20b",
            format!("spiffe://td/ns/default/dc/dc1/svc/{}", "a".repeat(64)).as_str(),
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}

#[cfg(test)]
mod service_name_tests {
    use super::*;

    #[test]
    fn service_names_are_limited_in_length_and_characters() {
        assert_eq!(check_service_name(&"a".repeat(63)), Ok(()));
        assert_eq!(
            check_service_name(&"a".repeat(64)),
            Err(ServiceNameError::TooLong { len: 64 })
        );
        assert_eq!(
            check_service_name(&"a".repeat(5000)),
            Err(ServiceNameError::TooLong { len: 5000 })
        );
        for bad in ["", ".", "..", "bad name", "a/b", "é"] {
            assert_eq!(
                check_service_name(bad),
                Err(ServiceNameError::Characters),
                "{bad:?}"
            );
        }
        let long = format!("spiffe://td/ns/default/dc/dc1/svc/{}", "a".repeat(63));
        assert!(SpiffeId::parse(&long).is_ok());
    }
}
