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
//!
//! L7 services (declared protocol `http`, `http2` or `grpc`, carried in the snapshot as
//! [`Policy::protocol`]) are decided per request by [`Policy::authorize_http`], which calls the
//! control plane's own matcher (`IntentionSet::decide_http`, the code `meshctl intention check
//! --http-*` runs). For them the connection-level check only rejects peers of another trust
//! domain and admits every other peer with [`VerdictReason::PerRequest`]: every intention,
//! L4 or with `Permissions`, and the default policy then decide each request, as Consul's
//! Envoy configuration does (its network RBAC filter is replaced by the HTTP one for L7
//! protocols). A denied source so gets a 403 or `PERMISSION_DENIED` per request instead of a
//! reset connection, its bytes never reach the application, and the re-check of live
//! connections never closes an L7 connection over an intention change: the next request is
//! decided against the new intentions anyway.
//!
//! Static mode (`meshproxy run --config`) has no intentions: its policy is an allow-list of
//! source SPIFFE IDs ([`SourcePattern`]), default deny. It is the same [`Policy`] type behind the
//! same [`Policy::authorize`], so inbound decisions and the re-check of live connections need
//! no mode of their own.

use std::fmt;

use mesh_policy::authorize::{Reason, authorize, trust_domain_denial};
use mesh_policy::intentions::l7::{HttpReason, HttpRequest};
use mesh_policy::intentions::normalize::RequestNormalization;
use mesh_policy::intentions::{
    DEFAULT_NAMESPACE, DefaultPolicy, IntentionSet, Reason as IntentionReason,
};
use mesh_policy::model::{Intention, IntentionAction};
use mesh_policy::spiffe::SpiffeId;
use mesh_policy::wire::IntentionsSnapshot;

use mesh_policy::config_entries::Protocol;

/// Errors reading an intentions snapshot.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("intentions response for {destination:?} is not valid JSON")]
    Decode {
        destination: String,
        #[source]
        source: serde_json::Error,
    },
    /// Neither the snapshot nor the CA roots name the mesh's trust domain yet: every peer
    /// would be "foreign", so there is no policy to enforce (issue 10 point 2).
    #[error("intentions for {destination:?} carry no trust domain and the CA roots name none yet")]
    NoTrustDomain { destination: String },
}

/// The policy snapshot this proxy enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The local service (destination of every inbound connection).
    pub destination: String,
    /// The mesh's trust domain, lower case.
    pub trust_domain: String,
    /// `X-Consul-Index` of the snapshot (static mode: the reload generation).
    pub index: u64,
    /// Declared protocol of the destination: `tcp` decides connections, the others requests.
    pub protocol: Protocol,
    /// What L7 requests go through before they are decided (the `mesh` config entry's
    /// `HTTP.Incoming.RequestNormalization`; Consul's defaults in static mode).
    pub normalization: RequestNormalization,
    rules: Rules,
}

/// Where the decisions come from.
#[derive(Debug, Clone)]
enum Rules {
    /// Agent mode: the intentions of the destination.
    Intentions(IntentionSet),
    /// Static mode: only these sources are allowed, everything else is denied.
    AllowList(Vec<SourcePattern>),
}

/// Errors in an `allowed_sources` entry.
#[derive(Debug, thiserror::Error)]
pub enum SourcePatternError {
    #[error("{value:?} is not a SPIFFE service ID or spiffe://<td>/ns/<ns>/dc/<dc>/svc/*")]
    Invalid {
        value: String,
        #[source]
        source: mesh_policy::spiffe::SpiffeIdError,
    },
}

/// One entry of a static allow-list: an exact SPIFFE ID, or every service of one trust domain,
/// namespace and datacenter (`spiffe://<td>/ns/<ns>/dc/<dc>/svc/*`). No other wildcard exists,
/// so an entry never matches more than its text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePattern {
    Exact(SpiffeId),
    AllServices {
        trust_domain: String,
        namespace: String,
        datacenter: String,
    },
}

