//! Tests of the L7 matcher (`decide_http`) against Consul's documented `Permissions` semantics
//! (service-intentions config entry: permissions are evaluated top to bottom, the first match
//! is terminal, no match falls back to the default policy) and Envoy's header-matcher rules
//! that Consul relies on.

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

use super::l7::{HttpReason, HttpRequest};
use super::matcher::{MAX_REGEX_LEN, RegexError, compile_regex};
use super::*;
use crate::model::{HeaderPermission, HttpPermission, IntentionPermission};

use IntentionAction::{Allow, Deny};

fn l4(src: &str, dst: &str, action: IntentionAction) -> Intention {
    let mut i = intention_between(src, dst);
    i.action = Some(action);
    i
}

fn l7(src: &str, dst: &str, perms: Vec<IntentionPermission>) -> Intention {
    let mut i = intention_between(src, dst);
    i.permissions = perms;
    assert_eq!(validate(&i), Ok(()), "test intention must be valid: {i:?}");
    i
}

fn p(action: IntentionAction, http: HttpPermission) -> IntentionPermission {
    IntentionPermission {
        action,
        http: Some(http),
    }
}

fn prefix(path: &str) -> HttpPermission {
    HttpPermission {
        path_prefix: path.to_string(),
        ..Default::default()
    }
}

fn hdr(name: &str, f: impl FnOnce(&mut HeaderPermission)) -> HttpPermission {
    let mut h = HeaderPermission {
        name: name.to_string(),
        ..Default::default()
    };
    f(&mut h);
    HttpPermission {
        header: vec![h],
        ..Default::default()
    }
}

/// Request parts owned by the test; `req()` borrows them the way the proxy does.
struct Req {
    method: Method,
    path: String,
    headers: HeaderMap,
}

impl Req {
    fn new(method: &str, path: &str) -> Self {
        Self {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.to_string(),
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.append(k, HeaderValue::from_str(v).unwrap());
        self
    }

    fn req(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
        }
    }
}

fn set(intentions: Vec<Intention>, default: DefaultPolicy) -> IntentionSet {
    IntentionSet::new(intentions, default)
}

/// The set of one L7 intention, `web => api` with `perms`.
fn web_api(perms: Vec<IntentionPermission>, default: DefaultPolicy) -> IntentionSet {
    set(vec![l7("web", "api", perms)], default)
}

fn decide(s: &IntentionSet, r: &Req) -> HttpDecision {
    s.decide_http_default_ns("web", "api", &r.req())
}

#[test]
fn path_exact_prefix_and_regex() {
    let s = web_api(
        vec![
            p(
                Allow,
                HttpPermission {
                    path_exact: "/health".into(),
                    ..Default::default()
                },
            ),
            p(Allow, prefix("/v1/")),
            p(
                Allow,
                HttpPermission {
                    path_regex: "/items/[0-9]+".into(),
                    ..Default::default()
                },
            ),
        ],
        DefaultPolicy::Deny,
    );
    let cases = [
        ("/health", Some(0)),
        ("/health/", None),
        ("/healthz", None),
        ("/v1/x", Some(1)),
        ("/v1", None),
        ("/items/42", Some(2)),
        // Full match: neither a suffix nor a prefix of the pattern is enough.
        ("/items/42/edit", None),
        ("/x/items/42", None),
        ("/items/", None),
    ];
    for (path, want) in cases {
        let d = decide(&s, &Req::new("GET", path));
        assert_eq!(d.reason.permission_index(), want, "{path}: {d}");
        assert_eq!(d.allowed, want.is_some(), "{path}: {d}");
        if want.is_none() {
            assert!(
                matches!(
                    d.reason,
                    HttpReason::NoPermissionMatched {
                        default: DefaultPolicy::Deny,
                        ..
                    }
                ),
                "{path}: {d}"
            );
        }
    }
}

