//! What Raft replication and snapshots rely on: the same commands give the same state and
//! digest on every replica, commands and states survive their JSON encodings, and (as a
//! property over random command sequences) rejected commands change nothing and every
//! reachable state keeps the tables' invariants.

use proptest::prelude::*;

use super::*;
use crate::intentions::{self, DefaultPolicy};
use crate::model::{HttpPermission, IntentionPermission};
use HealthStatus::{Critical, Passing, Warning};
use IntentionAction::{Allow, Deny};

/// A mixed command sequence touching every part of the state.
fn scenario() -> Vec<Command> {
    let a = new_root(1);
    let b = new_root(2);
    vec![
        register("n1", service("web", "web"), [check("serf", "", Passing)]),
        register("n1", sidecar("web-sidecar-proxy", "web"), []),
        register("n2", service("db", "db"), []),
        create("web", "db", Allow),
        create("*", "db", Deny),
        create("web", "db", Deny), // conflict
        ca_initialize(&a, ca_config(Some("1h"))),
        set_node_health("n1", Critical, "down"),
        ca_rotate(&a.root.id, &a, &b, NOW),
        deregister("n2", Some("db"), None),
        deregister("n2", Some("db"), None), // not found
        Command::SetDefaultPolicy {
            policy: DefaultPolicy::Allow,
        },
        prune_roots(NOW + 2 * HOUR),
        defaults_set("web", "http", None),
        intentions_entry_set(
            "web",
            r#"[{"Name":"billing","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"/v[0-9]+/.*","Header":[{"Name":"x-a","Present":true,"Invert":true}]}}]}]"#,
            None,
        ),
    ]
}

/// A state after [`scenario`] (indexes 1 to 15).
fn scenario_state() -> State {
    let mut state = State::default();
    for (i, cmd) in scenario().into_iter().enumerate() {
        state.apply(i as u64 + 1, cmd);
    }
    state
}

#[test]
fn same_commands_give_same_state_on_every_replica() {
    let commands = scenario();
    let mut one = State::default();
    let mut two = State::default();
    for (i, cmd) in commands.into_iter().enumerate() {
        let index = i as u64 + 1;
        let r1 = one.apply(index, cmd.clone());
        let r2 = two.apply(index, cmd);
        assert_eq!(r1, r2);
        assert_eq!(one.digest(), two.digest(), "diverged at index {index}");
    }
    assert_eq!(one, two);
    assert_eq!(one.last_index, 15);
    assert_eq!(one.ca.roots.len(), 1);
    assert_eq!(one.intentions.len(), 3);
    assert_eq!(one.service_defaults.len(), 1);
}

#[test]
fn commands_survive_the_log_encoding() {
    // Entries go through serde_json in the Raft log; applying the decoded command must give
    // the same state as applying the original.
    let mut direct = State::default();
    let mut decoded = State::default();
    for (i, cmd) in scenario().into_iter().enumerate() {
        let bytes = serde_json::to_vec(&cmd).expect("encode command");
        let back: Command = serde_json::from_slice(&bytes).expect("decode command");
        assert_eq!(back, cmd);
        direct.apply(i as u64 + 1, cmd);
        decoded.apply(i as u64 + 1, back);
    }
    assert_eq!(direct.digest(), decoded.digest());
}

#[test]
fn snapshot_round_trip_gives_equal_state_and_digest() {
    let mut state = scenario_state();
    // Give the snapshot an L7 intention and some meta too (skipped-when-empty fields).
    let l7 = Intention {
        action: None,
        permissions: vec![IntentionPermission {
            action: Allow,
            http: Some(HttpPermission {
                path_exact: "/health".to_string(),
                methods: vec!["GET".to_string()],
                ..HttpPermission::default()
            }),
        }],
        meta: BTreeMap::from([("owner".to_string(), "team-a".to_string())]),
        ..intention("api", "web", Allow)
    };
    apply_ok(&mut state, 20, upsert(l7, false));
    let bytes = serde_json::to_vec(&state).expect("serialize state");
    let restored: State = serde_json::from_slice(&bytes).expect("deserialize state");
    assert_eq!(restored, state);
    assert_eq!(restored.digest(), state.digest());

    // And the restored replica keeps agreeing with the original on what follows.
    let mut original = state;
    let mut restored = restored;
    let next = register("n3", service("api", "api"), []);
    assert_eq!(original.apply(21, next.clone()), restored.apply(21, next));
    assert_eq!(original.digest(), restored.digest());
}

#[test]
fn digest_reflects_every_change() {
    let mut state = scenario_state();
    let before = state.digest();
    assert_eq!(before.len(), 16);
    assert_eq!(before, state.clone().digest());
    apply_ok(&mut state, 16, update_check("n1", "serf", Warning, ""));
    assert_ne!(state.digest(), before);
}

#[test]
fn last_index_is_the_max_applied_index() {
    let mut state = State::default();
    assert_eq!(state.last_index, 0);
    state.apply(3, register("n1", None, []));
    assert_eq!(state.last_index, 3);
    // A rejected command still counts as applied.
    let r = state.apply(4, deregister("n1", Some("nope"), None));
    assert!(r.error.is_some());
    assert_eq!(r.index, 4);
    assert_eq!(state.last_index, 4);
    // Re-applying an older entry (e.g. after restoring a snapshot) does not move it back.
    state.apply(2, register("n1", None, []));
    assert_eq!(state.last_index, 4);
}

// ---------------------------------------------------------------------------------------------
// Property: replicas agree, rejected commands change nothing
// ---------------------------------------------------------------------------------------------