impl SourcePattern {
    pub fn parse(value: &str) -> Result<Self, SourcePatternError> {
        let invalid = |source| SourcePatternError::Invalid {
            value: value.to_string(),
            source,
        };
        if let Some(prefix) = value.strip_suffix("/svc/*") {
            // Validate the rest with the one SPIFFE parser, using a placeholder service.
            let id = SpiffeId::parse(&format!("{prefix}/svc/x")).map_err(invalid)?;
            return Ok(Self::AllServices {
                trust_domain: id.trust_domain,
                namespace: id.namespace,
                datacenter: id.datacenter,
            });
        }
        SpiffeId::parse(value).map(Self::Exact).map_err(invalid)
    }

    pub fn matches(&self, peer: &SpiffeId) -> bool {
        match self {
            Self::Exact(id) => id == peer,
            Self::AllServices {
                trust_domain,
                namespace,
                datacenter,
            } => {
                peer.trust_domain == *trust_domain
                    && peer.namespace == *namespace
                    && peer.datacenter == *datacenter
            }
        }
    }
}

impl fmt::Display for SourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => id.fmt(f),
            Self::AllServices {
                trust_domain,
                namespace,
                datacenter,
            } => write!(
                f,
                "spiffe://{trust_domain}/ns/{namespace}/dc/{datacenter}/svc/*"
            ),
        }
    }
}

/// Why a connection or a request was allowed or denied: one type for both, so log lines,
/// metric labels and the admin view tell the same story as the agent's authorize endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictReason {
    /// The one decider ([`mesh_policy::authorize`]) decided: trust domain, intention, L7
    /// permission or default policy.
    Policy(Reason),
    /// Static mode: this `allowed_sources` entry matched.
    AllowedSource { entry: String },
    /// Static mode: no `allowed_sources` entry matched (default deny).
    NotAllowed,
    /// L7 destination: the connection is admitted and every request is decided on its own.
    PerRequest { protocol: Protocol },
}

/// The `reason=` of the proxy's decision log lines. For [`VerdictReason::Policy`] it is the
/// decider's own `Display`, which `meshctl intention check` prints as its `Reason:` line
/// (`mesh_policy::explanation`): one wording for both.
impl fmt::Display for VerdictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerdictReason::Policy(r) => r.fmt(f),
            VerdictReason::AllowedSource { entry } => {
                write!(f, "allowed by allowed_sources entry {entry}")
            }
            VerdictReason::NotAllowed => f.write_str("not in allowed_sources (default deny)"),
            VerdictReason::PerRequest { protocol } => write!(
                f,
                "destination protocol is {protocol}: every request is authorized on its own"
            ),
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
    NoTrustDomain,
    ForeignTrustDomain,
    AllowedSource,
    NotAllowedSource,
    PerRequest,
    /// Requests: an L7 permission matched.
    Permission,
    /// Requests: an L7 intention had no matching permission; the default policy decided.
    NoPermissionMatched,
    /// Requests: an L4 intention decided.
    Intention,
    /// Requests: the deciding intention's permissions could not be compiled (deny).
    InvalidPermissions,
    /// Requests: no intention matched; the default policy decided.
    DefaultPolicy,
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
            ReasonKind::NoTrustDomain => "no_trust_domain",
            ReasonKind::ForeignTrustDomain => "foreign_trust_domain",
            ReasonKind::AllowedSource => "allowed_source",
            ReasonKind::NotAllowedSource => "not_allowed_source",
            ReasonKind::PerRequest => "per_request",
            ReasonKind::Permission => "permission",
            ReasonKind::NoPermissionMatched => "no_permission_matched",
            ReasonKind::Intention => "intention",
            ReasonKind::InvalidPermissions => "invalid_permissions",
            ReasonKind::DefaultPolicy => "default_policy",
        }
    }
}

/// A decision on a connection or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: VerdictReason,
}

