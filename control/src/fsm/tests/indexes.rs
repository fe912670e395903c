//! The derived lookups (`fsm::indexes`): after any command sequence they equal a rebuild from
//! scratch, the per-object indexes never fall below what they cover, and a write moves only
//! the indexes of what it touched.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::replication::arb_command;
use super::*;
use HealthStatus::{Critical, Passing};
use IntentionAction::{Allow, Deny};

/// Commands the replication property does not generate: node batches (some rejected, so their
/// rollback runs) and `service-intentions` entries.
fn arb_extra() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            prop::sample::select(vec!["n1", "n2"]),
            prop::collection::vec(arb_command(), 1..4),
        )
            .prop_map(|(n, ops)| Command::SyncNode {
                node: n.to_string(),
                ops,
            }),
        (
            prop::sample::select(vec!["web", "db", "*"]),
            prop::sample::select(vec![
                "[]",
                r#"[{"Name":"web","Action":"allow"}]"#,
                r#"[{"Name":"*","Action":"deny"},{"Name":"db","Action":"allow"}]"#,
            ]),
        )
            .prop_map(|(name, sources)| intentions_entry_set(name, sources, None)),
        prop::sample::select(vec!["web", "db", "*"]).prop_map(|name| {
            Command::ConfigEntryDelete {
                kind: ConfigKind::ServiceIntentions,
                name: name.to_string(),
                cas: None,
            }
        }),
    ]
}