#[test]
fn methods_restrict_the_match() {
    let s = web_api(
        vec![p(
            Allow,
            HttpPermission {
                path_prefix: "/invoices".into(),
                methods: vec!["GET".into(), "HEAD".into()],
                ..Default::default()
            },
        )],
        DefaultPolicy::Deny,
    );
    assert!(decide(&s, &Req::new("GET", "/invoices/1")).allowed);
    assert!(decide(&s, &Req::new("HEAD", "/invoices/1")).allowed);
    assert!(!decide(&s, &Req::new("POST", "/invoices/1")).allowed);
    assert!(!decide(&s, &Req::new("get", "/invoices/1")).allowed);
    assert!(!decide(&s, &Req::new("GET", "/refunds")).allowed);
}

/// Each header match kind, plain and inverted, against a present, a different and an absent
/// header. Absent headers only match `Present` + `Invert` (Envoy's header matcher).
#[test]
fn every_header_match_kind_with_invert() {
    type Setter = fn(&mut HeaderPermission);
    let kinds: [(&str, Setter); 5] = [
        ("present", |h| h.present = true),
        ("exact", |h| h.exact = "alice".into()),
        ("prefix", |h| h.prefix = "ali".into()),
        ("suffix", |h| h.suffix = "ice".into()),
        ("regex", |h| h.regex = "a[a-z]+e".into()),
    ];
    // (value sent, expected for each kind in order) without Invert.
    let rows: [(Option<&str>, [bool; 5]); 4] = [
        (Some("alice"), [true, true, true, true, true]),
        (Some("bob"), [true, false, false, false, false]),
        // Regex is a full match: "xalice" does not match a[a-z]+e, suffix still does.
        (Some("xalice"), [true, false, false, true, false]),
        (None, [false, false, false, false, false]),
    ];
    for (k, (kind, setter)) in kinds.iter().enumerate() {
        for invert in [false, true] {
            let s = web_api(
                vec![p(
                    Allow,
                    hdr("X-User", |h| {
                        setter(h);
                        h.invert = invert;
                    }),
                )],
                DefaultPolicy::Deny,
            );
            for (value, want) in &rows {
                let mut r = Req::new("GET", "/");
                if let Some(v) = value {
                    r = r.header("x-user", v);
                }
                let expected = match (value, invert) {
                    (_, false) => want[k],
                    (Some(_), true) => !want[k],
                    // Absent + Invert: only Present matches.
                    (None, true) => *kind == "present",
                };
                let d = decide(&s, &r);
                assert_eq!(
                    d.allowed, expected,
                    "{kind} invert={invert} value={value:?}: {d}"
                );
            }
        }
    }
}

#[test]
fn header_names_are_case_insensitive_and_repeats_are_joined() {
    let s = web_api(
        vec![p(Allow, hdr("X-Tenant", |h| h.exact = "a,b".into()))],
        DefaultPolicy::Deny,
    );
    let r = Req::new("GET", "/")
        .header("x-tenant", "a")
        .header("x-tenant", "b");
    assert!(decide(&s, &r).allowed);
    assert!(!decide(&s, &Req::new("GET", "/").header("x-tenant", "a")).allowed);
}

#[test]
fn first_match_wins_top_to_bottom() {
    let perms = vec![
        p(Deny, prefix("/admin")),
        p(Allow, prefix("/")),
        p(Deny, prefix("/public")),
    ];
    let s = web_api(perms, DefaultPolicy::Deny);
    let d = decide(&s, &Req::new("GET", "/admin/x"));
    assert!(!d.allowed);
    assert_eq!(d.reason.permission_index(), Some(0));
    let d = decide(&s, &Req::new("GET", "/public/x"));
    assert!(d.allowed, "the allow at index 1 shadows the deny at 2: {d}");
    assert_eq!(d.reason.permission_index(), Some(1));

    // Reversed order, reversed outcome for /admin.
    let perms = vec![p(Allow, prefix("/")), p(Deny, prefix("/admin"))];
    let s = web_api(perms, DefaultPolicy::Deny);
    assert!(decide(&s, &Req::new("GET", "/admin/x")).allowed);
}

#[test]
fn no_match_falls_back_to_default_policy() {
    for default in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
        let s = set(
            vec![
                l7("web", "api", vec![p(Deny, prefix("/admin"))]),
                // A lower-precedence L4 allow is NOT consulted: the L7 intention decided.
                l4("*", "api", Deny),
            ],
            default,
        );
        let d = decide(&s, &Req::new("GET", "/other"));
        assert_eq!(d.allowed, default.allows(), "{d}");
        assert_eq!(
            d.reason,
            HttpReason::NoPermissionMatched {
                key: std::sync::Arc::new(IntentionKey::of(&l4("web", "api", Allow))),
                default,
            }
        );
        assert!(!decide(&s, &Req::new("GET", "/admin")).allowed);
    }
}

