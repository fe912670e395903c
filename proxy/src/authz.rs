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

use mesh_policy::intentions::l7::{HttpReason, HttpRequest};
use mesh_policy::intentions::normalize::RequestNormalization;
use mesh_policy::intentions::{DEFAULT_NAMESPACE, DefaultPolicy, IntentionSet, Reason};
use mesh_policy::model::{Intention, IntentionAction};
use mesh_policy::spiffe::SpiffeId;
use serde::Deserialize;

use crate::l7::Protocol;

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

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictReason {
    /// The peer's certificate names a different trust domain.
    ForeignTrustDomain { expected: String, got: String },
    /// An intention or the default policy decided.
    Intentions(Reason),
    /// Static mode: this `allowed_sources` entry matched.
    AllowedSource { entry: String },
    /// Static mode: no `allowed_sources` entry matched (default deny).
    NotAllowed,
    /// L7 destination: the connection is admitted and every request is decided on its own.
    PerRequest { protocol: Protocol },
}

impl fmt::Display for VerdictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerdictReason::ForeignTrustDomain { expected, got } => write!(
                f,
                "peer is in trust domain {got:?}, this mesh is {expected:?}"
            ),
            VerdictReason::Intentions(r) => r.fmt(f),
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
    ForeignTrustDomain,
    AllowedSource,
    NotAllowedSource,
    PerRequest,
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
            ReasonKind::AllowedSource => "allowed_source",
            ReasonKind::NotAllowedSource => "not_allowed_source",
            ReasonKind::PerRequest => "per_request",
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
            VerdictReason::AllowedSource { .. } => ReasonKind::AllowedSource,
            VerdictReason::NotAllowed => ReasonKind::NotAllowedSource,
            VerdictReason::PerRequest { .. } => ReasonKind::PerRequest,
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
            protocol: Protocol::Tcp,
            normalization: RequestNormalization::default(),
            rules: Rules::Intentions(IntentionSet::new(intentions, default)),
        }
    }

    /// A static allow-list snapshot: `sources` are allowed, everything else is denied.
    /// `trust_domain` is this proxy's own (shown on `/config`; entries carry their own).
    pub fn allow_list(
        destination: &str,
        trust_domain: &str,
        index: u64,
        sources: Vec<SourcePattern>,
    ) -> Self {
        Self {
            destination: destination.to_string(),
            trust_domain: trust_domain.to_ascii_lowercase(),
            index,
            protocol: Protocol::Tcp,
            normalization: RequestNormalization::default(),
            rules: Rules::AllowList(sources),
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
        if td.is_empty() {
            return Err(AuthzError::NoTrustDomain {
                destination: destination.to_string(),
            });
        }
        Ok(Self::new(
            destination,
            td,
            index,
            b.intentions,
            b.default_policy,
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
        let set = match self.gate(peer) {
            Gate::Intentions(set) => set,
            Gate::Decided { allowed, reason } => {
                return Verdict {
                    allowed,
                    reason: reason.into(),
                };
            }
        };
        if self.protocol.is_l7() {
            return Verdict {
                allowed: true,
                reason: VerdictReason::PerRequest {
                    protocol: self.protocol,
                },
            };
        }
        let d = set.decide_ns(
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

/// Why a request was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdictReason {
    /// The peer's certificate names a different trust domain.
    ForeignTrustDomain { expected: String, got: String },
    /// The control plane's L7 matcher decided.
    Intentions(HttpReason),
    /// Static mode: this `allowed_sources` entry matched (no per-request rules exist there).
    AllowedSource { entry: String },
    /// Static mode: no `allowed_sources` entry matched.
    NotAllowed,
}

impl fmt::Display for HttpVerdictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpVerdictReason::ForeignTrustDomain { expected, got } => write!(
                f,
                "peer is in trust domain {got:?}, this mesh is {expected:?}"
            ),
            HttpVerdictReason::Intentions(r) => r.fmt(f),
            HttpVerdictReason::AllowedSource { entry } => {
                write!(f, "allowed by allowed_sources entry {entry}")
            }
            HttpVerdictReason::NotAllowed => f.write_str("not in allowed_sources (default deny)"),
        }
    }
}

/// A per-request decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpVerdict {
    pub allowed: bool,
    pub reason: HttpVerdictReason,
}

impl HttpVerdict {
    /// Metric label of the rule that decided, with bounded cardinality: the intention key
    /// (`web=>db`), with `#N` for permission N of it, or `default` when the default policy
    /// decided; fixed words otherwise. At most (intentions × permissions + a few) values.
    pub fn rule_label(&self) -> String {
        match &self.reason {
            HttpVerdictReason::Intentions(r) => match (r, r.key()) {
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
            },
            HttpVerdictReason::ForeignTrustDomain { .. } => "foreign_trust_domain".to_string(),
            HttpVerdictReason::AllowedSource { .. } => "allowed_sources".to_string(),
            HttpVerdictReason::NotAllowed => "not_allowed_source".to_string(),
        }
    }

