//! Authorization of inbound connections: peer SPIFFE ID + local service → allow or deny, with
//! the reason.
//!
//! Pure code with no I/O, like ztunnel's `rbac.rs`: the [`Policy`] is a snapshot of the
//! intentions that can apply to this proxy's service (as the agent serves them), indexed by
//! [`IntentionSet`], plus the mesh's trust domain. The same function decides a new connection
//! and re-checks live ones when the snapshot changes, so both always agree.
//!
//! Rules, in order: a peer from another trust domain is denied (its certificate may chain to a
//! root we trust, but it does not name a workload of this mesh); otherwise the
//! highest-precedence matching intention decides, an intention with L7 `Permissions` counting as
//! deny at L4; otherwise the default policy decides (deny unless the agent says allow).

use std::fmt;

use mesh_control::intentions::{DEFAULT_NAMESPACE, DefaultPolicy, IntentionSet, Reason};
use mesh_control::model::{Intention, IntentionAction};
use mesh_control::spiffe::SpiffeId;
use serde::Deserialize;

/// Errors reading an intentions snapshot.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("intentions response for {destination:?} is not valid JSON")]
    Decode {
        destination: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Body of `GET /v1/agent/connect/intentions/:destination`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IntentionsBody {
    #[serde(default)]
    default_policy: DefaultPolicy,
    #[serde(default)]
    trust_domain: String,
    #[serde(default)]
    intentions: Vec<Intention>,
}

/// The intentions snapshot this proxy enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The local service (destination of every inbound connection).
    pub destination: String,
    /// The mesh's trust domain, lower case.
    pub trust_domain: String,
    /// `X-Consul-Index` of the snapshot.
    pub index: u64,
    set: IntentionSet,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictReason {
    /// The peer's certificate names a different trust domain.
    ForeignTrustDomain { expected: String, got: String },
    /// An intention or the default policy decided.
    Intentions(Reason),
}

impl fmt::Display for VerdictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerdictReason::ForeignTrustDomain { expected, got } => write!(
                f,
                "peer is in trust domain {got:?}, this mesh is {expected:?}"
            ),
            VerdictReason::Intentions(r) => r.fmt(f),
        }
    }
}

/// Metric label of a decision's reason: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    IntentionAllow,
    IntentionDeny,
    L7Intention,
    NoAction,
    DefaultAllow,
    DefaultDeny,
    ForeignTrustDomain,
}

impl ReasonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::IntentionAllow => "intention_allow",
            ReasonKind::IntentionDeny => "intention_deny",
            ReasonKind::L7Intention => "l7_intention",
            ReasonKind::NoAction => "no_action",
            ReasonKind::DefaultAllow => "default_allow",
            ReasonKind::DefaultDeny => "default_deny",
            ReasonKind::ForeignTrustDomain => "foreign_trust_domain",
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: VerdictReason,
}

impl Verdict {
    pub fn kind(&self) -> ReasonKind {
        match &self.reason {
            VerdictReason::ForeignTrustDomain { .. } => ReasonKind::ForeignTrustDomain,
            VerdictReason::Intentions(Reason::Intention { action, .. }) => match action {
                IntentionAction::Allow => ReasonKind::IntentionAllow,
                IntentionAction::Deny => ReasonKind::IntentionDeny,
            },
            VerdictReason::Intentions(Reason::L7Intention { .. }) => ReasonKind::L7Intention,
            VerdictReason::Intentions(Reason::NoAction { .. }) => ReasonKind::NoAction,
            VerdictReason::Intentions(Reason::DefaultPolicy(p)) => match p {
                DefaultPolicy::Allow => ReasonKind::DefaultAllow,
                DefaultPolicy::Deny => ReasonKind::DefaultDeny,
            },
        }
    }
}

impl Policy {
    /// A snapshot from intentions already in hand.
    pub fn new(
        destination: &str,
        trust_domain: &str,
        index: u64,
        intentions: Vec<Intention>,
        default: DefaultPolicy,
    ) -> Self {
        Self {
            destination: destination.to_string(),
            trust_domain: trust_domain.to_ascii_lowercase(),
            index,
            set: IntentionSet::new(intentions, default),
        }
    }

    /// Parses the agent's intentions response for `destination`. `fallback_trust_domain` (from
    /// the CA roots) is used when the body carries none.
    pub fn from_agent_json(
        destination: &str,
        fallback_trust_domain: &str,
        index: u64,
        body: &[u8],
    ) -> Result<Self, AuthzError> {
        let b: IntentionsBody =
            serde_json::from_slice(body).map_err(|source| AuthzError::Decode {
                destination: destination.to_string(),
                source,
            })?;
        let td = if b.trust_domain.is_empty() {
            fallback_trust_domain
        } else {
            &b.trust_domain
        };
        Ok(Self::new(
            destination,
            td,
            index,
            b.intentions,
            b.default_policy,
        ))
    }

    pub fn default_policy(&self) -> DefaultPolicy {
        self.set.default_policy()
    }

    pub fn intentions(&self) -> impl Iterator<Item = &Intention> {
        self.set.iter()
    }