#[test]
fn l4_intention_with_higher_precedence_decides() {
    let l7_wild = {
        // Permissions are not allowed on a wildcard destination, so the L7 one is `* => api`
        // (precedence 8) and the L4 one `web => api` (9).
        l7("*", "api", vec![p(Allow, prefix("/"))])
    };
    let s = set(
        vec![l7_wild.clone(), l4("web", "api", Deny)],
        DefaultPolicy::Allow,
    );
    let d = decide(&s, &Req::new("GET", "/"));
    assert!(!d.allowed);
    assert!(
        matches!(d.reason, HttpReason::Intention { action: Deny, .. }),
        "{d}"
    );
    // Another source only matches the wildcard L7 intention.
    let r = Req::new("GET", "/");
    let d = s.decide_http_default_ns("other", "api", &r.req());
    assert!(d.allowed, "{d}");
    assert_eq!(d.reason.permission_index(), Some(0));

    // And the L7 intention wins over a lower-precedence L4 one.
    let s = set(
        vec![
            l7("web", "api", vec![p(Deny, prefix("/"))]),
            l4("*", "api", Allow),
        ],
        DefaultPolicy::Allow,
    );
    let d = decide(&s, &Req::new("GET", "/"));
    assert!(!d.allowed);
    assert_eq!(d.reason.permission_index(), Some(0));
}

#[test]
fn no_intention_uses_default_and_l4_decide_still_denies_l7() {
    let s = web_api(vec![p(Allow, prefix("/"))], DefaultPolicy::Allow);
    let r = Req::new("GET", "/");
    let d = s.decide_http_default_ns("web", "other", &r.req());
    assert_eq!(d.reason, HttpReason::DefaultPolicy(DefaultPolicy::Allow));
    assert!(d.allowed);
    // L4 keeps Consul's rule: an intention with permissions denies a connection.
    assert!(!s.decide("web", "api").allowed);
    assert!(decide(&s, &r).allowed);
}

#[test]
fn invalid_permissions_fail_closed() {
    // Bypasses validate: a snapshot from elsewhere with a broken regex.
    let mut i = intention_between("web", "api");
    i.permissions = vec![p(
        Allow,
        HttpPermission {
            path_regex: "(".into(),
            ..Default::default()
        },
    )];
    let s = set(vec![i], DefaultPolicy::Allow);
    let d = decide(&s, &Req::new("GET", "/"));
    assert!(!d.allowed);
    assert!(
        matches!(d.reason, HttpReason::InvalidPermissions { .. }),
        "{d}"
    );
    assert_eq!(d.reason.kind(), "invalid_permissions");
}

#[test]
fn reasons_display_short_phrases() {
    let s = web_api(
        vec![p(Deny, prefix("/a")), p(Allow, prefix("/b"))],
        DefaultPolicy::Deny,
    );
    let d = decide(&s, &Req::new("GET", "/b"));
    assert_eq!(
        d.to_string(),
        "allowed: Permissions[1] (allow) of L7 intention \"web\" => \"api\""
    );
    assert_eq!(d.reason.kind(), "permission");
}

#[test]
fn regex_limits_are_enforced() {
    assert!(compile_regex("/a/[0-9]+").is_ok());
    assert!(matches!(compile_regex("("), Err(RegexError::Syntax(_))));
    assert!(matches!(
        compile_regex(&"a".repeat(MAX_REGEX_LEN + 1)),
        Err(RegexError::TooLong { .. })
    ));
    assert!(matches!(
        compile_regex("(a{1000}){1000}"),
        Err(RegexError::TooBig { .. })
    ));
    // A bare pattern that only "works" after our anchoring wrapper is still refused.
    assert!(compile_regex("a)|(b").is_err());
}

