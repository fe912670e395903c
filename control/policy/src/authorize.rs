//! The one decider: may this peer reach this service, and may it make this request?
//!
//! Why one function: the agent's `/v1/agent/connect/authorize`, the proxy's connection gate,
//! the proxy's per-request L7 decision and `meshctl intention check` used to decide on their
//! own, and they disagreed on edge cases (trust-domain case, an empty trust domain skipping the
//! check). Every caller now gathers its inputs and calls [`authorize`]; the [`Decision`] and its
//! [`Reason`] are the same type everywhere, so a log line, a metric label and an API answer can
//! never tell different stories about one decision.
//!
//! Rules, in order:
//! 1. No trust domain known (a snapshot taken before the CA existed): deny. Failing open here
//!    would accept any workload whose certificate chains to a trusted root.
//! 2. A peer from another trust domain (compared ASCII case-insensitively, as SPIFFE trust
//!    domains are) is denied: its certificate may chain to a root we trust, but it does not name
//!    a workload of this mesh.
//! 3. A connection is decided by the highest-precedence matching intention (an intention with
//!    L7 `Permissions` counts as deny at L4), else the default policy; a request by the L7
//!    matcher ([`IntentionSet::decide_http`]).
//!
//! Pure code, no I/O.

use std::fmt;

use crate::intentions::{
    DEFAULT_NAMESPACE, HttpReason, HttpRequest, IntentionSet, Reason as IntentionReason,
};
use crate::spiffe::SpiffeId;

/// Why a peer or a request was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The snapshot names no trust domain (the CA did not exist when it was taken).
    NoTrustDomain,
    /// The peer's identity names another trust domain.
    ForeignTrustDomain {
        /// The mesh's trust domain (from the snapshot).
        expected: String,
        /// The trust domain in the peer's SPIFFE ID.
        got: String,
    },
    /// A connection: an intention or the default policy decided.
    Connection(IntentionReason),
    /// A request: an L7 permission, an intention or the default policy decided.
    Request(HttpReason),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoTrustDomain => {
                f.write_str("the mesh's trust domain is not known yet (fail closed)")
            }
            Reason::ForeignTrustDomain { expected, got } => write!(
                f,
                "peer is in trust domain {got:?}, this mesh is {expected:?}"
            ),
            Reason::Connection(r) => r.fmt(f),
            Reason::Request(r) => r.fmt(f),
        }
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the peer's connection or request may go on.
    pub allowed: bool,
    /// Which check decided (trust domain, intention, permission or default policy).
    pub reason: Reason,
}

impl Decision {
    fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}

/// Rules 1 and 2 alone: the reason `peer` cannot be of this mesh whatever the intentions say,
/// or `None`. [`authorize`] starts with it; a caller that admits a connection before
/// deciding each request (an L7 destination) applies it to the connection.
pub fn trust_domain_denial(trust_domain: &str, peer: &SpiffeId) -> Option<Reason> {
    if trust_domain.is_empty() {
        return Some(Reason::NoTrustDomain);
    }
    if !peer.trust_domain.eq_ignore_ascii_case(trust_domain) {
        return Some(Reason::ForeignTrustDomain {
            expected: trust_domain.to_ascii_lowercase(),
            got: peer.trust_domain.clone(),
        });
    }
    None
}

/// Decides a connection (`request: None`) or one HTTP request from `peer` to `destination`
/// (default namespace), with the intentions of `set` and the mesh's `trust_domain`.
pub fn authorize(
    set: &IntentionSet,
    trust_domain: &str,
    peer: &SpiffeId,
    destination: &str,
    request: Option<&HttpRequest<'_>>,
) -> Decision {
    if let Some(reason) = trust_domain_denial(trust_domain, peer) {
        return Decision::deny(reason);
    }
    match request {
        None => {
            let d = set.decide_ns(
                &peer.namespace,
                &peer.service,
                DEFAULT_NAMESPACE,
                destination,
            );
            Decision {
                allowed: d.allowed,
                reason: Reason::Connection(d.reason),
            }
        }
        Some(req) => {
            let d = set.decide_http(
                &peer.namespace,
                &peer.service,
                DEFAULT_NAMESPACE,
                destination,
                req,
            );
            Decision {
                allowed: d.allowed,
                reason: Reason::Request(d.reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intentions::DefaultPolicy;
    use crate::model::{Intention, IntentionAction};

    fn set(default: DefaultPolicy) -> IntentionSet {
        let i: Intention = serde_json::from_value(serde_json::json!({
            "SourceName": "web", "DestinationName": "db", "Action": IntentionAction::Allow,
        }))
        .unwrap();
        IntentionSet::new(vec![i], default)
    }

    #[test]
    fn trust_domain_rules_come_first() {
        let s = set(DefaultPolicy::Allow);
        let web = SpiffeId::service("abc.consul", "dc1", "web");
        // No trust domain: deny, even with an allow intention and an allow default.
        let d = authorize(&s, "", &web, "db", None);
        assert_eq!(d, Decision::deny(Reason::NoTrustDomain));
        // Case-insensitive comparison.
        assert!(authorize(&s, "ABC.consul", &web, "db", None).allowed);
        let other = SpiffeId::service("other.consul", "dc1", "web");
        let d = authorize(&s, "abc.consul", &other, "db", None);
        assert!(!d.allowed);
        let reason = d.reason.to_string();
        assert!(reason.contains("other.consul"), "{reason}");
    }

    #[test]
    fn connections_and_requests() {
        let s = set(DefaultPolicy::Deny);
        let web = SpiffeId::service("abc.consul", "dc1", "web");
        let api = SpiffeId::service("abc.consul", "dc1", "api");
        let d = authorize(&s, "abc.consul", &web, "db", None);
        assert!(d.allowed && matches!(d.reason, Reason::Connection(_)));
        assert!(!authorize(&s, "abc.consul", &api, "db", None).allowed);
        let headers = http::HeaderMap::new();
        let req = HttpRequest {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
        };
        let d = authorize(&s, "abc.consul", &web, "db", Some(&req));
        assert!(d.allowed && matches!(d.reason, Reason::Request(_)));
    }
}