    /// Decides a connection from `peer` to this proxy's service.
    pub fn authorize(&self, peer: &SpiffeId) -> Verdict {
        if !peer.trust_domain.eq_ignore_ascii_case(&self.trust_domain) {
            return Verdict {
                allowed: false,
                reason: VerdictReason::ForeignTrustDomain {
                    expected: self.trust_domain.clone(),
                    got: peer.trust_domain.clone(),
                },
            };
        }
        let d = self.set.decide_ns(
            &peer.namespace,
            &peer.service,
            DEFAULT_NAMESPACE,
            &self.destination,
        );
        Verdict {
            allowed: d.allowed,
            reason: VerdictReason::Intentions(d.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

    fn intention(src: &str, dst: &str, action: Option<IntentionAction>) -> Intention {
        serde_json::from_value(serde_json::json!({
            "SourceName": src, "DestinationName": dst,
            "Action": action.map(IntentionAction::as_str),
        }))
        .unwrap()
    }

    fn peer(svc: &str) -> SpiffeId {
        SpiffeId::service(TD, "dc1", svc)
    }

    #[test]
    fn default_deny_and_allow() {
        let p = Policy::new("db", TD, 1, vec![], DefaultPolicy::Deny);
        let v = p.authorize(&peer("web"));
        assert!(!v.allowed);
        assert_eq!(v.kind(), ReasonKind::DefaultDeny);
        let p = Policy::new("db", TD, 1, vec![], DefaultPolicy::Allow);
        assert_eq!(p.authorize(&peer("web")).kind(), ReasonKind::DefaultAllow);
    }

    #[test]
    fn exact_beats_wildcard() {
        let p = Policy::new(
            "db",
            TD,
            1,
            vec![
                intention("*", "db", Some(IntentionAction::Deny)),
                intention("web", "db", Some(IntentionAction::Allow)),
            ],
            DefaultPolicy::Deny,
        );
        let v = p.authorize(&peer("web"));
        assert!(v.allowed, "{v:?}");
        assert!(
            v.reason.to_string().contains("\"web\" => \"db\""),
            "{}",
            v.reason
        );
        assert_eq!(p.authorize(&peer("api")).kind(), ReasonKind::IntentionDeny);
    }

    #[test]
    fn l7_intention_denies_at_l4() {
        let mut i = intention("web", "db", None);
        i.permissions = vec![
            serde_json::from_value(serde_json::json!({
                "Action": "allow", "HTTP": {"PathPrefix": "/"}
            }))
            .unwrap(),
        ];
        let p = Policy::new("db", TD, 1, vec![i], DefaultPolicy::Allow);
        let v = p.authorize(&peer("web"));
        assert!(!v.allowed);
        assert_eq!(v.kind(), ReasonKind::L7Intention);
    }

    #[test]
    fn foreign_trust_domain_denied_even_with_allow_all() {
        let p = Policy::new(
            "db",
            TD,
            1,
            vec![intention("*", "*", Some(IntentionAction::Allow))],
            DefaultPolicy::Allow,
        );
        let v = p.authorize(&SpiffeId::service("other.consul", "dc1", "web"));
        assert!(!v.allowed);
        assert_eq!(v.kind(), ReasonKind::ForeignTrustDomain);
    }

    #[test]
    fn parses_agent_body() {
        let body = br#"{"DefaultPolicy":"deny","TrustDomain":"td.consul",
            "Intentions":[{"SourceName":"web","DestinationName":"db","Action":"allow"}]}"#;
        let p = Policy::from_agent_json("db", "x", 7, body).unwrap();
        assert_eq!(p.trust_domain, "td.consul");
        assert_eq!(p.index, 7);
        assert!(
            p.authorize(&SpiffeId::service("td.consul", "dc1", "web"))
                .allowed
        );
        assert!(Policy::from_agent_json("db", "x", 7, b"nope").is_err());
    }

    fn arb_intention() -> impl Strategy<Value = Intention> {
        let name = prop_oneof![Just("web"), Just("api"), Just("db"), Just("*")];
        let action = prop_oneof![
            Just(Some(IntentionAction::Allow)),
            Just(Some(IntentionAction::Deny)),
            Just(None),
        ];
        (name.clone(), name, action).prop_map(|(s, d, a)| {
            let mut i = intention(s, d, a);
            if a.is_none() {
                i.permissions = vec![
                    serde_json::from_value(serde_json::json!({
                        "Action": "allow", "HTTP": {"PathPrefix": "/x"}
                    }))
                    .unwrap(),
                ];
            }
            i
        })
    }

    proptest! {
        /// The decision does not depend on the order intentions arrive in, and agrees with the
        /// control plane's own `IntentionSet` (the agent's authorize endpoint).
        #[test]
        fn order_independent_and_matches_control_plane(
            intentions in proptest::collection::vec(arb_intention(), 0..8),
            src in prop_oneof![Just("web"), Just("api"), Just("other")],
            allow_default in any::<bool>(),
        ) {
            let default = if allow_default { DefaultPolicy::Allow } else { DefaultPolicy::Deny };
            let p = Policy::new("db", TD, 1, intentions.clone(), default);
            let mut rev = intentions.clone();
            rev.reverse();
            let q = Policy::new("db", TD, 1, rev, default);
            let v = p.authorize(&peer(src));
            prop_assert_eq!(&v, &q.authorize(&peer(src)));
            let d = IntentionSet::new(intentions, default).decide(src, "db");
            prop_assert_eq!(v.allowed, d.allowed);
            if v.kind() == ReasonKind::L7Intention {
                prop_assert!(!v.allowed);
            }
        }
    }
}
