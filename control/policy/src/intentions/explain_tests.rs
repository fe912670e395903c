//! Tests of the explain walk: the outcome of every intention, its wording, and agreement with
//! the decider over random sets.

use proptest::prelude::*;

use super::*;

fn ixn(src_ns: &str, src: &str, dst: &str, action: Option<IntentionAction>) -> Intention {
    Intention {
        source_ns: src_ns.to_string(),
        action,
        id: format!("id-{src_ns}-{src}-{dst}"),
        ..intention_between(src, dst)
    }
}

fn l4(src: &str, dst: &str, action: IntentionAction) -> Intention {
    ixn(DEFAULT_NAMESPACE, src, dst, Some(action))
}

use IntentionAction::{Allow, Deny};

/// One line per intention, as `meshctl intention match --explain` prints them.
fn lines(c: &[Considered<'_>]) -> Vec<String> {
    c.iter().map(ToString::to_string).collect()
}

#[test]
fn exact_name_decides_and_wildcard_is_not_reached() {
    let set = IntentionSet::new(
        vec![
            l4("*", "db", Allow),
            l4("api", "db", Deny),
            l4("web", "db", Allow),
            l4("web", "cache", Deny),
        ],
        DefaultPolicy::Deny,
    );
    assert_eq!(
        lines(&set.explain_ns("default", "web", "default", "db")),
        [
            r#""api" => "db"  precedence 9  deny  not matched: source is web  ID id-default-api-db"#,
            r#""web" => "cache"  precedence 9  deny  not matched: destination is db  ID id-default-web-cache"#,
            r#""web" => "db"  precedence 9  allow  matched: decides  ID id-default-web-db"#,
            r#""*" => "db"  precedence 8  allow  not reached: a higher-precedence intention decided ("web" => "db")  ID id-default-*-db"#,
        ]
    );
}

#[test]
fn wildcard_decides_when_no_exact_source_matches() {
    let set = IntentionSet::new(
        vec![
            l4("*", "db", Deny),
            l4("web", "*", Allow),
            l4("api", "db", Allow),
        ],
        DefaultPolicy::Allow,
    );
    let c = set.explain_ns("default", "web", "default", "db");
    let outcomes: Vec<_> = c
        .iter()
        .map(|c| {
            (
                c.intention.source_name.as_str(),
                c.intention.destination_name.as_str(),
                &c.outcome,
            )
        })
        .collect();
    let by = IntentionKey::of(&l4("*", "db", Deny));
    assert_eq!(
        outcomes,
        [
            (
                "api",
                "db",
                &Outcome::NotMatched {
                    why: Mismatch::Name {
                        side: Side::Source,
                        got: "web".into()
                    }
                }
            ),
            ("*", "db", &Outcome::Decided),
            ("web", "*", &Outcome::NotReached { by }),
        ]
    );
}

#[test]
fn default_policy_decides_when_nothing_matches() {
    for default in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
        let set = IntentionSet::new(vec![l4("api", "db", Deny)], default);
        let c = set.explain_ns("default", "web", "default", "db");
        assert!(
            c.iter()
                .all(|c| matches!(c.outcome, Outcome::NotMatched { .. }))
        );
        assert_eq!(
            set.deciding_intention("default", "web", "default", "db"),
            None
        );
        assert_eq!(set.decide("web", "db").allowed, default.allows());
    }
    assert!(
        IntentionSet::default()
            .explain_ns("default", "web", "default", "db")
            .is_empty()
    );
}

#[test]
fn namespace_mismatch_is_named_as_such() {
    let set = IntentionSet::new(
        vec![
            ixn("default", "web", "db", Some(Allow)),
            ixn("team-b", "*", "db", Some(Allow)),
            ixn("default", "api", "db", Some(Allow)),
        ],
        DefaultPolicy::Deny,
    );
    let c = set.explain_ns("team-a", "web", "default", "db");
    let why: Vec<String> = c.iter().map(|c| c.outcome.to_string()).collect();
    assert_eq!(
        why,
        [
            // A name mismatch is named first: the namespace alone would not make it match.
            "not matched: source is web",
            "not matched: source namespace is team-a",
            "not matched: source namespace is team-a",
        ]
    );
    assert!(!set.decide_ns("team-a", "web", "default", "db").allowed);
}

