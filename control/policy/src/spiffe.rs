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
    /// A namespace, datacenter or service segment is empty, `.`, `..` or not RFC 3986 unreserved.
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
                for seg in [ns, dc, svc] {
                    if !valid_segment(seg) {
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

/// Whether `name` can be the service segment of a SPIFFE ID (what a leaf can be issued for):
/// the check the CA applies to a CSR, for callers that refuse a name before any signing.
pub fn is_valid_service_name(name: &str) -> bool {
    valid_segment(name)
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
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
