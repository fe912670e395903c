//! A decision of the one decider with what decided it: `meshctl intention check`'s answer.
//!
//! Why in this crate: the answer must be the proxy's own. [`explain`] runs [`authorize`] (the
//! function the proxy's connection gate and per-request filter call) and words the rule with the
//! `Display` of [`Reason`], which is exactly what the proxy logs as `reason=` on its
//! `inbound connection denied` / `inbound request denied` lines; the deciding intention is the
//! one [`IntentionSet::deciding_intention`] names, which is the decider's own pick. So the CLI
//! cannot tell a different story than the data plane. Pure code, no I/O.
//!
//! The JSON form (`meshctl intention check -format=json`) is a stable object:
//!
//! ```json
//! {"Allowed": false,
//!  "Reason": "Matched L4 intention \"web\" => \"db\" (deny, precedence 9, ID …)",
//!  "Decided": {"Kind": "intention" | "permission" | "default" | "trust-domain",
//!              "Intention": {"ID", "SourceNS", "SourceName", "DestinationNS",
//!                            "DestinationName", "Precedence", "Action"} | null,
//!              "PermissionIndex": 0 | null,
//!              "DefaultPolicy": "allow" | "deny"},
//!  "Checks": [{"Name": "trust-domain" | "namespace", "Passed": bool, "Detail": "…"}]}
//! ```
//!
//! `Kind` is `default` both when no intention matched (`Intention` null) and when an L7
//! intention matched but none of its permissions did (`Intention` names it): the default
//! policy decided either way. `DefaultPolicy` is always the policy in force.

use std::fmt;

use serde::Serialize;

use crate::authorize::{Reason, authorize, trust_domain_denial};
use crate::intentions::{
    DEFAULT_NAMESPACE, DefaultPolicy, HttpReason, HttpRequest, IntentionKey, IntentionSet,
    Mismatch, Outcome, Reason as ConnectionReason,
};
use crate::model::{Intention, IntentionAction};
use crate::spiffe::SpiffeId;

/// What kind of rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedKind {
    /// An intention's `Action` (or its lack of one) decided.
    Intention,
    /// A permission of an L7 intention decided.
    Permission,
    /// The default policy decided.
    Default,
    /// The peer is not of this mesh's trust domain (or none is known yet): denied before any
    /// intention.
    TrustDomain,
}

/// The intention that decided, as Consul names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntentionRef {
    /// Consul's legacy `ID`; empty when the intention has none.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its source and destination (`SourceNS`, `SourceName`, `DestinationNS`,
    /// `DestinationName`).
    #[serde(flatten)]
    pub key: IntentionKey,
    /// Precedence as the decider computed it (9 = exact/exact ... 1).
    pub precedence: u32,
    /// The intention's `Action`; `null` for an L7 intention (one with `Permissions`).
    pub action: Option<IntentionAction>,
}

impl IntentionRef {
    /// The reference to `i` (its fields copied).
    pub fn of(i: &Intention) -> Self {
        Self {
            id: i.id.clone(),
            key: IntentionKey::of(i),
            precedence: i.precedence,
            action: i.action,
        }
    }
}

/// `intention "web" => "db" (precedence 9, ID …)`.
impl fmt::Display for IntentionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "intention {} (precedence {}", self.key, self.precedence)?;
        if !self.id.is_empty() {
            write!(f, ", ID {}", self.id)?;
        }
        f.write_str(")")
    }
}

/// What decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Decided {
    /// The kind of rule.
    pub kind: DecidedKind,
    /// The deciding intention (for `default`: the L7 intention none of whose permissions
    /// matched, if that is why).
    pub intention: Option<IntentionRef>,
    /// 0-based position of the deciding permission in the intention's `Permissions`.
    pub permission_index: Option<usize>,
    /// The default policy in force.
    pub default_policy: DefaultPolicy,
}

impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.intention, self.permission_index) {
            (DecidedKind::Permission, Some(i), Some(n)) => write!(f, "Permissions[{n}] of {i}"),
            (DecidedKind::Default, Some(i), _) => write!(
                f,
                "default policy ({}): no permission of {i} matched",
                self.default_policy
            ),
            (DecidedKind::Default, None, _) => {
                write!(f, "default policy ({})", self.default_policy)
            }
            (DecidedKind::TrustDomain, _, _) => f.write_str("the trust-domain check (deny)"),
            (_, Some(i), _) => i.fmt(f),
            (_, None, _) => f.write_str("no rule"),
        }
    }
}

/// A check the proxy makes besides the intentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// The peer's SPIFFE ID must name this mesh's trust domain (ASCII case-insensitive).
    TrustDomain,
    /// Intentions are matched in the peer's namespace (from its SPIFFE ID) and the
    /// destination's (`default`); fails when an intention was skipped for its namespace alone.
    Namespace,
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckName::TrustDomain => "trust-domain",
            CheckName::Namespace => "namespace",
        })
    }
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    /// Which check.
    pub name: CheckName,
    /// Whether it passed.
    pub passed: bool,
    /// What it compared, in words (for a failed trust-domain check, the proxy's reason).
    pub detail: String,
}

/// A decision and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Explanation {
    /// Whether the connection (or request) would be let through.
    pub allowed: bool,
    /// The decider's reason in the words the proxy logs.
    pub reason: String,
    /// The rule that decided.
    pub decided: Decided,
    /// The checks made besides the intentions, in the proxy's order.
    pub checks: Vec<Check>,
}