    /// Metric label of the kind of reason (a closed set).
    pub fn kind(&self) -> &'static str {
        match &self.reason {
            HttpVerdictReason::Intentions(r) => r.kind(),
            HttpVerdictReason::ForeignTrustDomain { .. } => "foreign_trust_domain",
            HttpVerdictReason::AllowedSource { .. } => "allowed_source",
            HttpVerdictReason::NotAllowed => "not_allowed_source",
        }
    }
}

impl Policy {
    /// Decides one HTTP request from `peer` to this proxy's service: the L7 counterpart of
    /// [`authorize`](Self::authorize), with the same trust-domain rule first.
    pub fn authorize_http(&self, peer: &SpiffeId, req: &HttpRequest<'_>) -> HttpVerdict {
        let set = match self.gate(peer) {
            Gate::Intentions(set) => set,
            Gate::Decided { allowed, reason } => {
                return HttpVerdict {
                    allowed,
                    reason: reason.into(),
                };
            }
        };
        let d = set.decide_http(
            &peer.namespace,
            &peer.service,
            DEFAULT_NAMESPACE,
            &self.destination,
            req,
        );
        HttpVerdict {
            allowed: d.allowed,
            reason: HttpVerdictReason::Intentions(d.reason),
        }
    }
}

/// What both [`Policy::authorize`] and [`Policy::authorize_http`] decide before any intention
/// is read, so the connection and the request paths can never apply different rules: the
/// static allow-list decides on its own (its entries name their trust domain themselves);
/// otherwise a peer from another trust domain is denied; otherwise the intentions decide.
enum Gate<'a> {
    Intentions(&'a IntentionSet),
    Decided { allowed: bool, reason: GateReason },
}

/// Why the [`Gate`] decided.
enum GateReason {
    ForeignTrustDomain { expected: String, got: String },
    AllowedSource { entry: String },
    NotAllowed,
}

impl From<GateReason> for VerdictReason {
    fn from(r: GateReason) -> Self {
        match r {
            GateReason::ForeignTrustDomain { expected, got } => {
                VerdictReason::ForeignTrustDomain { expected, got }
            }
            GateReason::AllowedSource { entry } => VerdictReason::AllowedSource { entry },
            GateReason::NotAllowed => VerdictReason::NotAllowed,
        }
    }
}

impl From<GateReason> for HttpVerdictReason {
    fn from(r: GateReason) -> Self {
        match r {
            GateReason::ForeignTrustDomain { expected, got } => {
                HttpVerdictReason::ForeignTrustDomain { expected, got }
            }
            GateReason::AllowedSource { entry } => HttpVerdictReason::AllowedSource { entry },
            GateReason::NotAllowed => HttpVerdictReason::NotAllowed,
        }
    }
}

impl Policy {
    fn gate(&self, peer: &SpiffeId) -> Gate<'_> {
        let set = match &self.rules {
            Rules::Intentions(set) => set,
            Rules::AllowList(list) => {
                return match list.iter().find(|p| p.matches(peer)) {
                    Some(p) => Gate::Decided {
                        allowed: true,
                        reason: GateReason::AllowedSource {
                            entry: p.to_string(),
                        },
                    },
                    None => Gate::Decided {
                        allowed: false,
                        reason: GateReason::NotAllowed,
                    },
                };
            }
        };
        if !peer.trust_domain.eq_ignore_ascii_case(&self.trust_domain) {
            return Gate::Decided {
                allowed: false,
                reason: GateReason::ForeignTrustDomain {
                    expected: self.trust_domain.clone(),
                    got: peer.trust_domain.clone(),
                },
            };
        }
        Gate::Intentions(set)
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

    fn decide_http(p: &Policy, src: &SpiffeId, path: &str) -> HttpVerdict {
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
        assert_eq!(v.kind(), "foreign_trust_domain");

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
            (v.rule_label().as_str(), v.kind()),
            ("web=>db#1", "permission")
        );
        // An L4 deny intention denies every request; no intention: the default policy.
        let v = decide_http(&p, &peer("api"), "/x");
        assert!(!v.allowed);
        assert_eq!(
            (v.rule_label().as_str(), v.kind()),
            ("api=>db", "intention")
        );
        let v = decide_http(&p, &peer("other"), "/x");
        assert!(!v.allowed);
        assert_eq!(
            (v.rule_label().as_str(), v.kind()),
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
                (v.rule_label().as_str(), v.kind()),
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
    }
}