#[test]
fn l7_intentions_and_invalid_patterns_are_labelled() {
    let mut l7 = ixn("default", "web", "db", None);
    l7.permissions = vec![crate::model::IntentionPermission {
        action: Allow,
        http: None,
    }];
    let bad = ixn("*", "web", "db", Some(Allow));
    let set = IntentionSet::new(vec![l7, bad], DefaultPolicy::Deny);
    let l = lines(&set.explain_ns("default", "web", "default", "db"));
    assert!(l[0].contains("L7 permissions  matched: decides"), "{l:?}");
    assert!(l[1].contains("never matches"), "{l:?}");
}

#[test]
fn explain_side_lists_every_intention_and_marks_the_matching_ones() {
    let set = IntentionSet::new(
        vec![
            l4("web", "db", Allow),
            l4("*", "*", Deny),
            l4("web", "api", Allow),
        ],
        DefaultPolicy::Deny,
    );
    let l = lines(&set.explain_side(false, "default", "db"));
    assert_eq!(
        l,
        [
            r#""web" => "api"  precedence 9  allow  not matched: destination is db  ID id-default-web-api"#,
            r#""web" => "db"  precedence 9  allow  matched as destination  ID id-default-web-db"#,
            r#""*" => "*"  precedence 5  deny  matched as destination  ID id-default-*-*"#,
        ]
    );
    let by_source = set.explain_side(true, "default", "api");
    assert_eq!(
        by_source
            .iter()
            .map(|c| c.outcome.to_string())
            .collect::<Vec<_>>(),
        [
            "not matched: source is api",
            "not matched: source is api",
            "matched as source"
        ]
    );
}

fn arb_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("web"), Just("api"), Just("db"), Just("*")]
}

fn arb_ns() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("default"), Just("team-a"), Just("*")]
}

fn arb_intention() -> impl Strategy<Value = Intention> {
    (arb_ns(), arb_name(), arb_ns(), arb_name(), any::<bool>()).prop_map(
        |(sns, s, dns, d, allow)| Intention {
            source_ns: sns.to_string(),
            destination_ns: dns.to_string(),
            action: Some(if allow { Allow } else { Deny }),
            ..intention_between(s, d)
        },
    )
}

proptest! {
    /// The walk agrees with the decider: exactly one intention is `Decided` when the decider
    /// names one (the same one), none when the default policy decides; every `NotReached` one
    /// matches and has lower precedence; one-side walks mark exactly `matches_ns`'s answer.
    #[test]
    fn explain_agrees_with_the_decider(
        intentions in proptest::collection::vec(arb_intention(), 0..10),
        src_ns in prop_oneof![Just("default"), Just("team-a")],
        src in prop_oneof![Just("web"), Just("api")],
        dst in prop_oneof![Just("db"), Just("api")],
    ) {
        let set = IntentionSet::new(intentions, DefaultPolicy::Deny);
        let c = set.explain_ns(src_ns, src, DEFAULT_NAMESPACE, dst);
        prop_assert_eq!(c.len(), set.len());
        let decided: Vec<_> = c.iter().filter(|c| c.outcome == Outcome::Decided).collect();
        let d = set.decide_ns(src_ns, src, DEFAULT_NAMESPACE, dst);
        match &d.matched {
            Some(key) => {
                prop_assert_eq!(decided.len(), 1);
                prop_assert_eq!(&IntentionKey::of(decided[0].intention), key);
                for n in c.iter().filter(|c| matches!(c.outcome, Outcome::NotReached { .. })) {
                    prop_assert!(n.intention.precedence <= decided[0].intention.precedence);
                }
            }
            None => {
                let unmatched = c.iter().all(|c| matches!(c.outcome, Outcome::NotMatched { .. }));
                prop_assert!(decided.is_empty() && unmatched);
            }
        }
        for by_source in [false, true] {
            let name = if by_source { src } else { dst };
            let matched: Vec<&Intention> = set
                .explain_side(by_source, src_ns, name)
                .into_iter()
                .filter(|c| matches!(c.outcome, Outcome::Matched { .. }))
                .map(|c| c.intention)
                .collect();
            prop_assert_eq!(matched, set.matches_ns(by_source, src_ns, name));
        }
    }
}