/// `Allowed`/`Denied` on the first line (what scripts read), then the reason in the proxy's
/// words, the rule, and one line per check.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.allowed { "Allowed" } else { "Denied" })?;
        writeln!(f, "Reason: {}", self.reason)?;
        write!(f, "Decided by: {}", self.decided)?;
        for c in &self.checks {
            let verdict = if c.passed { "passed" } else { "failed" };
            write!(f, "\nCheck {}: {verdict}: {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

/// The kind of rule behind `reason`, and whether it names an intention.
fn kind_of(reason: &Reason) -> (DecidedKind, bool) {
    match reason {
        Reason::NoTrustDomain | Reason::ForeignTrustDomain { .. } => {
            (DecidedKind::TrustDomain, false)
        }
        Reason::Connection(ConnectionReason::DefaultPolicy(_))
        | Reason::Request(HttpReason::DefaultPolicy(_)) => (DecidedKind::Default, false),
        Reason::Request(HttpReason::NoPermissionMatched { .. }) => (DecidedKind::Default, true),
        Reason::Request(HttpReason::Permission { .. }) => (DecidedKind::Permission, true),
        Reason::Connection(_) | Reason::Request(_) => (DecidedKind::Intention, true),
    }
}

fn namespace_check(set: &IntentionSet, peer: &SpiffeId, destination: &str) -> Check {
    let skipped: Vec<String> = set
        .explain_ns(
            &peer.namespace,
            &peer.service,
            DEFAULT_NAMESPACE,
            destination,
        )
        .into_iter()
        .filter(|c| {
            matches!(
                c.outcome,
                Outcome::NotMatched {
                    why: Mismatch::Namespace { .. }
                }
            )
        })
        .map(|c| IntentionKey::of(c.intention).to_string())
        .collect();
    let mut detail = format!(
        "intentions matched with source namespace {} (from the peer's SPIFFE ID) and destination namespace {DEFAULT_NAMESPACE}",
        peer.namespace
    );
    if !skipped.is_empty() {
        detail.push_str("; not matched for the namespace alone: ");
        detail.push_str(&skipped.join(", "));
    }
    Check {
        name: CheckName::Namespace,
        passed: skipped.is_empty(),
        detail,
    }
}

fn trust_domain_check(trust_domain: &str, peer: &SpiffeId) -> Check {
    let denial = trust_domain_denial(trust_domain, peer);
    Check {
        name: CheckName::TrustDomain,
        passed: denial.is_none(),
        detail: match denial {
            Some(reason) => reason.to_string(),
            None => format!(
                "peer's trust domain {:?} is this mesh's",
                peer.trust_domain.to_ascii_lowercase()
            ),
        },
    }
}

/// Decides a connection (`request: None`) or one request from `peer` to `destination` with
/// [`authorize`], and explains it.
pub fn explain(
    set: &IntentionSet,
    trust_domain: &str,
    peer: &SpiffeId,
    destination: &str,
    request: Option<&HttpRequest<'_>>,
) -> Explanation {
    let d = authorize(set, trust_domain, peer, destination, request);
    let (kind, names_intention) = kind_of(&d.reason);
    let intention = names_intention
        .then(|| {
            set.deciding_intention(
                &peer.namespace,
                &peer.service,
                DEFAULT_NAMESPACE,
                destination,
            )
        })
        .flatten()
        .map(IntentionRef::of);
    let permission_index = match &d.reason {
        Reason::Request(r) => r.permission_index(),
        _ => None,
    };
    Explanation {
        allowed: d.allowed,
        reason: d.reason.to_string(),
        decided: Decided {
            kind,
            intention,
            permission_index,
            default_policy: set.default_policy(),
        },
        checks: vec![
            trust_domain_check(trust_domain, peer),
            namespace_check(set, peer, destination),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intentions::intention_between;
    use crate::model::{HttpPermission, IntentionPermission};

    const TD: &str = "abc.consul";

    fn l4(src: &str, dst: &str, action: IntentionAction) -> Intention {
        Intention {
            action: Some(action),
            id: format!("id-{src}-{dst}"),
            ..intention_between(src, dst)
        }
    }

    fn peer(name: &str) -> SpiffeId {
        SpiffeId::service(TD, "dc1", name)
    }

    fn explain_l4(set: &IntentionSet, src: &SpiffeId) -> Explanation {
        explain(set, TD, src, "db", None)
    }

    #[test]
    fn exact_intention_is_named_with_id_and_precedence() {
        let set = IntentionSet::new(
            vec![
                l4("web", "db", IntentionAction::Deny),
                l4("*", "db", IntentionAction::Allow),
            ],
            DefaultPolicy::Allow,
        );
        let e = explain_l4(&set, &peer("web"));
        assert!(!e.allowed);
        // The proxy's words: the Display of the decider's reason.
        assert_eq!(
            e.reason,
            authorize(&set, TD, &peer("web"), "db", None)
                .reason
                .to_string()
        );
        assert_eq!(
            e.to_string(),
            "Denied\n\
             Reason: Matched L4 intention \"web\" => \"db\" (deny, precedence 9, ID id-web-db)\n\
             Decided by: intention \"web\" => \"db\" (precedence 9, ID id-web-db)\n\
             Check trust-domain: passed: peer's trust domain \"abc.consul\" is this mesh's\n\
             Check namespace: passed: intentions matched with source namespace default (from the peer's SPIFFE ID) and destination namespace default"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json["Decided"],
            serde_json::json!({
                "Kind": "intention",
                "Intention": {"ID": "id-web-db", "SourceNS": "default", "SourceName": "web",
                    "DestinationNS": "default", "DestinationName": "db", "Precedence": 9,
                    "Action": "deny"},
                "PermissionIndex": null,
                "DefaultPolicy": "allow",
            })
        );
        assert_eq!(json["Checks"][0]["Name"], "trust-domain");
        assert_eq!(json["Checks"][1]["Passed"], true);
    }

    #[test]
    fn wildcard_intention_decides_for_other_sources() {
        let set = IntentionSet::new(
            vec![
                l4("web", "db", IntentionAction::Deny),
                l4("*", "db", IntentionAction::Allow),
            ],
            DefaultPolicy::Deny,
        );
        let e = explain_l4(&set, &peer("api"));
        assert!(e.allowed);
        let i = e.decided.intention.as_ref().unwrap();
        assert_eq!((i.key.source_name.as_str(), i.precedence), ("*", 8));
        assert!(e.to_string().starts_with(
            "Allowed\nReason: Matched L4 intention \"*\" => \"db\" (allow, precedence 8"
        ));
    }

    #[test]
    fn default_policy_allow_and_deny() {
        for (default, first) in [
            (DefaultPolicy::Allow, "Allowed"),
            (DefaultPolicy::Deny, "Denied"),
        ] {
            let set = IntentionSet::new(vec![l4("api", "cache", IntentionAction::Allow)], default);
            let e = explain_l4(&set, &peer("web"));
            assert_eq!(e.allowed, default.allows());
            assert_eq!(e.decided.kind, DecidedKind::Default);
            assert_eq!(e.decided.intention, None);
            let text = e.to_string();
            assert!(text.starts_with(first), "{text}");
            assert!(
                text.contains(&format!("Decided by: default policy ({default})\n")),
                "{text}"
            );
        }
    }

    #[test]
    fn l7_permission_index_and_no_permission_matched() {
        let perm = |action, prefix: &str| IntentionPermission {
            action,
            http: Some(HttpPermission {
                path_prefix: prefix.to_string(),
                ..Default::default()
            }),
        };
        let mut i = intention_between("web", "db");
        i.id = "l7-id".into();
        i.permissions = vec![
            perm(IntentionAction::Deny, "/admin"),
            perm(IntentionAction::Allow, "/v1"),
        ];
        let set = IntentionSet::new(vec![i], DefaultPolicy::Deny);
        let headers = http::HeaderMap::new();
        let at = |path: &'static str| {
            let req = HttpRequest {
                method: &http::Method::GET,
                path,
                headers: &headers,
            };
            explain(&set, TD, &peer("web"), "db", Some(&req))
        };
        let e = at("/v1/items");
        assert!(e.allowed);
        assert_eq!(
            (e.decided.kind, e.decided.permission_index),
            (DecidedKind::Permission, Some(1))
        );
        assert!(
            e.to_string().contains(
                "Decided by: Permissions[1] of intention \"web\" => \"db\" (precedence 9, ID l7-id)"
            ),
            "{e}"
        );
        let e = at("/admin");
        assert!(!e.allowed);
        assert_eq!(e.decided.permission_index, Some(0));
        assert!(e.reason.contains("Permissions[0] (deny)"), "{}", e.reason);
        let e = at("/other");
        assert!(!e.allowed);
        assert_eq!(
            (e.decided.kind, e.decided.permission_index),
            (DecidedKind::Default, None)
        );
        assert_eq!(
            e.decided.intention.as_ref().map(|i| i.id.as_str()),
            Some("l7-id")
        );
        assert!(
            e.to_string()
                .contains("Decided by: default policy (deny): no permission of intention"),
            "{e}"
        );
        // At L4 the same intention denies.
        let e = explain_l4(&set, &peer("web"));
        assert_eq!((e.allowed, e.decided.kind), (false, DecidedKind::Intention));
        assert_eq!(e.decided.intention.as_ref().map(|i| i.action), Some(None));
    }

    #[test]
    fn namespace_and_trust_domain_checks() {
        let set = IntentionSet::new(
            vec![l4("web", "db", IntentionAction::Allow)],
            DefaultPolicy::Deny,
        );
        let other_ns = SpiffeId {
            namespace: "team-a".into(),
            ..peer("web")
        };
        let e = explain_l4(&set, &other_ns);
        assert!(!e.allowed);
        assert_eq!(e.decided.kind, DecidedKind::Default);
        let ns = &e.checks[1];
        assert!(!ns.passed);
        assert!(
            ns.detail.contains("source namespace team-a"),
            "{}",
            ns.detail
        );
        assert!(
            ns.detail
                .ends_with("not matched for the namespace alone: \"web\" => \"db\""),
            "{}",
            ns.detail
        );

        let foreign = SpiffeId::service("other.consul", "dc1", "web");
        let e = explain_l4(&set, &foreign);
        assert!(!e.allowed);
        assert_eq!(
            (e.decided.kind, e.decided.intention.as_ref()),
            (DecidedKind::TrustDomain, None)
        );
        assert!(!e.checks[0].passed);
        assert_eq!(e.checks[0].detail, e.reason);
        assert!(
            e.reason
                .contains("peer is in trust domain \"other.consul\""),
            "{}",
            e.reason
        );
        // Case-insensitive, as the proxy compares.
        assert!(explain(&set, "ABC.Consul", &peer("web"), "db", None).allowed);
    }
}
