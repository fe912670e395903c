//! Tests of precedence, decisions and the match order against Consul's documented behaviour.

use proptest::prelude::*;

use super::*;
use crate::model::{HeaderPermission, HttpPermission, IntentionPermission};

fn ixn(src_ns: &str, src: &str, dst_ns: &str, dst: &str, action: IntentionAction) -> Intention {
    Intention {
        source_ns: src_ns.to_string(),
        destination_ns: dst_ns.to_string(),
        action: Some(action),
        ..intention_between(src, dst)
    }
}

/// `src => dst` in the default namespace.
fn l4(src: &str, dst: &str, action: IntentionAction) -> Intention {
    ixn("default", src, "default", dst, action)
}

fn l7(src: &str, dst: &str) -> Intention {
    let mut i = l4(src, dst, IntentionAction::Allow);
    i.action = None;
    i.permissions = vec![IntentionPermission {
        action: IntentionAction::Allow,
        http: Some(HttpPermission {
            path_prefix: "/v1/".to_string(),
            ..Default::default()
        }),
    }];
    i
}

use IntentionAction::{Allow, Deny};

// ---------------------------------------------------------------------------------------------
// Precedence table.
//
// Consul documents it under "Precedence and match order" of the intentions page:
// https://developer.hashicorp.com/consul/docs/connect/intentions (1.9+; the same table is in
// https://developer.hashicorp.com/consul/docs/v1.9.x/connect/intentions), computed by
// `computeIntentionPrecedence` in hashicorp/consul agent/structs/config_entry_intentions.go.
// ---------------------------------------------------------------------------------------------

#[test]
fn precedence_matches_consul_table_with_namespaces() {
    // (source ns, source name, destination ns, destination name, precedence)
    let table = [
        ("ns1", "web", "ns2", "db", 9), // Exact  Exact  Exact  Exact
        ("ns1", "*", "ns2", "db", 8),   // Exact  *      Exact  Exact
        ("*", "*", "ns2", "db", 7),     // *      *      Exact  Exact
        ("ns1", "web", "ns2", "*", 6),  // Exact  Exact  Exact  *
        ("ns1", "*", "ns2", "*", 5),    // Exact  *      Exact  *
        ("*", "*", "ns2", "*", 4),      // *      *      Exact  *
        ("ns1", "web", "*", "*", 3),    // Exact  Exact  *      *
        ("ns1", "*", "*", "*", 2),      // Exact  *      *      *
        ("*", "*", "*", "*", 1),        // *      *      *      *
    ];
    for (sns, s, dns, d, want) in table {
        assert_eq!(precedence(sns, s, dns, d), want, "{sns}/{s} => {dns}/{d}");
    }
}

#[test]
fn precedence_matches_consul_table_single_namespace() {
    // Without namespaces (one namespace), only four rows remain.
    let table = [
        ("web", "db", 9), // Exact Exact
        ("*", "db", 8),   // *     Exact
        ("web", "*", 6),  // Exact *
        ("*", "*", 5),    // *     *
    ];
    for (s, d, want) in table {
        assert_eq!(precedence("default", s, "default", d), want, "{s} => {d}");
    }
}

#[test]
fn set_recomputes_stale_precedence() {
    let mut i = l4("web", "db", Deny);
    i.precedence = 1;
    let set = IntentionSet::new([i], DefaultPolicy::Allow);
    assert_eq!(set.iter().next().unwrap().precedence, 9);
}

// ---------------------------------------------------------------------------------------------
// Decisions.
// ---------------------------------------------------------------------------------------------