impl Verdict {
    pub fn kind(&self) -> ReasonKind {
        match &self.reason {
            VerdictReason::Policy(r) => match r {
                Reason::NoTrustDomain => ReasonKind::NoTrustDomain,
                Reason::ForeignTrustDomain { .. } => ReasonKind::ForeignTrustDomain,
                Reason::Connection(r) => match r {
                    IntentionReason::Intention { action, .. } => match action {
                        IntentionAction::Allow => ReasonKind::IntentionAllow,
                        IntentionAction::Deny => ReasonKind::IntentionDeny,
                    },
                    IntentionReason::L7Intention { .. } => ReasonKind::L7Intention,
                    IntentionReason::NoAction { .. } => ReasonKind::NoAction,
                    IntentionReason::DefaultPolicy(p) => match p {
                        DefaultPolicy::Allow => ReasonKind::DefaultAllow,
                        DefaultPolicy::Deny => ReasonKind::DefaultDeny,
                    },
                },
                Reason::Request(r) => match r {
                    HttpReason::Permission { .. } => ReasonKind::Permission,
                    HttpReason::NoPermissionMatched { .. } => ReasonKind::NoPermissionMatched,
                    HttpReason::Intention { .. } => ReasonKind::Intention,
                    HttpReason::NoAction { .. } => ReasonKind::NoAction,
                    HttpReason::InvalidPermissions { .. } => ReasonKind::InvalidPermissions,
                    HttpReason::DefaultPolicy(_) => ReasonKind::DefaultPolicy,
                },
            },
            VerdictReason::AllowedSource { .. } => ReasonKind::AllowedSource,
            VerdictReason::NotAllowed => ReasonKind::NotAllowedSource,
            VerdictReason::PerRequest { .. } => ReasonKind::PerRequest,
        }
    }