fn arb_status() -> impl Strategy<Value = HealthStatus> {
    prop::sample::select(vec![Passing, Warning, Critical])
}

fn arb_node_name() -> impl Strategy<Value = &'static str> {
    // "" is invalid for registration.
    prop::sample::select(vec!["n1", "n2", ""])
}

fn arb_service_id() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["web", "db", "web-sidecar-proxy"])
}

fn arb_service() -> impl Strategy<Value = ServiceInstance> {
    (
        prop::sample::select(vec!["web", "db"]),
        prop::sample::select(vec!["plain", "native", "sidecar", "bad-proxy", "same-id"]),
        0u16..2,
    )
        .prop_map(|(name, kind, port)| {
            let mut s = match kind {
                "native" => ServiceInstance {
                    connect: ServiceConnect { native: true },
                    ..service(name, name)
                },
                "sidecar" => sidecar(&format!("{name}-sidecar-proxy"), name),
                "bad-proxy" => ServiceInstance {
                    kind: "connect-proxy".to_string(),
                    ..service("bad", name)
                },
                "same-id" => service("", name),
                _ => service(name, name),
            };
            s.port += port;
            s
        })
}

fn arb_check() -> impl Strategy<Value = HealthCheck> {
    (
        prop::sample::select(vec!["c1", "c2", ""]),
        prop::sample::select(vec!["", "web", "db", "web-sidecar-proxy"]),
        arb_status(),
    )
        .prop_map(|(id, sid, status)| check(id, sid, status))
}

fn arb_intention_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["web", "db", "*", "bad*"])
}

pub(super) fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (
            arb_node_name(),
            prop::sample::select(vec!["10.0.0.1", "10.0.0.2"]),
            proptest::option::of(arb_service()),
            prop::collection::vec(arb_check(), 0..3),
        )
            .prop_map(|(n, address, service, checks)| Command::Register {
                node: Node {
                    address: address.to_string(),
                    ..node(n)
                },
                service,
                checks,
            }),
        2 => (
            arb_node_name(),
            proptest::option::of(arb_service_id()),
            proptest::option::of(prop::sample::select(vec!["c1", "c2"])),
        )
            .prop_map(|(n, s, c)| deregister(n, s, c)),
        1 => (arb_node_name(), prop::sample::select(vec!["c1", "c2"]), arb_status())
            .prop_map(|(n, c, status)| update_check(n, c, status, "")),
        1 => (arb_node_name(), arb_status())
            .prop_map(|(n, status)| set_node_health(n, status, "set")),
        3 => (
            arb_intention_name(),
            arb_intention_name(),
            proptest::option::of(prop::sample::select(vec![Allow, Deny])),
            any::<bool>(),
        )
            .prop_map(|(src, dst, action, replace)| upsert(
                Intention {
                    action,
                    ..intention(src, dst, Allow)
                },
                replace
            )),
        2 => (arb_intention_name(), arb_intention_name())
            .prop_map(|(src, dst)| delete_intention(src, dst)),
    ]
}

/// Invariants every reachable state keeps.
fn check_invariants(state: &State) -> Result<(), TestCaseError> {
    for (n, services) in &state.services {
        prop_assert!(state.nodes.contains_key(n), "services of unknown node {n}");
        for (id, s) in services {
            prop_assert_eq!(id, &s.id);
            prop_assert_eq!(&s.node, n);
            prop_assert!(s.create_index <= s.modify_index);
            prop_assert!(s.modify_index <= state.tables.services);
        }
    }
    for (n, checks) in &state.checks {
        prop_assert!(state.nodes.contains_key(n), "checks of unknown node {n}");
        for (id, c) in checks {
            prop_assert_eq!(id, &c.check_id);
            prop_assert!(
                c.service_id.is_empty()
                    || state
                        .services
                        .get(n)
                        .is_some_and(|m| m.contains_key(&c.service_id)),
                "check {} of {} refers to missing service {}",
                id,
                n,
                c.service_id
            );
            prop_assert!(c.create_index <= c.modify_index);
            prop_assert!(c.modify_index <= state.tables.checks);
        }
    }
    for (id, i) in &state.intentions {
        prop_assert_eq!(
            id,
            &intentions::legacy_id(
                &i.source_ns,
                &i.source_name,
                &i.destination_ns,
                &i.destination_name
            )
        );
        prop_assert!(intentions::validate(i).is_ok());
        prop_assert!(i.modify_index <= state.tables.intentions);
    }
    for n in state.nodes.values() {
        prop_assert!(n.modify_index <= state.tables.nodes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn replicas_agree_and_rejected_commands_change_nothing(
        commands in prop::collection::vec(arb_command(), 0..40),
    ) {
        let mut one = State::default();
        let mut two = State::default();
        for (i, cmd) in commands.into_iter().enumerate() {
            let index = i as u64 + 1;
            let expected_if_rejected = only_index_moved(&one, index);
            let r1 = one.apply(index, cmd.clone());
            let r2 = two.apply(index, cmd.clone());
            prop_assert_eq!(&r1, &r2);
            prop_assert_eq!(one.digest(), two.digest());
            prop_assert_eq!(one.last_index, index);
            if r1.error.is_some() {
                prop_assert_eq!(
                    one.digest(),
                    expected_if_rejected.digest(),
                    "rejected {:?} changed the state",
                    cmd
                );
            }
            check_invariants(&one)?;
        }
        let restored: State =
            serde_json::from_slice(&serde_json::to_vec(&one).expect("serialize"))
                .expect("deserialize");
        prop_assert_eq!(restored.digest(), one.digest());
        prop_assert_eq!(restored, one);
    }
}