#[test]
fn validate_rejects_bad_regexes_and_header_names() {
    let bad_path = l7_unchecked(p(
        Allow,
        HttpPermission {
            path_regex: "[".into(),
            ..Default::default()
        },
    ));
    match validate(&bad_path) {
        Err(IntentionError::InvalidRegex { index, field, .. }) => {
            assert_eq!((index, field.as_str()), (0, "PathRegex"));
        }
        other => panic!("{other:?}"),
    }
    let big = l7_unchecked(p(Allow, hdr("x", |h| h.regex = "(a{1000}){1000}".into())));
    let err = validate(&big).unwrap_err();
    assert_eq!(err.code(), "invalid_regex");
    assert!(err.to_string().contains("Header[0].Regex"), "{err}");
    assert!(err.to_string().contains("size limit"), "{err}");

    let name = l7_unchecked(p(Allow, hdr("bad header", |h| h.present = true)));
    assert_eq!(validate(&name).unwrap_err().code(), "invalid_header_name");
}

fn l7_unchecked(perm: IntentionPermission) -> Intention {
    let mut i = intention_between("web", "api");
    i.permissions = vec![perm];
    i
}

fn arb_perm() -> impl Strategy<Value = IntentionPermission> {
    let action = prop_oneof![Just(Allow), Just(Deny)];
    let path = prop_oneof![
        Just(HttpPermission::default()),
        "/[a-z/]{0,6}".prop_map(|s| HttpPermission {
            path_prefix: s,
            ..Default::default()
        }),
        "/[a-z/]{0,6}".prop_map(|s| HttpPermission {
            path_exact: s,
            ..Default::default()
        }),
        "/[a-z.*+/]{0,6}".prop_map(|s| HttpPermission {
            path_regex: s,
            ..Default::default()
        }),
    ];
    let header = ("[a-z-]{1,6}", 0..5usize, "[a-z.*]{0,4}", any::<bool>()).prop_map(
        |(name, kind, v, invert)| {
            let v = if v.is_empty() { "x".to_string() } else { v };
            let mut h = HeaderPermission {
                name,
                invert,
                ..Default::default()
            };
            match kind {
                0 => h.present = true,
                1 => h.exact = v,
                2 => h.prefix = v,
                3 => h.suffix = v,
                _ => h.regex = v,
            }
            h
        },
    );
    (
        action,
        path,
        proptest::collection::vec(header, 0..3),
        proptest::collection::vec(prop_oneof![Just("GET"), Just("POST"), Just("PUT")], 0..2),
    )
        .prop_map(|(action, mut http, header, methods)| {
            http.header = header;
            let mut m: Vec<String> = methods.into_iter().map(String::from).collect();
            m.dedup();
            http.methods = m;
            IntentionPermission {
                action,
                http: Some(http),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary method, path and header bytes never make the matcher panic, and the decision
    /// is always explained by a reason consistent with `allowed`.
    #[test]
    fn matcher_never_panics(
        perms in proptest::collection::vec(arb_perm(), 1..5),
        default_allow in any::<bool>(),
        method in proptest::collection::vec(any::<u8>(), 1..12),
        path in any::<String>(),
        headers in proptest::collection::vec(
            ("[a-zA-Z-]{1,6}", proptest::collection::vec(any::<u8>(), 0..16)),
            0..6,
        ),
    ) {
        let mut i = intention_between("web", "api");
        i.permissions = perms;
        let default = if default_allow { DefaultPolicy::Allow } else { DefaultPolicy::Deny };
        let s = set(vec![i], default);
        let Ok(method) = Method::from_bytes(&method) else { return Ok(()) };
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(&v),
            ) {
                map.append(k, v);
            }
        }
        let req = HttpRequest { method: &method, path: &path, headers: &map };
        let d = s.decide_http_default_ns("web", "api", &req);
        match &d.reason {
            HttpReason::Permission { action, .. } => {
                prop_assert_eq!(d.allowed, *action == Allow)
            }
            HttpReason::NoPermissionMatched { default: p, .. } => {
                prop_assert_eq!(d.allowed, p.allows())
            }
            HttpReason::InvalidPermissions { .. } => prop_assert!(!d.allowed),
            other => prop_assert!(false, "unexpected reason {other}"),
        }
    }
}