/// The derived lookups of `state` against a rebuild, and the per-object indexes against the
/// objects they cover.
fn check_derived(state: &State) -> Result<(), TestCaseError> {
    let rebuilt = state.derive();
    prop_assert_eq!(state.derived.structure(), rebuilt.structure());
    for services in state.services.values() {
        for s in services.values() {
            let node = &state.nodes[&s.node];
            let checks = state.service_health(&s.service, false);
            let covered = checks
                .iter()
                .flat_map(|h| h.checks.iter().map(|c| c.modify_index))
                .chain([s.modify_index, node.modify_index])
                .max()
                .unwrap_or(0);
            for name in std::iter::once(s.service.as_str()).chain(s.connect_target()) {
                let ix = state.service_index(name);
                prop_assert!(ix >= covered, "{name}: {ix} < {covered}");
                prop_assert!(ix <= state.last_index);
            }
        }
    }
    // The kept list order is Consul's.
    let mut sorted: Vec<Intention> = state.intentions.values().cloned().collect();
    sorted.sort_by(crate::intentions::consul_order);
    prop_assert_eq!(state.intention_list(), sorted);
    for i in state.intentions.values() {
        let ix = state.intentions_index_for(&i.destination_name);
        prop_assert!(ix >= i.modify_index && ix <= state.last_index);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(17),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn derived_lookups_equal_a_rebuild(
        commands in prop::collection::vec(prop_oneof![4 => arb_command(), 1 => arb_extra()], 0..48),
    ) {
        let mut state = State::default();
        for (i, cmd) in commands.into_iter().enumerate() {
            state.apply(i as u64 + 1, cmd);
            check_derived(&state)?;
        }
        let restored: State =
            serde_json::from_slice(&serde_json::to_vec(&state).expect("serialize"))
                .expect("deserialize");
        prop_assert_eq!(restored.derived.structure(), state.derived.structure());
        check_derived(&restored)?;
    }
}

#[test]
fn a_write_moves_only_the_indexes_of_what_it_touched() {
    let mut s = State::default();
    apply_all_ok(
        &mut s,
        1,
        [
            register(
                "n1",
                Some(service("web", "web")),
                [check("c1", "web", Passing)],
            ),
            register("n1", Some(sidecar("web-sidecar-proxy", "web")), []),
            register("n2", Some(service("db", "db")), []),
            create("a", "web", Allow),
            create("a", "db", Allow),
        ],
    );
    assert_eq!((s.service_index("web"), s.service_index("db")), (2, 3));
    assert_eq!(s.service_index("web-sidecar-proxy"), 2);
    assert_eq!(
        (s.intentions_index_for("web"), s.intentions_index_for("db")),
        (4, 5)
    );
    // A check of web moves web (and not db); a node change moves every service on the node.
    apply_ok(&mut s, 6, update_check("n1", "c1", Critical, "down"));
    assert_eq!((s.service_index("web"), s.service_index("db")), (6, 3));
    apply_ok(
        &mut s,
        7,
        Command::Register {
            node: Node {
                address: "10.9.9.9".into(),
                ..node("n2")
            },
            service: None,
            checks: Vec::new(),
        },
    );
    assert_eq!((s.service_index("web"), s.service_index("db")), (6, 7));
    // An intention to db leaves web alone; one to `*` moves both.
    apply_ok(&mut s, 8, create("b", "db", Deny));
    assert_eq!(
        (s.intentions_index_for("web"), s.intentions_index_for("db")),
        (4, 8)
    );
    apply_ok(&mut s, 9, create("b", "*", Deny));
    assert_eq!(
        (s.intentions_index_for("web"), s.intentions_index_for("db")),
        (9, 9)
    );
    // The last instance of db going away moves db (to the extinction index), not web.
    apply_ok(&mut s, 10, deregister("n2", Some("db"), None));
    assert_eq!((s.service_index("web"), s.service_index("db")), (6, 10));
    assert!(s.service_health("db", false).is_empty());
    let moved = s.derived.services.moved_since(7);
    assert!(
        !moved.all && moved.absent && moved.names.is_empty(),
        "{moved:?}"
    );
    // Since 5: web's check (6); the sidecar has no check of its own, so it did not move.
    let moved = s.derived.services.moved_since(5);
    assert_eq!(moved.names, ["web"]);
    // A restored state starts every index at the table index, never lower than before.
    let restored: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(restored.service_index("web"), s.health_index());
    assert!(restored.derived.services.moved_since(9).all);
    assert_eq!(
        ids(restored.service_health("web", true)),
        ids(s.service_health("web", true))
    );
}

/// An intention updated in place keeps its destination live: it moves that destination only,
/// not the extinction index, which would move every destination through the absent `*` (so a
/// server re-rendered every watched destination on each update: issue 17, writes with 1,000
/// watched destinations). The end of the last `*` intention still moves every destination.
#[test]
fn an_update_in_place_moves_its_destination_only() {
    let mut s = State::default();
    apply_all_ok(
        &mut s,
        1,
        [
            create("a", "web", Allow),
            create("a", "db", Allow),
            create("b", "api", Allow),
        ],
    );
    let index = |s: &State| ["web", "db", "api"].map(|d| s.intentions_index_for(d));
    assert_eq!(index(&s), [1, 2, 3]);
    let mut changed = intention("a", "web", Deny);
    changed.description = "now denied".into();
    apply_ok(&mut s, 4, upsert(changed, true));
    assert_eq!(index(&s), [4, 2, 3]);
    let moved = s.derived.destinations.moved_since(3);
    assert_eq!((moved.all, moved.absent), (false, false), "{moved:?}");
    assert_eq!(moved.names, ["web"]);
    // db's last intention going away moves db (absent now), not web or api.
    apply_ok(&mut s, 5, delete_intention("a", "db"));
    assert_eq!(index(&s), [4, 5, 3]);
    assert!(s.derived.destinations.moved_since(4).absent);
    // The last `*` intention going away moves every destination.
    apply_ok(&mut s, 6, create("c", "*", Deny));
    assert_eq!(index(&s), [6, 6, 6]);
    apply_ok(&mut s, 7, delete_intention("c", "*"));
    assert_eq!(index(&s), [7, 7, 7]);
    apply_ok(&mut s, 8, create("d", "api", Allow));
    assert_eq!(index(&s), [7, 7, 8]);
}

fn ids(v: Vec<crate::wire::ServiceHealth>) -> Vec<String> {
    v.into_iter().map(|h| h.service.id).collect()
}