#[test]
fn exact_deny_beats_wildcard_allow() {
    let set = IntentionSet::new(
        [
            l4("*", "*", Allow),
            l4("*", "db", Allow),
            l4("web", "db", Deny),
        ],
        DefaultPolicy::Allow,
    );
    let d = set.decide("web", "db");
    assert!(!d.allowed);
    assert_eq!(d.matched, Some(IntentionKey::of(&l4("web", "db", Deny))));
    assert_eq!(
        d.reason.to_string(),
        r#"Matched L4 intention "web" => "db" (deny, precedence 9)"#
    );
    // Another source still falls to the wildcard allow.
    let d = set.decide("api", "db");
    assert!(d.allowed);
    assert_eq!(
        d.reason.to_string(),
        r#"Matched L4 intention "*" => "db" (allow, precedence 8)"#
    );
}

#[test]
fn exact_allow_beats_wildcard_deny() {
    let set = IntentionSet::new(
        [l4("*", "*", Deny), l4("web", "db", Allow)],
        DefaultPolicy::Deny,
    );
    assert!(set.decide("web", "db").allowed);
    let other = set.decide("api", "db");
    assert!(!other.allowed);
    assert_eq!(
        other.reason,
        Reason::Intention {
            key: IntentionKey::of(&l4("*", "*", Deny)),
            action: Deny,
            precedence: 5,
            id: String::new(),
        }
    );
}

#[test]
fn exact_destination_beats_exact_source() {
    // `* => db` (8) outranks `web => *` (6): the destination's specificity counts more.
    let set = IntentionSet::new(
        [l4("web", "*", Allow), l4("*", "db", Deny)],
        DefaultPolicy::Allow,
    );
    let d = set.decide("web", "db");
    assert!(!d.allowed);
    assert_eq!(d.matched, Some(IntentionKey::of(&l4("*", "db", Deny))));

    let flipped = IntentionSet::new(
        [l4("web", "*", Deny), l4("*", "db", Allow)],
        DefaultPolicy::Deny,
    );
    assert!(flipped.decide("web", "db").allowed);
    // And where only `web => *` matches, it applies.
    assert!(!flipped.decide("web", "cache").allowed);
}

#[test]
fn default_policy_applies_when_nothing_matches() {
    let intentions = [l4("web", "db", Allow)];
    for policy in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
        let set = IntentionSet::new(intentions.clone(), policy);
        let d = set.decide("api", "db");
        assert_eq!(d.allowed, policy == DefaultPolicy::Allow);
        assert_eq!(d.reason, Reason::DefaultPolicy(policy));
        assert_eq!(d.matched, None);
    }
    assert_eq!(
        Reason::DefaultPolicy(DefaultPolicy::Deny).to_string(),
        "Default behavior configured by the default policy (deny)"
    );
    assert_eq!(DefaultPolicy::default(), DefaultPolicy::Deny);
    assert!(
        IntentionSet::new([], DefaultPolicy::Allow)
            .decide("a", "b")
            .allowed
    );
}