    /// Metric label of the rule that decided a request, with bounded cardinality: the
    /// intention key (`web=>db`), with `#N` for permission N of it, or `default` when the
    /// default policy decided; fixed words otherwise. At most (intentions × permissions + a
    /// few) values.
    pub fn rule_label(&self) -> String {
        let r = match &self.reason {
            VerdictReason::Policy(Reason::Request(r)) => r,
            VerdictReason::Policy(Reason::Connection(_)) => return "connection".to_string(),
            VerdictReason::Policy(Reason::NoTrustDomain) => return "no_trust_domain".to_string(),
            VerdictReason::Policy(Reason::ForeignTrustDomain { .. }) => {
                return "foreign_trust_domain".to_string();
            }
            VerdictReason::AllowedSource { .. } => return "allowed_sources".to_string(),
            VerdictReason::NotAllowed => return "not_allowed_source".to_string(),
            VerdictReason::PerRequest { .. } => return "per_request".to_string(),
        };
        match (r, r.key()) {
            (HttpReason::NoPermissionMatched { .. } | HttpReason::DefaultPolicy(_), _)
            | (_, None) => "default".to_string(),
            (_, Some(k)) => {
                let mut s = String::with_capacity(32);
                if k.source_ns != DEFAULT_NAMESPACE {
                    s.push_str(&k.source_ns);
                    s.push('/');
                }
                s.push_str(&k.source_name);
                s.push_str("=>");
                if k.destination_ns != DEFAULT_NAMESPACE {
                    s.push_str(&k.destination_ns);
                    s.push('/');
                }
                s.push_str(&k.destination_name);
                if let Some(i) = r.permission_index() {
                    s.push('#');
                    s.push_str(&i.to_string());
                }
                s
            }
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
        let rules = Rules::Intentions(IntentionSet::new(intentions, default));
        Self::with_rules(destination, trust_domain, index, rules)
    }

    /// A static allow-list snapshot: `sources` are allowed, everything else is denied.
    /// `trust_domain` is this proxy's own (shown on `/config`; entries carry their own).
    pub fn allow_list(
        destination: &str,
        trust_domain: &str,
        index: u64,
        sources: Vec<SourcePattern>,
    ) -> Self {
        Self::with_rules(destination, trust_domain, index, Rules::AllowList(sources))
    }

    /// A `tcp` snapshot with Consul's default normalization (what the feeds refine).
    fn with_rules(destination: &str, trust_domain: &str, index: u64, rules: Rules) -> Self {
        Self {
            destination: destination.to_string(),
            trust_domain: trust_domain.to_ascii_lowercase(),
            index,
            protocol: Protocol::Tcp,
            normalization: RequestNormalization::default(),
            rules,
        }
    }

    /// Parses the agent's intentions response for `destination`. `fallback_trust_domain` (from
    /// the CA roots) is used when the body carries none; with neither, there is no policy
    /// ([`AuthzError::NoTrustDomain`]).
    pub fn from_agent_json(
        destination: &str,
        fallback_trust_domain: &str,
        index: u64,
        body: &[u8],
    ) -> Result<Self, AuthzError> {
        let b: IntentionsSnapshot =
            serde_json::from_slice(body).map_err(|source| AuthzError::Decode {
                destination: destination.to_string(),
                source,
            })?;
        let (set, own) = b.into_parts();
        let td = if own.is_empty() {
            fallback_trust_domain
        } else {
            &own
        };
        if td.is_empty() {
            return Err(AuthzError::NoTrustDomain {
                destination: destination.to_string(),
            });
        }
        Ok(Self::with_rules(
            destination,
            td,
            index,
            Rules::Intentions(set),
        ))
    }

    /// The same snapshot for a destination with declared protocol `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The same snapshot with the mesh's request normalization `normalization`.
    pub fn with_normalization(mut self, normalization: RequestNormalization) -> Self {
        self.normalization = normalization;
        self
    }

    pub fn default_policy(&self) -> DefaultPolicy {
        match &self.rules {
            Rules::Intentions(set) => set.default_policy(),
            Rules::AllowList(_) => DefaultPolicy::Deny,
        }
    }

    /// The intentions (none in static mode).
    pub fn intentions(&self) -> impl Iterator<Item = &Intention> {
        let set = match &self.rules {
            Rules::Intentions(set) => Some(set),
            Rules::AllowList(_) => None,
        };
        set.into_iter().flat_map(IntentionSet::iter)
    }

    /// The static allow-list, when this policy is one.
    pub fn allowed_sources(&self) -> Option<&[SourcePattern]> {
        match &self.rules {
            Rules::Intentions(_) => None,
            Rules::AllowList(l) => Some(l),
        }
    }

    /// Decides a connection from `peer` to this proxy's service.
    pub fn authorize(&self, peer: &SpiffeId) -> Verdict {
        self.decide(peer, None)
    }

    /// Decides one HTTP request from `peer` to this proxy's service: the L7 counterpart of
    /// [`authorize`](Self::authorize), with the same trust-domain rules first.
    pub fn authorize_http(&self, peer: &SpiffeId, req: &HttpRequest<'_>) -> Verdict {
        self.decide(peer, Some(req))
    }

    /// Static mode decides by its allow-list; agent mode asks the one decider, except that an
    /// L7 destination admits every connection its trust-domain rules admit (each request is
    /// then decided on its own).
    fn decide(&self, peer: &SpiffeId, req: Option<&HttpRequest<'_>>) -> Verdict {
        let set = match &self.rules {
            Rules::Intentions(set) => set,
            Rules::AllowList(list) => {
                return match list.iter().find(|p| p.matches(peer)) {
                    Some(p) => Verdict {
                        allowed: true,
                        reason: VerdictReason::AllowedSource {
                            entry: p.to_string(),
                        },
                    },
                    None => Verdict {
                        allowed: false,
                        reason: VerdictReason::NotAllowed,
                    },
                };
            }
        };
        if req.is_none() && self.protocol.is_l7() {
            // The trust-domain rules still apply to the connection.
            if let Some(reason) = trust_domain_denial(&self.trust_domain, peer) {
                return Verdict {
                    allowed: false,
                    reason: VerdictReason::Policy(reason),
                };
            }
            return Verdict {
                allowed: true,
                reason: VerdictReason::PerRequest {
                    protocol: self.protocol,
                },
            };
        }
        let d = authorize(set, &self.trust_domain, peer, &self.destination, req);
        Verdict {
            allowed: d.allowed,
            reason: VerdictReason::Policy(d.reason),
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
        // No trust domain in the body: the roots' one, and without that, no policy at all.
        let early = br#"{"DefaultPolicy":"deny","TrustDomain":"","Intentions":[]}"#;
        let p = Policy::from_agent_json("db", "td.consul", 8, early).unwrap();
        assert_eq!(p.trust_domain, "td.consul");
        assert!(matches!(
            Policy::from_agent_json("db", "", 8, early),
            Err(AuthzError::NoTrustDomain { .. })
        ));
    }

    #[test]
    fn allow_list_exact_and_all_services() {
        let web = SpiffeId::service(TD, "dc1", "web");
        let p = Policy::allow_list("db", TD, 1, vec![SourcePattern::parse(&web.uri()).unwrap()]);
        assert_eq!(p.authorize(&web).kind(), ReasonKind::AllowedSource);
        let v = p.authorize(&peer("api"));
        assert!(!v.allowed);
        assert_eq!(v.kind(), ReasonKind::NotAllowedSource);
        assert!(!p.authorize(&SpiffeId::service(TD, "dc2", "web")).allowed);
        assert!(
            !p.authorize(&SpiffeId::service("other", "dc1", "web"))
                .allowed
        );
        assert_eq!(p.intentions().count(), 0);

        let all = SourcePattern::parse(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/*")).unwrap();
        assert_eq!(
            all.to_string(),
            format!("spiffe://{TD}/ns/default/dc/dc1/svc/*")
        );
        let p = Policy::allow_list("db", TD, 1, vec![all]);
        assert!(p.authorize(&peer("api")).allowed);
        assert!(!p.authorize(&SpiffeId::service(TD, "dc2", "api")).allowed);
        assert!(
            !p.authorize(&SpiffeId::service("other", "dc1", "api"))
                .allowed
        );
        assert!(
            !Policy::allow_list("db", TD, 1, vec![])
                .authorize(&peer("web"))
                .allowed
        );
    }

    #[test]
    fn allow_list_rejects_other_wildcards() {
        for bad in [
            "spiffe://td/ns/default/dc/dc1/svc/web*",
            "spiffe://td/ns/default/dc/*/svc/*",
            "spiffe://td/*",
            "spiffe://*/ns/default/dc/dc1/svc/web",
            "web",
        ] {
            assert!(SourcePattern::parse(bad).is_err(), "{bad} accepted");
        }
    }

    fn get(path: &str) -> (http::Method, String, http::HeaderMap) {
        (http::Method::GET, path.to_string(), http::HeaderMap::new())
    }

    fn decide_http(p: &Policy, src: &SpiffeId, path: &str) -> Verdict {
        let (m, path, h) = get(path);
        p.authorize_http(
            src,
            &HttpRequest {
                method: &m,
                path: &path,
                headers: &h,
            },
        )
    }

    fn l7(src: &str, perms: serde_json::Value) -> Intention {
        let mut i = intention(src, "db", None);
        i.permissions = serde_json::from_value(perms).unwrap();
        i
    }

    #[test]
    fn l7_protocol_admits_in_trust_domain_and_decides_per_request() {
        let p = Policy::new(
            "db",
            TD,
            1,
            vec![
                l7(
                    "web",
                    serde_json::json!([
                        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                        {"Action": "allow", "HTTP": {"PathPrefix": "/"}},
                    ]),
                ),
                intention("api", "db", Some(IntentionAction::Deny)),
            ],
            DefaultPolicy::Deny,
        );
        // tcp: the permission intention denies the connection.
        assert_eq!(p.authorize(&peer("web")).kind(), ReasonKind::L7Intention);
        let p = p.with_protocol(Protocol::Http);
        for src in ["web", "api", "other"] {
            let v = p.authorize(&peer(src));
            assert!(v.allowed, "{src}: {v:?}");
            assert_eq!(v.kind(), ReasonKind::PerRequest);
        }
        let foreign = SpiffeId::service("other.consul", "dc1", "web");
        assert_eq!(p.authorize(&foreign).kind(), ReasonKind::ForeignTrustDomain);
        let v = decide_http(&p, &foreign, "/");
        assert!(!v.allowed);
        assert_eq!(v.kind().as_str(), "foreign_trust_domain");

        let v = decide_http(&p, &peer("web"), "/admin/x");
        assert!(!v.allowed);
        assert_eq!(v.rule_label(), "web=>db#0");
        assert!(
            v.reason.to_string().contains("Permissions[0]"),
            "{}",
            v.reason
        );
        let v = decide_http(&p, &peer("web"), "/x");
        assert!(v.allowed);
        assert_eq!(
            (v.rule_label().as_str(), v.kind().as_str()),
            ("web=>db#1", "permission")
        );
        // An L4 deny intention denies every request; no intention: the default policy.
        let v = decide_http(&p, &peer("api"), "/x");
        assert!(!v.allowed);
        assert_eq!(
            (v.rule_label().as_str(), v.kind().as_str()),
            ("api=>db", "intention")
        );
        let v = decide_http(&p, &peer("other"), "/x");
        assert!(!v.allowed);
        assert_eq!(
            (v.rule_label().as_str(), v.kind().as_str()),
            ("default", "default_policy")
        );
    }

    #[test]
    fn no_permission_matched_falls_back_to_default() {
        let perms = serde_json::json!([{"Action": "allow", "HTTP": {"PathExact": "/a"}}]);
        for (default, allowed) in [(DefaultPolicy::Deny, false), (DefaultPolicy::Allow, true)] {
            let p = Policy::new("db", TD, 1, vec![l7("web", perms.clone())], default)
                .with_protocol(Protocol::Grpc);
            let v = decide_http(&p, &peer("web"), "/b");
            assert_eq!(v.allowed, allowed);
            assert_eq!(
                (v.rule_label().as_str(), v.kind().as_str()),
                ("default", "no_permission_matched")
            );
        }
    }

    #[test]
    fn static_allow_list_decides_requests_by_source() {
        let web = peer("web");
        let p = Policy::allow_list("db", TD, 1, vec![SourcePattern::parse(&web.uri()).unwrap()])
            .with_protocol(Protocol::Http);
        assert!(decide_http(&p, &web, "/anything").allowed);
        let v = decide_http(&p, &peer("api"), "/anything");
        assert!(!v.allowed);
        assert_eq!(v.rule_label(), "not_allowed_source");
        // The allow-list still applies at the connection.
        assert!(!p.authorize(&peer("api")).allowed);
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

        /// One decider: the agent's `/v1/agent/connect/authorize` and this proxy's connection
        /// gate decide identically, reason text included, for random intention sets (L4 and
        /// L7, wildcards, both default policies) and random callers (own or foreign trust
        /// domain in any case, other namespaces, wildcard-matching and unknown names).
        #[test]
        fn agent_endpoint_and_proxy_decide_identically(
            intentions in proptest::collection::vec(arb_intention(), 0..8),
            src in prop_oneof![Just("web"), Just("api"), Just("db"), Just("other")],
            dst in prop_oneof![Just("web"), Just("api"), Just("db")],
            ns in prop_oneof![Just("default"), Just("team-a")],
            td in prop_oneof![Just(TD), Just("other.consul"), Just("OTHER.consul")],
            mesh_td in prop_oneof![Just(TD.to_string()), Just(TD.to_ascii_uppercase())],
            allow_default in any::<bool>(),
        ) {
            let default = if allow_default { DefaultPolicy::Allow } else { DefaultPolicy::Deny };
            let uri = format!("spiffe://{td}/ns/{ns}/dc/dc1/svc/{src}");
            let view = mesh_control::agent::cache::IntentionView {
                set: IntentionSet::new(intentions.clone(), default),
                trust_domain: mesh_td.clone(),
                raw: Default::default(),
            };
            let agent = mesh_control::agent::authorize::decide(&view, dst, &uri);
            let Ok(peer) = SpiffeId::parse(&uri) else {
                // Not a SPIFFE ID this mesh accepts: the proxy's certificate check refuses
                // such a peer before any decision; the endpoint must refuse it too.
                prop_assert!(!agent.authorized, "{}", uri);
                return Ok(());
            };
            let proxy = Policy::new(dst, &mesh_td, 1, intentions, default).authorize(&peer);
            prop_assert_eq!(agent.authorized, proxy.allowed, "{}", uri);
            prop_assert_eq!(agent.reason, proxy.reason.to_string(), "{}", uri);
        }
    }
}