#[test]
fn default_policy_serde_is_lowercase() {
    assert_eq!(
        serde_json::to_string(&DefaultPolicy::Allow).unwrap(),
        r#""allow""#
    );
    let p: DefaultPolicy = serde_json::from_str(r#""deny""#).unwrap();
    assert_eq!(p, DefaultPolicy::Deny);
}

#[test]
fn l7_intention_counts_as_deny_for_l4() {
    // Even under a default-allow policy and a wildcard allow below it.
    let set = IntentionSet::new([l4("*", "*", Allow), l7("web", "db")], DefaultPolicy::Allow);
    let d = set.decide("web", "db");
    assert!(!d.allowed);
    assert!(matches!(
        d.reason,
        Reason::L7Intention { precedence: 9, .. }
    ));
    assert!(d.reason.to_string().contains("L7"), "{}", d.reason);
    assert!(d.reason.to_string().contains("deny at L4"), "{}", d.reason);
}

#[test]
fn malformed_intentions_deny_like_consul() {
    // Both Action allow and Permissions: Consul's authorize denies (permissions win).
    let mut both = l7("web", "db");
    both.action = Some(Allow);
    let d = IntentionSet::new([both], DefaultPolicy::Allow).decide("web", "db");
    assert!(!d.allowed);
    assert!(matches!(d.reason, Reason::L7Intention { .. }));

    // Neither: `Action == allow` is false.
    let mut neither = l4("web", "db", Allow);
    neither.action = None;
    let d = IntentionSet::new([neither], DefaultPolicy::Allow).decide("web", "db");
    assert!(!d.allowed);
    assert!(matches!(d.reason, Reason::NoAction { .. }));
}

#[test]
fn equal_precedence_deny_beats_allow() {
    // Consul's store keeps one intention per 4-tuple, so a tie needs duplicates; a snapshot we
    // are handed may still hold them. Try every insertion order.
    let mut allow = l4("*", "db", Allow);
    allow.id = "0-allow-sorts-first-by-id".to_string();
    let mut deny = l4("*", "db", Deny);
    deny.id = "z-deny".to_string();
    for intentions in [
        vec![allow.clone(), deny.clone()],
        vec![deny.clone(), allow.clone()],
    ] {
        let d = IntentionSet::new(intentions, DefaultPolicy::Allow).decide("web", "db");
        assert!(!d.allowed);
        assert_eq!(
            d.reason.to_string(),
            r#"Matched L4 intention "*" => "db" (deny, precedence 8, ID z-deny)"#
        );
    }
    // An L7 duplicate ties with an allow too, and wins (it is a deny at L4).
    let d = IntentionSet::new([allow, l7("*", "db")], DefaultPolicy::Allow).decide("web", "db");
    assert!(!d.allowed);
}

#[test]
fn namespaces_are_respected() {
    let set = IntentionSet::new(
        [
            ixn("other", "*", "default", "db", Allow),
            ixn("*", "*", "default", "db", Deny),
            ixn("default", "web", "*", "*", Allow),
        ],
        DefaultPolicy::Deny,
    );
    // Any source namespace other than "other" hits `*/* => default/db` (7).
    assert!(!set.decide("web", "db").allowed);
    let d = set.decide_ns("other", "web", "default", "db");
    assert!(d.allowed);
    assert!(matches!(d.reason, Reason::Intention { precedence: 8, .. }));
    // `default/web => */*` (3) covers other destination namespaces.
    assert!(set.decide_ns("default", "web", "prod", "db").allowed);
    assert!(!set.decide_ns("default", "api", "prod", "db").allowed);
    // Names in the default namespace print bare, others with their namespace.
    assert_eq!(
        set.decide_ns("other", "web", "default", "db")
            .reason
            .to_string(),
        r#"Matched L4 intention "other/*" => "db" (allow, precedence 8)"#
    );
}

#[test]
fn wildcard_namespace_with_exact_name_never_matches() {
    // `*/web` cannot be written (validate rejects it) and Consul's match never looks it up.
    let set = IntentionSet::new(
        [ixn("*", "web", "default", "db", Deny)],
        DefaultPolicy::Allow,
    );
    assert!(set.decide("web", "db").allowed);
    assert!(set.matches(true, "web").is_empty());
    // Matching by destination does list it: its destination is fine.
    assert_eq!(set.matches(false, "db").len(), 1);
}

#[test]
fn ten_thousand_intentions() {
    let mut v = Vec::new();
    for i in 0..10_000 {
        v.push(l4(
            &format!("svc{i}"),
            &format!("svc{}", (i * 7) % 10_000),
            Allow,
        ));
    }
    v.push(l4("*", "*", Deny));
    let set = IntentionSet::new(v, DefaultPolicy::Deny);
    assert_eq!(set.len(), 10_001);
    assert!(set.decide("svc3", "svc21").allowed);
    assert!(!set.decide("svc3", "svc22").allowed);
    assert_eq!(set.matches(false, "svc21").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Match.
// ---------------------------------------------------------------------------------------------

#[test]
fn matches_by_destination_in_consul_order() {
    let set = IntentionSet::new(
        [
            l4("*", "*", Deny),
            l4("web", "*", Allow),
            l4("api", "db", Allow),
            l4("*", "db", Deny),
            l4("web", "db", Allow),
            l4("web", "cache", Allow),
        ],
        DefaultPolicy::Deny,
    );
    let got: Vec<(String, String, u32)> = set
        .matches(false, "db")
        .into_iter()
        .map(|i| {
            (
                i.source_name.clone(),
                i.destination_name.clone(),
                i.precedence,
            )
        })
        .collect();
    let want = [
        ("api", "db", 9),
        ("web", "db", 9),
        ("*", "db", 8),
        ("web", "*", 6),
        ("*", "*", 5),
    ];
    let want: Vec<(String, String, u32)> = want
        .iter()
        .map(|(s, d, p)| (s.to_string(), d.to_string(), *p))
        .collect();
    assert_eq!(got, want);

    let by_src: Vec<(String, String)> = set
        .matches(true, "web")
        .into_iter()
        .map(|i| (i.source_name.clone(), i.destination_name.clone()))
        .collect();
    assert_eq!(
        by_src,
        [
            ("web", "cache"),
            ("web", "db"),
            ("*", "db"),
            ("web", "*"),
            ("*", "*")
        ]
        .map(|(s, d)| (s.to_string(), d.to_string()))
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: order independence and agreement with a brute-force oracle.
// ---------------------------------------------------------------------------------------------

const NAMESPACES: &[&str] = &["default", "other", "*"];
const NAMES: &[&str] = &["web", "db", "api", "*"];

/// Does the pattern `p_ns/p_name` cover `ns/name`? Straight from Consul's
/// `intentionMatchGetParams`: always `*/*`; unless `ns` is `*`, also `ns/*`; unless `name` is
/// `*` too, also `ns/name`. Nothing else (so `*/web` covers nothing).
fn covers(p_ns: &str, p_name: &str, ns: &str, name: &str) -> bool {
    let any = p_ns == "*" && p_name == "*";
    let ns_wide = ns != "*" && p_ns == ns && p_name == "*";
    let exact = ns != "*" && name != "*" && p_ns == ns && p_name == name;
    any || ns_wide || exact
}

fn oracle_precedence(i: &Intention) -> u32 {
    // The documented table, written out instead of computed.
    let side = |ns: &str, name: &str| match (ns == "*", name == "*") {
        (false, false) => 2,
        (false, true) => 1,
        (true, _) => 0,
    };
    match (
        side(&i.destination_ns, &i.destination_name),
        side(&i.source_ns, &i.source_name),
    ) {
        (2, 2) => 9,
        (2, 1) => 8,
        (2, 0) => 7,
        (1, 2) => 6,
        (1, 1) => 5,
        (1, 0) => 4,
        (0, 2) => 3,
        (0, 1) => 2,
        _ => 1,
    }
}

fn denies(i: &Intention) -> bool {
    !(i.action == Some(Allow) && i.permissions.is_empty())
}

/// Scan everything: keep the max precedence; at equal precedence a deny beats an allow; the
/// remaining tie (same 4-tuple, same effect) goes to the smallest ID.
fn oracle(
    intentions: &[Intention],
    policy: DefaultPolicy,
    src_ns: &str,
    src: &str,
    dst_ns: &str,
    dst: &str,
) -> Decision {
    let mut best: Option<Intention> = None;
    for i in intentions {
        if !covers(&i.source_ns, &i.source_name, src_ns, src)
            || !covers(&i.destination_ns, &i.destination_name, dst_ns, dst)
        {
            continue;
        }
        let mut i = i.clone();
        i.precedence = oracle_precedence(&i);
        let better = match &best {
            None => true,
            Some(b) => {
                if i.precedence != b.precedence {
                    i.precedence > b.precedence
                } else if denies(&i) != denies(b) {
                    denies(&i)
                } else {
                    // Only same-tuple duplicates can tie here; prefer an explicit deny over an
                    // L7 one (both deny), then the smaller ID.
                    (i.permissions.is_empty(), std::cmp::Reverse(&i.id))
                        > (b.permissions.is_empty(), std::cmp::Reverse(&b.id))
                }
            }
        };
        if better {
            best = Some(i);
        }
    }
    match best {
        None => Decision {
            allowed: policy == DefaultPolicy::Allow,
            reason: Reason::DefaultPolicy(policy),
            matched: None,
        },
        Some(i) => {
            let key = IntentionKey::of(&i);
            let reason = if !i.permissions.is_empty() {
                Reason::L7Intention {
                    key: key.clone(),
                    precedence: i.precedence,
                    id: i.id.clone(),
                }
            } else {
                Reason::Intention {
                    key: key.clone(),
                    action: i.action.unwrap(),
                    precedence: i.precedence,
                    id: i.id.clone(),
                }
            };
            Decision {
                allowed: !denies(&i),
                reason,
                matched: Some(key),
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Allow,
    Deny,
    L7,
}

fn arb_intention() -> impl Strategy<Value = Intention> {
    (
        prop::sample::select(NAMESPACES),
        prop::sample::select(NAMES),
        prop::sample::select(NAMESPACES),
        prop::sample::select(NAMES),
        prop::sample::select(&[Kind::Allow, Kind::Deny, Kind::L7][..]),
        prop::sample::select(&["", "a", "b"][..]),
    )
        .prop_map(|(sns, s, dns, d, kind, id)| {
            let mut i = match kind {
                Kind::Allow => ixn(sns, s, dns, d, Allow),
                Kind::Deny => ixn(sns, s, dns, d, Deny),
                Kind::L7 => {
                    let mut i = l7(s, d);
                    i.source_ns = sns.to_string();
                    i.destination_ns = dns.to_string();
                    i
                }
            };
            i.id = id.to_string();
            i
        })
}

fn arb_set_and_shuffle() -> impl Strategy<Value = (Vec<Intention>, Vec<Intention>, DefaultPolicy)> {
    (
        prop::collection::vec(arb_intention(), 0..24),
        prop::sample::select(&[DefaultPolicy::Allow, DefaultPolicy::Deny][..]),
    )
        .prop_flat_map(|(v, policy)| (Just(v.clone()), Just(v).prop_shuffle(), Just(policy)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decide_is_order_independent_and_matches_oracle(
        (original, shuffled, policy) in arb_set_and_shuffle()
    ) {
        let a = IntentionSet::new(original.clone(), policy);
        let b = IntentionSet::new(shuffled, policy);
        for &src_ns in NAMESPACES {
            for &src in NAMES {
                for &dst_ns in NAMESPACES {
                    for &dst in NAMES {
                        let da = a.decide_ns(src_ns, src, dst_ns, dst);
                        let db = b.decide_ns(src_ns, src, dst_ns, dst);
                        prop_assert_eq!(&da, &db);
                        let want = oracle(&original, policy, src_ns, src, dst_ns, dst);
                        prop_assert_eq!(&da, &want, "{}/{} => {}/{}", src_ns, src, dst_ns, dst);
                    }
                }
                prop_assert_eq!(a.matches_ns(true, src_ns, src), b.matches_ns(true, src_ns, src));
                prop_assert_eq!(a.matches_ns(false, src_ns, src), b.matches_ns(false, src_ns, src));
            }
        }
        for &src in NAMES {
            for &dst in NAMES {
                prop_assert_eq!(a.decide(src, dst), a.decide_ns("default", src, "default", dst));
            }
        }
    }

    #[test]
    fn decide_is_first_of_destination_matches_covering_source(
        (original, _shuffled, policy) in arb_set_and_shuffle()
    ) {
        // decide agrees with /match: among the intentions matching the destination, in match
        // order, a winner is the highest precedence one covering the source.
        let set = IntentionSet::new(original, policy);
        for &src in NAMES {
            for &dst in NAMES {
                let first = set
                    .matches(false, dst)
                    .into_iter()
                    .find(|i| covers(&i.source_ns, &i.source_name, "default", src));
                let d = set.decide(src, dst);
                match first {
                    None => prop_assert_eq!(d.matched, None),
                    Some(i) => {
                        prop_assert_eq!(d.matched, Some(IntentionKey::of(i)));
                        let precedence = match d.reason {
                            Reason::Intention { precedence, .. }
                            | Reason::L7Intention { precedence, .. } => precedence,
                            _ => 0,
                        };
                        prop_assert_eq!(precedence, i.precedence);
                    }
                }
            }
        }
    }

    #[test]
    fn matches_are_sorted_by_precedence(
        (original, _shuffled, policy) in arb_set_and_shuffle()
    ) {
        let set = IntentionSet::new(original, policy);
        for by_source in [true, false] {
            for &name in NAMES {
                let m = set.matches(by_source, name);
                for w in m.windows(2) {
                    prop_assert!(consul_order(w[0], w[1]) != std::cmp::Ordering::Greater);
                    prop_assert!(w[0].precedence >= w[1].precedence);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------------

fn perm(http: HttpPermission) -> IntentionPermission {
    IntentionPermission {
        action: Allow,
        http: Some(http),
    }
}

fn with_perm(http: HttpPermission) -> Intention {
    let mut i = l7("web", "db");
    i.permissions = vec![perm(http)];
    i
}

fn header(f: impl FnOnce(&mut HeaderPermission)) -> HttpPermission {
    let mut h = HeaderPermission {
        name: "x-user".to_string(),
        ..Default::default()
    };
    f(&mut h);
    HttpPermission {
        header: vec![h],
        ..Default::default()
    }
}

#[test]
fn validate_accepts_good_intentions() {
    for i in [
        l4("web", "db", Allow),
        l4("*", "db", Deny),
        l4("web", "*", Allow),
        l4("*", "*", Deny),
        ixn("*", "*", "*", "*", Deny),
        ixn("other", "*", "default", "db", Allow),
        l7("web", "db"),
        with_perm(HttpPermission {
            path_exact: "/health".to_string(),
            methods: vec!["GET".to_string(), "HEAD".to_string()],
            ..Default::default()
        }),
        with_perm(header(|h| h.present = true)),
        with_perm(header(|h| h.regex = "^a.*".to_string())),
    ] {
        assert_eq!(validate(&i), Ok(()), "{i:?}");
    }
}

#[test]
fn validate_rejects_empty_names() {
    for (field, f) in [
        (
            "SourceName",
            (|i: &mut Intention| i.source_name.clear()) as fn(&mut Intention),
        ),
        ("SourceNS", |i| i.source_ns.clear()),
        ("DestinationName", |i| i.destination_name.clear()),
        ("DestinationNS", |i| i.destination_ns.clear()),
    ] {
        let mut i = l4("web", "db", Allow);
        f(&mut i);
        let err = validate(&i).unwrap_err();
        assert_eq!(err, IntentionError::Empty { field });
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn validate_rejects_partial_wildcards() {
    let err = validate(&l4("web-*", "db", Allow)).unwrap_err();
    assert_eq!(err.code(), "partial_wildcard");
    assert!(err.to_string().starts_with("SourceName:"), "{err}");
    let err = validate(&l4("web", "d*b", Allow)).unwrap_err();
    assert!(err.to_string().starts_with("DestinationName:"), "{err}");
    let err = validate(&ixn("ns*", "*", "default", "db", Allow)).unwrap_err();
    assert!(err.to_string().starts_with("SourceNS:"), "{err}");
    let err = validate(&ixn("default", "web", "*ns", "*", Allow)).unwrap_err();
    assert!(err.to_string().starts_with("DestinationNS:"), "{err}");
}

#[test]
fn validate_rejects_exact_name_after_wildcard_namespace() {
    let err = validate(&ixn("*", "web", "default", "db", Allow)).unwrap_err();
    assert_eq!(
        err,
        IntentionError::ExactAfterWildcardNamespace {
            field: "SourceName",
            value: "web".to_string()
        }
    );
    let err = validate(&ixn("default", "web", "*", "db", Allow)).unwrap_err();
    assert!(err.to_string().starts_with("DestinationName:"), "{err}");
}

#[test]
fn validate_rejects_action_with_permissions() {
    let mut i = l7("web", "db");
    i.action = Some(Deny);
    assert_eq!(validate(&i), Err(IntentionError::ActionWithPermissions));
}

#[test]
fn validate_rejects_neither_action_nor_permissions() {
    let mut i = l4("web", "db", Allow);
    i.action = None;
    let err = validate(&i).unwrap_err();
    assert_eq!(err, IntentionError::MissingAction);
    assert!(err.to_string().contains("Action"));
}

#[test]
fn validate_rejects_permissions_on_wildcard_destination() {
    let mut i = l7("web", "*");
    assert_eq!(
        validate(&i),
        Err(IntentionError::PermissionsOnWildcardDestination)
    );
    i.destination_name = "db".to_string();
    i.destination_ns = "*".to_string();
    // `*/db` fails the wildcard rule first, as in Consul.
    assert!(validate(&i).is_err());
}

#[test]
fn validate_rejects_bad_source_type() {
    let mut i = l4("web", "db", Allow);
    i.source_type = "external".to_string();
    let err = validate(&i).unwrap_err();
    assert!(err.to_string().contains("SourceType"), "{err}");
}

#[test]
fn validate_rejects_long_description_and_meta() {
    let mut i = l4("web", "db", Allow);
    i.description = "x".repeat(MAX_DESCRIPTION_LEN + 1);
    let err = validate(&i).unwrap_err();
    assert!(err.to_string().contains("Description"), "{err}");
    i.description = "x".repeat(MAX_DESCRIPTION_LEN);
    assert_eq!(validate(&i), Ok(()));

    let mut i = l4("web", "db", Allow);
    i.meta = (0..=MAX_META_PAIRS)
        .map(|n| (format!("k{n}"), String::new()))
        .collect();
    assert_eq!(validate(&i).unwrap_err().code(), "too_many_meta");

    let mut i = l4("web", "db", Allow);
    i.meta
        .insert("k".repeat(MAX_META_KEY_LEN + 1), String::new());
    assert_eq!(validate(&i).unwrap_err().code(), "meta_key_too_long");

    let mut i = l4("web", "db", Allow);
    i.meta
        .insert("k".to_string(), "v".repeat(MAX_META_VALUE_LEN + 1));
    assert_eq!(validate(&i).unwrap_err().code(), "meta_value_too_long");
}

#[test]
fn validate_rejects_permission_without_http() {
    let mut i = l7("web", "db");
    i.permissions.push(IntentionPermission {
        action: Deny,
        http: None,
    });
    let err = validate(&i).unwrap_err();
    assert_eq!(err, IntentionError::MissingHttp { index: 1 });
    assert_eq!(err.to_string(), "Permissions[1].HTTP is required");
}

#[test]
fn validate_rejects_empty_http() {
    let err = validate(&with_perm(HttpPermission::default())).unwrap_err();
    assert_eq!(err, IntentionError::EmptyHttp { index: 0 });
}

#[test]
fn validate_rejects_multiple_path_matchers() {
    for http in [
        HttpPermission {
            path_exact: "/a".to_string(),
            path_prefix: "/b".to_string(),
            ..Default::default()
        },
        HttpPermission {
            path_prefix: "/b".to_string(),
            path_regex: "/c.*".to_string(),
            ..Default::default()
        },
        HttpPermission {
            path_exact: "/a".to_string(),
            path_regex: "/c.*".to_string(),
            ..Default::default()
        },
    ] {
        let err = validate(&with_perm(http)).unwrap_err();
        assert_eq!(err, IntentionError::ConflictingPaths { index: 0 });
        assert!(
            err.to_string()
                .contains("PathExact, PathPrefix, or PathRegex")
        );
    }
}

#[test]
fn validate_rejects_relative_paths() {
    let err = validate(&with_perm(HttpPermission {
        path_exact: "health".to_string(),
        ..Default::default()
    }))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Permissions[0].HTTP.PathExact doesn't start with '/': "health""#
    );
    let err = validate(&with_perm(HttpPermission {
        path_prefix: "v1/".to_string(),
        ..Default::default()
    }))
    .unwrap_err();
    assert!(err.to_string().contains("PathPrefix"), "{err}");
}

#[test]
fn validate_rejects_bad_header_permissions() {
    let err = validate(&with_perm(header(|h| h.name.clear()))).unwrap_err();
    assert_eq!(
        err,
        IntentionError::HeaderMissingName {
            index: 0,
            header: 0
        }
    );

    // None of the matchers.
    let err = validate(&with_perm(header(|_| {}))).unwrap_err();
    assert_eq!(err.code(), "header_matchers");
    // Two of them.
    let err = validate(&with_perm(header(|h| {
        h.present = true;
        h.exact = "alice".to_string();
    })))
    .unwrap_err();
    assert_eq!(
        err,
        IntentionError::HeaderMatchers {
            index: 0,
            header: 0,
            count: 2
        }
    );
    let err = validate(&with_perm(header(|h| {
        h.prefix = "a".to_string();
        h.suffix = "z".to_string();
    })))
    .unwrap_err();
    assert!(err.to_string().contains("Header[0]"), "{err}");
}

#[test]
fn validate_rejects_bad_methods() {
    let methods = |m: &[&str]| {
        with_perm(HttpPermission {
            methods: m.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    };
    let err = validate(&methods(&["get"])).unwrap_err();
    assert_eq!(
        err,
        IntentionError::InvalidMethod {
            index: 0,
            method: "get".to_string()
        }
    );
    assert!(err.to_string().contains("upper case"), "{err}");
    assert_eq!(
        validate(&methods(&["FETCH"])).unwrap_err().code(),
        "invalid_method"
    );
    assert_eq!(
        validate(&methods(&["GET", "POST", "GET"])).unwrap_err(),
        IntentionError::DuplicateMethod {
            index: 0,
            method: "GET".to_string()
        }
    );
}

#[test]
fn error_codes_are_distinct() {
    let errors = [
        IntentionError::Empty {
            field: "SourceName",
        },
        IntentionError::PartialWildcard {
            field: "SourceName",
            value: String::new(),
        },
        IntentionError::ExactAfterWildcardNamespace {
            field: "SourceName",
            value: String::new(),
        },
        IntentionError::ActionWithPermissions,
        IntentionError::MissingAction,
        IntentionError::PermissionsOnWildcardDestination,
        IntentionError::SourceType {
            value: String::new(),
        },
        IntentionError::DescriptionTooLong { len: 0, max: 0 },
        IntentionError::TooManyMeta { count: 0, max: 0 },
        IntentionError::MetaKeyTooLong {
            key: String::new(),
            max: 0,
        },
        IntentionError::MetaValueTooLong {
            key: String::new(),
            max: 0,
        },
        IntentionError::MissingHttp { index: 0 },
        IntentionError::EmptyHttp { index: 0 },
        IntentionError::ConflictingPaths { index: 0 },
        IntentionError::PathNotAbsolute {
            index: 0,
            field: "PathExact",
            value: String::new(),
        },
        IntentionError::HeaderMissingName {
            index: 0,
            header: 0,
        },
        IntentionError::HeaderMatchers {
            index: 0,
            header: 0,
            count: 0,
        },
        IntentionError::InvalidMethod {
            index: 0,
            method: String::new(),
        },
        IntentionError::DuplicateMethod {
            index: 0,
            method: String::new(),
        },
        IntentionError::InvalidRegex {
            index: 0,
            field: String::new(),
            reason: String::new(),
        },
        IntentionError::InvalidHeaderName {
            index: 0,
            header: 0,
            name: String::new(),
        },
    ];
    let codes: std::collections::BTreeSet<&str> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), errors.len());
}
