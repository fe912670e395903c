//! Unit tests of the state machine: catalog indexes, health views, intentions, CA rotation and
//! pruning, and the determinism that Raft replication and snapshots rely on.
//!
//! Every rejected command is checked to leave the state exactly as it was apart from
//! `last_index` (a rejected entry is still applied, so Raft's applied index moves on).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use time::OffsetDateTime;

use super::*;
use crate::ca::{BuiltinProvider, CaProvider, StoredRoot};
use crate::intentions::{self, DefaultPolicy};
use crate::model::{
    CaConfig, HealthCheck, HealthStatus, HttpPermission, Intention, IntentionAction,
    IntentionPermission, Node, ProxyConfig, ServiceConnect, ServiceInstance,
};

const CLUSTER_ID: &str = "11111111-2222-3333-4444-555555555555";
const TD: &str = "11111111-2222-3333-4444-555555555555.consul";
/// A fixed "now" for CA commands (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000;
const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// Builders and assertions
// ---------------------------------------------------------------------------------------------

fn node(name: &str) -> Node {
    Node {
        id: String::new(),
        node: name.to_string(),
        address: "10.0.0.1".to_string(),
        datacenter: "dc1".to_string(),
        meta: BTreeMap::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn service(id: &str, name: &str) -> ServiceInstance {
    ServiceInstance {
        id: id.to_string(),
        service: name.to_string(),
        node: String::new(),
        kind: String::new(),
        address: String::new(),
        port: 8080,
        tags: Vec::new(),
        meta: BTreeMap::new(),
        proxy: None,
        connect: ServiceConnect::default(),
        create_index: 0,
        modify_index: 0,
    }
}

fn sidecar(id: &str, destination: &str) -> ServiceInstance {
    ServiceInstance {
        kind: "connect-proxy".to_string(),
        port: 21000,
        proxy: Some(ProxyConfig {
            destination_service_name: destination.to_string(),
            destination_service_id: destination.to_string(),
            ..ProxyConfig::default()
        }),
        ..service(id, &format!("{destination}-sidecar-proxy"))
    }
}

fn check(id: &str, service_id: &str, status: HealthStatus) -> HealthCheck {
    HealthCheck {
        node: String::new(),
        check_id: id.to_string(),
        name: id.to_string(),
        status,
        notes: String::new(),
        output: String::new(),
        service_id: service_id.to_string(),
        service_name: String::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn register(n: &str, s: Option<ServiceInstance>, checks: Vec<HealthCheck>) -> Command {
    Command::Register {
        node: node(n),
        service: s,
        checks,
    }
}

fn deregister(n: &str, service_id: Option<&str>, check_id: Option<&str>) -> Command {
    Command::Deregister {
        node: n.to_string(),
        service_id: service_id.map(str::to_string),
        check_id: check_id.map(str::to_string),
    }
}

fn intention(src: &str, dst: &str, action: IntentionAction) -> Intention {
    Intention {
        id: String::new(),
        source_name: src.to_string(),
        source_ns: "default".to_string(),
        destination_name: dst.to_string(),
        destination_ns: "default".to_string(),
        source_type: "consul".to_string(),
        action: Some(action),
        permissions: Vec::new(),
        description: String::new(),
        meta: BTreeMap::new(),
        precedence: 0,
        create_index: 0,
        modify_index: 0,
    }
}

fn upsert(i: Intention, replace: bool) -> Command {
    Command::IntentionUpsert {
        intention: i,
        replace,
    }
}

fn delete_intention(src: &str, dst: &str) -> Command {
    Command::IntentionDelete {
        source_ns: "default".to_string(),
        source: src.to_string(),
        destination_ns: "default".to_string(),
        destination: dst.to_string(),
    }
}

fn ca_config(leaf_ttl: Option<&str>) -> CaConfig {
    let mut config = BTreeMap::new();
    if let Some(ttl) = leaf_ttl {
        config.insert("LeafCertTTL".to_string(), serde_json::json!(ttl));
    }
    CaConfig {
        provider: "consul".to_string(),
        config,
        create_index: 0,
        modify_index: 0,
    }
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("valid timestamp")
}

fn new_root(serial: u64) -> StoredRoot {
    BuiltinProvider
        .generate_root(TD, serial, at(NOW))
        .expect("generate root")
}

fn cross_sign(old: &StoredRoot, new: &StoredRoot) -> String {
    BuiltinProvider
        .cross_sign(old, new, at(NOW))
        .expect("cross sign")
}

fn ca_initialize(root: &StoredRoot, config: CaConfig) -> Command {
    Command::CaInitialize {
        cluster_id: CLUSTER_ID.to_string(),
        root: Box::new(root.clone()),
        config,
    }
}

fn ca_rotate(expected_active: &str, old: &StoredRoot, new: &StoredRoot, now: i64) -> Command {
    Command::CaRotate {
        expected_active: expected_active.to_string(),
        new_root: Box::new(new.clone()),
        cross_signed_pem: cross_sign(old, new),
        config: None,
        now_unix: now,
    }
}

/// Applies `cmd` and asserts it succeeded.
#[track_caller]
fn apply_ok(state: &mut State, index: u64, cmd: Command) {
    let last_index = state.last_index.max(index);
    let result = state.apply(index, cmd);
    assert_eq!(result, ApplyResult { index, error: None });
    assert_eq!(state.last_index, last_index);
}

/// What `state` must look like after any command at `index` that changes nothing.
fn only_index_moved(state: &State, index: u64) -> State {
    let mut expected = state.clone();
    expected.last_index = expected.last_index.max(index);
    expected
}

/// Applies `cmd`, asserts it was rejected and changed nothing (state and digest), and returns
/// the error.
#[track_caller]
fn apply_rejected(state: &mut State, index: u64, cmd: Command) -> ApplyError {
    let expected = only_index_moved(state, index);
    let result = state.apply(index, cmd);
    assert_eq!(result.index, index);
    let error = result.error.expect("command should have been rejected");
    assert_eq!(*state, expected, "rejected command changed the state");
    assert_eq!(state.digest(), expected.digest());
    error
}

/// Applies `cmd`, asserts it succeeded and changed nothing but `last_index`.
#[track_caller]
fn apply_noop(state: &mut State, index: u64, cmd: Command) {
    let expected = only_index_moved(state, index);
    apply_ok(state, index, cmd);
    assert_eq!(
        *state, expected,
        "command should not have changed the state"
    );
    assert_eq!(state.digest(), expected.digest());
}

fn svc<'a>(state: &'a State, n: &str, id: &str) -> &'a ServiceInstance {
    &state.services[n][id]
}

fn chk<'a>(state: &'a State, n: &str, id: &str) -> &'a HealthCheck {
    &state.checks[n][id]
}

/// A state with node `n1` holding `web` (checks `web-check` and node check `serf`) and its
/// sidecar, registered at indexes 10 and 11.
fn catalog() -> State {
    let mut state = State::default();
    apply_ok(
        &mut state,
        10,
        register(
            "n1",
            Some(service("web", "web")),
            vec![
                check("serf", "", HealthStatus::Passing),
                check("web-check", "web", HealthStatus::Passing),
            ],
        ),
    );
    apply_ok(
        &mut state,
        11,
        register(
            "n1",
            Some(sidecar("web-sidecar-proxy", "web")),
            vec![check(
                "web-proxy-check",
                "web-sidecar-proxy",
                HealthStatus::Passing,
            )],
        ),
    );
    state
}

// ---------------------------------------------------------------------------------------------
// Catalog: registration and indexes
// ---------------------------------------------------------------------------------------------

#[test]
fn register_sets_create_and_modify_indexes_and_table_indexes() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register(
            "n1",
            Some(service("web-1", "web")),
            vec![check("web-check", "web-1", HealthStatus::Warning)],
        ),
    );

    let n = &state.nodes["n1"];
    assert_eq!((n.create_index, n.modify_index), (5, 5));
    let s = svc(&state, "n1", "web-1");
    assert_eq!((s.create_index, s.modify_index), (5, 5));
    assert_eq!(s.node, "n1", "the instance is stamped with its node");
    let c = chk(&state, "n1", "web-check");
    assert_eq!((c.create_index, c.modify_index), (5, 5));
    assert_eq!(c.node, "n1");
    assert_eq!(c.status, HealthStatus::Warning);
    assert_eq!(
        state.tables,
        TableIndexes {
            nodes: 5,
            services: 5,
            checks: 5,
            ..TableIndexes::default()
        }
    );
    assert_eq!(state.health_index(), 5);
}

#[test]
fn register_defaults_service_id_to_name() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        register("n1", Some(service("", "web")), vec![]),
    );
    assert_eq!(svc(&state, "n1", "web").service, "web");
    assert_eq!(svc(&state, "n1", "web").id, "web");
}

#[test]
fn register_check_for_service_whose_id_defaults_to_its_name() {
    // Consul defaults `ID` to `Service` before checking what the checks refer to, so a check
    // naming the service by its (defaulted) ID in the same registration is accepted.
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        register(
            "n1",
            Some(service("", "web")),
            vec![check("web-check", "web", HealthStatus::Critical)],
        ),
    );
    assert_eq!(chk(&state, "n1", "web-check").service_id, "web");
    let health = state.service_health("web", false);
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].status(), HealthStatus::Critical);
}

#[test]
fn reregistering_identical_service_bumps_nothing() {
    let mut state = State::default();
    let cmd = register(
        "n1",
        Some(service("web-1", "web")),
        vec![check("web-check", "web-1", HealthStatus::Passing)],
    );
    apply_ok(&mut state, 5, cmd.clone());
    apply_noop(&mut state, 9, cmd);
    assert_eq!(svc(&state, "n1", "web-1").modify_index, 5);
    assert_eq!(state.tables.services, 5);
    assert_eq!(state.tables.checks, 5);
    assert_eq!(state.tables.nodes, 5);
}

#[test]
fn reregistering_with_stale_indexes_in_the_request_is_still_identical() {
    // Clients echo back what they read, indexes included; those are not a change.
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register("n1", Some(service("web-1", "web")), vec![]),
    );
    let mut echoed = svc(&state, "n1", "web-1").clone();
    echoed.create_index = 1;
    echoed.modify_index = 2;
    apply_noop(&mut state, 6, register("n1", Some(echoed), vec![]));
}

#[test]
fn changed_service_bumps_modify_index_and_keeps_create_index() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register("n1", Some(service("web-1", "web")), vec![]),
    );
    let mut changed = service("web-1", "web");
    changed.port = 9090;
    changed.tags = vec!["v2".to_string()];
    apply_ok(&mut state, 8, register("n1", Some(changed), vec![]));

    let s = svc(&state, "n1", "web-1");
    assert_eq!((s.create_index, s.modify_index), (5, 8));
    assert_eq!(s.port, 9090);
    assert_eq!(state.tables.services, 8);
    // The node itself did not change.
    assert_eq!(state.nodes["n1"].modify_index, 5);
    assert_eq!(state.tables.nodes, 5);
}

#[test]
fn changed_node_bumps_node_index_only() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register("n1", Some(service("web-1", "web")), vec![]),
    );
    let mut moved = node("n1");
    moved.address = "10.0.0.2".to_string();
    apply_ok(
        &mut state,
        7,
        Command::Register {
            node: moved,
            service: None,
            checks: vec![],
        },
    );
    let n = &state.nodes["n1"];
    assert_eq!((n.create_index, n.modify_index), (5, 7));
    assert_eq!(n.address, "10.0.0.2");
    assert_eq!(state.tables.nodes, 7);
    assert_eq!(state.tables.services, 5);
    assert_eq!(svc(&state, "n1", "web-1").modify_index, 5);
}

#[test]
fn changed_check_bumps_its_modify_index_and_checks_table() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register(
            "n1",
            Some(service("web-1", "web")),
            vec![check("web-check", "web-1", HealthStatus::Passing)],
        ),
    );
    apply_ok(
        &mut state,
        6,
        register(
            "n1",
            None,
            vec![check("web-check", "web-1", HealthStatus::Critical)],
        ),
    );
    let c = chk(&state, "n1", "web-check");
    assert_eq!((c.create_index, c.modify_index), (5, 6));
    assert_eq!(state.tables.checks, 6);
    assert_eq!(state.tables.services, 5);
}

#[test]
fn invalid_registrations_are_rejected_and_change_nothing() {
    let mut state = catalog();
    let cases = [
        (
            "empty node name",
            register("", Some(service("x", "x")), vec![]),
        ),
        (
            "empty service name",
            register("n1", Some(service("x", "")), vec![]),
        ),
        (
            "connect-proxy without Proxy",
            register(
                "n1",
                Some(ServiceInstance {
                    kind: "connect-proxy".to_string(),
                    ..service("p", "p")
                }),
                vec![],
            ),
        ),
        (
            "connect-proxy without destination",
            register(
                "n1",
                Some(ServiceInstance {
                    proxy: Some(ProxyConfig::default()),
                    ..sidecar("p", "web")
                }),
                vec![],
            ),
        ),
        (
            "check for unknown service",
            register(
                "n1",
                None,
                vec![check("c", "no-such-service", HealthStatus::Passing)],
            ),
        ),
        (
            "check for a service on another node",
            register("n2", None, vec![check("c", "web", HealthStatus::Passing)]),
        ),
        (
            "check without ID",
            register("n1", None, vec![check("", "", HealthStatus::Passing)]),
        ),
        (
            // The valid service must not be half-applied when a check is invalid.
            "valid service, invalid check",
            register(
                "n3",
                Some(service("api", "api")),
                vec![check("c", "web", HealthStatus::Passing)],
            ),
        ),
    ];
    for (i, (what, cmd)) in cases.into_iter().enumerate() {
        let index = 100 + i as u64;
        let err = apply_rejected(&mut state, index, cmd);
        assert!(
            matches!(err, ApplyError::Invalid(_)),
            "{what}: expected Invalid, got {err:?}"
        );
        assert_eq!(err.http_status(), 400);
    }
    assert!(!state.nodes.contains_key("n2"));
    assert!(!state.nodes.contains_key("n3"));
}

// ---------------------------------------------------------------------------------------------
// Catalog: deregistration
// ---------------------------------------------------------------------------------------------

#[test]
fn deregister_service_removes_it_and_its_checks_only() {
    let mut state = catalog();
    apply_ok(&mut state, 20, deregister("n1", Some("web"), None));

    assert!(!state.services["n1"].contains_key("web"));
    assert!(state.services["n1"].contains_key("web-sidecar-proxy"));
    let checks: Vec<&str> = state.checks["n1"].keys().map(String::as_str).collect();
    assert_eq!(checks, ["serf", "web-proxy-check"]);
    assert_eq!(state.tables.services, 20);
    assert_eq!(state.tables.checks, 20);
    assert_eq!(state.tables.nodes, 10);
    assert!(state.nodes.contains_key("n1"));
}

#[test]
fn deregister_service_without_checks_leaves_checks_table_alone() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        register(
            "n1",
            Some(service("a", "a")),
            vec![check("serf", "", HealthStatus::Passing)],
        ),
    );
    apply_ok(
        &mut state,
        2,
        register("n1", Some(service("b", "b")), vec![]),
    );
    apply_ok(&mut state, 3, deregister("n1", Some("b"), None));
    assert_eq!(state.tables.services, 3);
    assert_eq!(state.tables.checks, 1);
}

#[test]
fn deregister_unknown_service_or_check_is_not_found_and_changes_nothing() {
    let mut state = catalog();
    let err = apply_rejected(&mut state, 20, deregister("n1", Some("nope"), None));
    assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");
    assert_eq!(err.http_status(), 404);
    let err = apply_rejected(&mut state, 21, deregister("n1", None, Some("nope")));
    assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");
}

#[test]
fn deregister_unknown_node_is_a_noop() {
    let mut state = catalog();
    apply_noop(&mut state, 20, deregister("ghost", None, None));
    apply_noop(&mut state, 21, deregister("ghost", Some("web"), None));
}

#[test]
fn deregister_single_check() {
    let mut state = catalog();
    apply_ok(&mut state, 20, deregister("n1", None, Some("serf")));
    assert!(!state.checks["n1"].contains_key("serf"));
    assert!(state.checks["n1"].contains_key("web-check"));
    assert_eq!(state.tables.checks, 20);
    assert_eq!(state.tables.services, 11);
}

#[test]
fn deregister_node_removes_services_and_checks() {
    let mut state = catalog();
    apply_ok(
        &mut state,
        2,
        register("n2", Some(service("db", "db")), vec![]),
    );
    apply_ok(&mut state, 20, deregister("n1", None, None));

    assert!(!state.nodes.contains_key("n1"));
    assert!(!state.services.contains_key("n1"));
    assert!(!state.checks.contains_key("n1"));
    assert!(state.nodes.contains_key("n2"));
    assert!(state.services["n2"].contains_key("db"));
    assert_eq!(state.tables.nodes, 20);
    assert_eq!(state.tables.services, 20);
    assert_eq!(state.tables.checks, 20);
    assert!(state.service_health("web", false).is_empty());
    assert!(state.service_health("web", true).is_empty());
    assert_eq!(state.service_health("db", false).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

#[test]
fn service_health_connect_returns_sidecars_and_native_instances_only() {
    let mut state = catalog();
    // A connect-native instance of web on n2, and a plain instance of db on n2.
    apply_ok(
        &mut state,
        12,
        register(
            "n2",
            Some(ServiceInstance {
                connect: ServiceConnect { native: true },
                ..service("web-native", "web")
            }),
            vec![],
        ),
    );
    apply_ok(
        &mut state,
        13,
        register("n2", Some(service("db", "db")), vec![]),
    );
    // A sidecar for db must not show up for web.
    apply_ok(
        &mut state,
        14,
        register("n2", Some(sidecar("db-sidecar-proxy", "db")), vec![]),
    );

    let ids = |v: Vec<InstanceHealth>| -> Vec<String> {
        v.into_iter().map(|h| h.service.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(state.service_health("web", true)),
        ["web-sidecar-proxy", "web-native"]
    );
    assert_eq!(
        ids(state.service_health("web", false)),
        ["web", "web-native"]
    );
    assert_eq!(ids(state.service_health("db", true)), ["db-sidecar-proxy"]);
    assert_eq!(ids(state.service_health("db", false)), ["db"]);
    assert!(state.service_health("nothing", true).is_empty());

    let proxies = state.service_health("web", true);
    assert_eq!(proxies[0].service.kind, "connect-proxy");
    assert_eq!(proxies[0].node.node, "n1");
    assert_eq!(proxies[1].node.node, "n2");
}

#[test]
fn instance_health_has_node_checks_and_its_own_checks() {
    let state = catalog();
    let web = &state.service_health("web", false)[0];
    let ids: Vec<&str> = web.checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(ids, ["serf", "web-check"]);
    let proxy = &state.service_health("web", true)[0];
    let ids: Vec<&str> = proxy.checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(ids, ["serf", "web-proxy-check"]);
}

#[test]
fn instance_status_is_worst_of_node_and_instance_checks() {
    use HealthStatus::{Critical, Passing, Warning};
    let status_with = |node_check: Option<HealthStatus>, own: &[HealthStatus]| {
        let mut checks = Vec::new();
        if let Some(s) = node_check {
            checks.push(check("serf", "", s));
        }
        for (i, s) in own.iter().enumerate() {
            checks.push(check(&format!("c{i}"), "web", *s));
        }
        // A failing check of another service on the same node must not count.
        checks.push(check("other", "other", Critical));
        let mut state = State::default();
        apply_ok(
            &mut state,
            1,
            register("n1", Some(service("other", "other")), vec![]),
        );
        apply_ok(
            &mut state,
            2,
            register("n1", Some(service("web", "web")), checks),
        );
        let health = state.service_health("web", false);
        assert_eq!(health.len(), 1);
        health[0].status()
    };
    assert_eq!(status_with(None, &[]), Passing);
    assert_eq!(status_with(Some(Passing), &[Passing, Passing]), Passing);
    assert_eq!(status_with(Some(Passing), &[Warning, Passing]), Warning);
    assert_eq!(status_with(Some(Warning), &[Passing]), Warning);
    assert_eq!(status_with(Some(Critical), &[Passing]), Critical);
    assert_eq!(status_with(Some(Warning), &[Critical, Passing]), Critical);
    assert_eq!(status_with(None, &[Warning, Critical]), Critical);
}

#[test]
fn update_check_changes_status_and_indexes() {
    let mut state = catalog();
    apply_ok(
        &mut state,
        20,
        Command::UpdateCheck {
            node: "n1".to_string(),
            check_id: "web-check".to_string(),
            status: HealthStatus::Critical,
            output: "connection refused".to_string(),
        },
    );
    let c = chk(&state, "n1", "web-check");
    assert_eq!(c.status, HealthStatus::Critical);
    assert_eq!(c.output, "connection refused");
    assert_eq!((c.create_index, c.modify_index), (10, 20));
    assert_eq!(state.tables.checks, 20);
    assert_eq!(state.health_index(), 20);
    assert_eq!(
        state.service_health("web", false)[0].status(),
        HealthStatus::Critical
    );
    // The proxy does not carry web's check.
    assert_eq!(
        state.service_health("web", true)[0].status(),
        HealthStatus::Passing
    );

    // Same status and output again: nothing changes.
    apply_noop(
        &mut state,
        21,
        Command::UpdateCheck {
            node: "n1".to_string(),
            check_id: "web-check".to_string(),
            status: HealthStatus::Critical,
            output: "connection refused".to_string(),
        },
    );
}

#[test]
fn update_unknown_check_is_not_found() {
    let mut state = catalog();
    for (n, c) in [("n1", "nope"), ("ghost", "serf")] {
        let err = apply_rejected(
            &mut state,
            20,
            Command::UpdateCheck {
                node: n.to_string(),
                check_id: c.to_string(),
                status: HealthStatus::Critical,
                output: String::new(),
            },
        );
        assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");
    }
}

#[test]
fn set_node_health_marks_every_check_of_the_node() {
    let mut state = catalog();
    apply_ok(
        &mut state,
        2,
        register(
            "n2",
            Some(service("db", "db")),
            vec![check("db-check", "db", HealthStatus::Passing)],
        ),
    );
    apply_ok(
        &mut state,
        20,
        Command::SetNodeHealth {
            node: "n1".to_string(),
            status: HealthStatus::Critical,
            output: "agent not responding".to_string(),
        },
    );
    for c in state.checks["n1"].values() {
        assert_eq!(c.status, HealthStatus::Critical, "{}", c.check_id);
        assert_eq!(c.output, "agent not responding");
        assert_eq!(c.modify_index, 20);
    }
    assert_eq!(chk(&state, "n2", "db-check").status, HealthStatus::Passing);
    assert_eq!(chk(&state, "n2", "db-check").modify_index, 2);
    assert_eq!(state.tables.checks, 20);
    for h in state
        .service_health("web", false)
        .into_iter()
        .chain(state.service_health("web", true))
    {
        assert_eq!(h.status(), HealthStatus::Critical);
    }

    // Already critical everywhere: no change, no index bump.
    apply_noop(
        &mut state,
        21,
        Command::SetNodeHealth {
            node: "n1".to_string(),
            status: HealthStatus::Critical,
            output: "still not responding".to_string(),
        },
    );
}

#[test]
fn set_node_health_of_node_without_checks_changes_nothing() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        register("n1", Some(service("web", "web")), vec![]),
    );
    apply_noop(
        &mut state,
        2,
        Command::SetNodeHealth {
            node: "n1".to_string(),
            status: HealthStatus::Critical,
            output: String::new(),
        },
    );
    // And deregistering the node then does not report a checks change it never had.
    apply_ok(&mut state, 3, deregister("n1", None, None));
    assert_eq!(state.tables.checks, 0);
}

#[test]
fn set_node_health_of_unknown_node_is_not_found() {
    let mut state = catalog();
    let err = apply_rejected(
        &mut state,
        20,
        Command::SetNodeHealth {
            node: "ghost".to_string(),
            status: HealthStatus::Critical,
            output: String::new(),
        },
    );
    assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Intentions
// ---------------------------------------------------------------------------------------------

#[test]
fn intention_upsert_sets_id_precedence_and_indexes() {
    let mut state = State::default();
    let mut i = intention("web", "db", IntentionAction::Allow);
    // Whatever the client sends for server-owned fields is overwritten.
    i.id = "client-chosen".to_string();
    i.precedence = 1;
    i.create_index = 99;
    i.modify_index = 99;
    apply_ok(&mut state, 7, upsert(i, false));

    let id = intentions::legacy_id("default", "web", "default", "db");
    assert_eq!(state.intentions.keys().collect::<Vec<_>>(), [&id]);
    let stored = &state.intentions[&id];
    assert_eq!(stored.id, id);
    assert_eq!(stored.precedence, 9);
    assert_eq!(
        stored.precedence,
        intentions::precedence("default", "web", "default", "db")
    );
    assert_eq!((stored.create_index, stored.modify_index), (7, 7));
    assert_eq!(state.tables.intentions, 7);
}

#[test]
fn intention_upsert_of_existing_pair_without_replace_is_conflict() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        7,
        upsert(intention("web", "db", IntentionAction::Allow), false),
    );
    let err = apply_rejected(
        &mut state,
        8,
        upsert(intention("web", "db", IntentionAction::Deny), false),
    );
    assert!(matches!(err, ApplyError::Conflict(_)), "{err:?}");
    assert_eq!(err.http_status(), 409);
    let id = intentions::legacy_id("default", "web", "default", "db");
    assert_eq!(state.intentions[&id].action, Some(IntentionAction::Allow));
}

#[test]
fn intention_upsert_with_replace_keeps_create_index() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        7,
        upsert(intention("web", "db", IntentionAction::Allow), false),
    );
    let mut deny = intention("web", "db", IntentionAction::Deny);
    deny.description = "lock down".to_string();
    apply_ok(&mut state, 9, upsert(deny, true));

    assert_eq!(state.intentions.len(), 1);
    let stored = state.intention_list().remove(0);
    assert_eq!(stored.action, Some(IntentionAction::Deny));
    assert_eq!(stored.description, "lock down");
    assert_eq!((stored.create_index, stored.modify_index), (7, 9));
    assert_eq!(state.tables.intentions, 9);

    // `replace` on a new pair simply creates it.
    apply_ok(
        &mut state,
        10,
        upsert(intention("api", "db", IntentionAction::Allow), true),
    );
    let id = intentions::legacy_id("default", "api", "default", "db");
    assert_eq!(
        (
            state.intentions[&id].create_index,
            state.intentions[&id].modify_index
        ),
        (10, 10)
    );
}

#[test]
fn invalid_intentions_are_rejected() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        upsert(intention("web", "db", IntentionAction::Allow), false),
    );
    let both = Intention {
        permissions: vec![IntentionPermission {
            action: IntentionAction::Allow,
            http: Some(HttpPermission {
                path_prefix: "/api".to_string(),
                ..HttpPermission::default()
            }),
        }],
        ..intention("api", "db", IntentionAction::Allow)
    };
    let neither = Intention {
        action: None,
        ..intention("api", "db", IntentionAction::Allow)
    };
    let empty_source = intention("", "db", IntentionAction::Allow);
    let partial_wildcard = intention("web*", "db", IntentionAction::Allow);
    // Also with `replace` on the existing pair: validation comes first.
    let replace_invalid = Intention {
        action: None,
        ..intention("web", "db", IntentionAction::Allow)
    };
    for (index, (i, replace)) in [
        (both, false),
        (neither, false),
        (empty_source, false),
        (partial_wildcard, false),
        (replace_invalid, true),
    ]
    .into_iter()
    .enumerate()
    {
        let err = apply_rejected(&mut state, 10 + index as u64, upsert(i, replace));
        assert!(matches!(err, ApplyError::Invalid(_)), "{err:?}");
    }
}

#[test]
fn intention_with_permissions_only_is_accepted() {
    let mut state = State::default();
    let l7 = Intention {
        action: None,
        permissions: vec![IntentionPermission {
            action: IntentionAction::Deny,
            http: Some(HttpPermission {
                path_prefix: "/admin".to_string(),
                ..HttpPermission::default()
            }),
        }],
        ..intention("web", "api", IntentionAction::Allow)
    };
    apply_ok(&mut state, 3, upsert(l7.clone(), false));
    let stored = state.intention_list().remove(0);
    assert_eq!(stored.permissions, l7.permissions);
    assert_eq!(stored.action, None);
}

#[test]
fn intention_delete() {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        upsert(intention("web", "db", IntentionAction::Allow), false),
    );
    apply_ok(
        &mut state,
        2,
        upsert(intention("api", "db", IntentionAction::Allow), false),
    );
    let err = apply_rejected(&mut state, 3, delete_intention("db", "web"));
    assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");
    assert_eq!(state.tables.intentions, 2);

    apply_ok(&mut state, 4, delete_intention("web", "db"));
    assert_eq!(state.intentions.len(), 1);
    assert_eq!(state.tables.intentions, 4);
    let err = apply_rejected(&mut state, 5, delete_intention("web", "db"));
    assert!(matches!(err, ApplyError::NotFound(_)), "{err:?}");

    // Deleted pairs can be created again without `replace`, with fresh indexes.
    apply_ok(
        &mut state,
        6,
        upsert(intention("web", "db", IntentionAction::Deny), false),
    );
    let id = intentions::legacy_id("default", "web", "default", "db");
    assert_eq!(state.intentions[&id].create_index, 6);
}

#[test]
fn intention_list_is_ordered_by_precedence_desc() {
    let mut state = State::default();
    // Inserted lowest precedence first.
    let pairs = [
        ("*", "*"),    // 5
        ("web", "*"),  // 6
        ("*", "db"),   // 8
        ("api", "db"), // 9
        ("web", "db"), // 9
    ];
    for (index, (src, dst)) in pairs.into_iter().enumerate() {
        apply_ok(
            &mut state,
            index as u64 + 1,
            upsert(intention(src, dst, IntentionAction::Allow), false),
        );
    }
    let list = state.intention_list();
    let got: Vec<(u32, &str, &str)> = list
        .iter()
        .map(|i| {
            (
                i.precedence,
                i.source_name.as_str(),
                i.destination_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (9, "api", "db"),
            (9, "web", "db"),
            (8, "*", "db"),
            (6, "web", "*"),
            (5, "*", "*"),
        ]
    );
}

#[test]
fn set_default_policy() {
    let mut state = State::default();
    assert_eq!(state.default_policy, DefaultPolicy::Deny);
    apply_ok(
        &mut state,
        4,
        Command::SetDefaultPolicy {
            policy: DefaultPolicy::Allow,
        },
    );
    assert_eq!(state.default_policy, DefaultPolicy::Allow);
    assert_eq!(state.tables.config, 4);
}

// ---------------------------------------------------------------------------------------------
// CA
// ---------------------------------------------------------------------------------------------

/// A state whose CA was initialized at index 1 with `root` and a config of `leaf_ttl`.
fn ca_state(root: &StoredRoot, leaf_ttl: Option<&str>) -> State {
    let mut state = State::default();
    apply_ok(&mut state, 1, ca_initialize(root, ca_config(leaf_ttl)));
    state
}

fn active_ids(state: &State) -> Vec<&str> {
    state
        .ca
        .roots
        .iter()
        .filter(|r| r.root.active)
        .map(|r| r.root.id.as_str())
        .collect()
}

#[test]
fn ca_initialize_sets_trust_domain_active_root_and_config() {
    let root = new_root(1);
    assert!(!root.root.id.is_empty());
    let state = ca_state(&root, None);

    assert_eq!(state.ca.cluster_id, CLUSTER_ID);
    assert_eq!(state.ca.trust_domain, TD);
    assert_eq!(state.ca.roots.len(), 1);
    assert_eq!(active_ids(&state), [root.root.id.as_str()]);
    let active = state.ca.active().expect("active root");
    assert_eq!((active.root.create_index, active.root.modify_index), (1, 1));
    assert_eq!(active.root.root_cert, root.root.root_cert);
    assert_eq!(active.private_key_pem, root.private_key_pem);
    assert_eq!(state.ca.next_serial, root.root.serial_number + 1);
    let config = state.ca.config.as_ref().expect("config");
    assert_eq!(config.provider, "consul");
    assert_eq!((config.create_index, config.modify_index), (1, 1));
    assert_eq!(state.tables.roots, 1);
    assert_eq!(state.tables.ca_config, 1);
    assert_eq!(
        leaf_ttl(state.ca.config.as_ref()),
        Duration::from_secs(72 * 3600)
    );

    let list = state.ca.root_list();
    assert_eq!(list.active_root_id, root.root.id);
    assert_eq!(list.trust_domain, TD);
    assert_eq!(list.roots.len(), 1);
}

#[test]
fn second_ca_initialize_is_ignored() {
    let first = new_root(1);
    let mut state = ca_state(&first, None);
    let second = new_root(1);
    assert_ne!(first.root.id, second.root.id);
    let mut other = ca_initialize(&second, ca_config(Some("1h")));
    if let Command::CaInitialize { cluster_id, .. } = &mut other {
        *cluster_id = "99999999-0000-0000-0000-000000000000".to_string();
    }
    apply_noop(&mut state, 2, other);
    assert_eq!(active_ids(&state), [first.root.id.as_str()]);
    assert_eq!(state.ca.trust_domain, TD);
}

#[test]
fn ca_rotate_with_wrong_expected_active_is_conflict() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    let new = new_root(2);
    let err = apply_rejected(
        &mut state,
        2,
        ca_rotate("not-the-active-id", &old, &new, NOW),
    );
    assert!(matches!(err, ApplyError::Conflict(_)), "{err:?}");
    assert_eq!(active_ids(&state), [old.root.id.as_str()]);
    assert!(state.ca.prune_after.is_empty());
}

#[test]
fn ca_rotate_with_already_present_root_is_conflict() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    let err = apply_rejected(&mut state, 2, ca_rotate(&old.root.id, &old, &old, NOW));
    assert!(matches!(err, ApplyError::Conflict(_)), "{err:?}");
}

#[test]
fn ca_rotate_before_initialize_is_rejected() {
    let old = new_root(1);
    let new = new_root(2);
    let mut state = State::default();
    let err = apply_rejected(&mut state, 1, ca_rotate(&old.root.id, &old, &new, NOW));
    assert!(matches!(err, ApplyError::Invalid(_)), "{err:?}");
}

#[test]
fn ca_rotate_switches_active_root_and_schedules_pruning() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    let new = new_root(2);
    let cross = cross_sign(&old, &new);
    apply_ok(
        &mut state,
        5,
        Command::CaRotate {
            expected_active: old.root.id.clone(),
            new_root: Box::new(new.clone()),
            cross_signed_pem: cross.clone(),
            config: None,
            now_unix: NOW,
        },
    );

    assert_eq!(state.ca.roots.len(), 2);
    assert_eq!(active_ids(&state), [new.root.id.as_str()]);
    let (o, n) = (&state.ca.roots[0], &state.ca.roots[1]);
    assert_eq!(o.root.id, old.root.id, "oldest first");
    assert!(!o.root.active);
    assert_eq!(o.root.rotated_out_at, NOW);
    assert_eq!((o.root.create_index, o.root.modify_index), (1, 5));
    assert!(n.root.active);
    assert_eq!(n.root.rotated_out_at, 0);
    assert_eq!(n.root.intermediate_certs, [cross]);
    assert_eq!((n.root.create_index, n.root.modify_index), (5, 5));
    assert_eq!(
        state.ca.prune_after,
        BTreeMap::from([(old.root.id.clone(), NOW + 72 * HOUR)])
    );
    assert_eq!(state.ca.next_serial, 3);
    assert_eq!(state.tables.roots, 5);
    // Without a new config, the config is untouched.
    assert_eq!(state.tables.ca_config, 1);
    assert_eq!(state.ca.root_list().active_root_id, new.root.id);
    assert_eq!(state.ca.public_roots().len(), 2);

    // The old ID is no longer the one to expect.
    let newer = new_root(3);
    let err = apply_rejected(&mut state, 6, ca_rotate(&old.root.id, &new, &newer, NOW));
    assert!(matches!(err, ApplyError::Conflict(_)), "{err:?}");
}

#[test]
fn ca_rotate_uses_configured_leaf_ttl() {
    let old = new_root(1);
    let mut state = ca_state(&old, Some("1h"));
    assert_eq!(
        leaf_ttl(state.ca.config.as_ref()),
        Duration::from_secs(3600)
    );
    let new = new_root(2);
    apply_ok(&mut state, 2, ca_rotate(&old.root.id, &old, &new, NOW));
    assert_eq!(state.ca.prune_after[&old.root.id], NOW + HOUR);
}

#[test]
fn ca_rotate_with_new_config_prunes_by_the_old_ttl() {
    // Leaves of the old root were signed under the old TTL, whatever the new config says.
    let old = new_root(1);
    let mut state = ca_state(&old, Some("1h"));
    let new = new_root(2);
    let Command::CaRotate {
        expected_active,
        new_root,
        cross_signed_pem,
        now_unix,
        ..
    } = ca_rotate(&old.root.id, &old, &new, NOW)
    else {
        unreachable!()
    };
    apply_ok(
        &mut state,
        4,
        Command::CaRotate {
            expected_active,
            new_root,
            cross_signed_pem,
            config: Some(ca_config(Some("24h"))),
            now_unix,
        },
    );
    assert_eq!(state.ca.prune_after[&old.root.id], NOW + HOUR);
    let config = state.ca.config.as_ref().expect("config");
    assert_eq!((config.create_index, config.modify_index), (1, 4));
    assert_eq!(leaf_ttl(Some(config)), Duration::from_secs(24 * 3600));
    assert_eq!(state.tables.ca_config, 4);
}

#[test]
fn leaf_ttl_falls_back_to_default() {
    let default = Duration::from_secs(72 * 3600);
    assert_eq!(leaf_ttl(None), default);
    assert_eq!(leaf_ttl(Some(&ca_config(None))), default);
    assert_eq!(leaf_ttl(Some(&ca_config(Some("not a duration")))), default);
    let mut numeric = ca_config(None);
    numeric
        .config
        .insert("LeafCertTTL".to_string(), serde_json::json!(3600));
    assert_eq!(leaf_ttl(Some(&numeric)), default);
    assert_eq!(
        leaf_ttl(Some(&ca_config(Some("90m")))),
        Duration::from_secs(90 * 60)
    );
}

#[test]
fn ca_set_config_keeps_create_index() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    apply_ok(
        &mut state,
        3,
        Command::CaSetConfig {
            config: ca_config(Some("2h")),
        },
    );
    let config = state.ca.config.as_ref().expect("config");
    assert_eq!((config.create_index, config.modify_index), (1, 3));
    assert_eq!(state.tables.ca_config, 3);
    assert_eq!(state.tables.roots, 1);
    assert_eq!(leaf_ttl(Some(config)), Duration::from_secs(2 * 3600));
}

#[test]
fn ca_prune_roots_waits_for_old_leaves_to_expire() {
    let old = new_root(1);
    let mut state = ca_state(&old, Some("1h"));
    let new = new_root(2);
    apply_ok(&mut state, 2, ca_rotate(&old.root.id, &old, &new, NOW));

    // Before and at the deadline the old root stays (a leaf may still be valid).
    apply_noop(&mut state, 3, Command::CaPruneRoots { now_unix: NOW });
    apply_noop(
        &mut state,
        4,
        Command::CaPruneRoots {
            now_unix: NOW + HOUR,
        },
    );
    assert_eq!(state.ca.roots.len(), 2);
    assert_eq!(state.tables.roots, 2);

    apply_ok(
        &mut state,
        5,
        Command::CaPruneRoots {
            now_unix: NOW + HOUR + 1,
        },
    );
    assert_eq!(state.ca.roots.len(), 1);
    assert_eq!(active_ids(&state), [new.root.id.as_str()]);
    assert!(state.ca.prune_after.is_empty());
    assert_eq!(state.tables.roots, 5);

    // The active root is never pruned, however late.
    apply_noop(&mut state, 6, Command::CaPruneRoots { now_unix: i64::MAX });
    assert_eq!(active_ids(&state), [new.root.id.as_str()]);
}

#[test]
fn ca_prune_roots_never_removes_active_root_even_if_scheduled() {
    // Rotate A -> B -> A': B gets a prune deadline, and so does A. Only inactive roots go.
    let a = new_root(1);
    let mut state = ca_state(&a, Some("1h"));
    let b = new_root(2);
    apply_ok(&mut state, 2, ca_rotate(&a.root.id, &a, &b, NOW));
    let c = new_root(3);
    apply_ok(
        &mut state,
        3,
        ca_rotate(&b.root.id, &b, &c, NOW + 10 * HOUR),
    );
    assert_eq!(active_ids(&state), [c.root.id.as_str()]);
    assert_eq!(state.ca.prune_after.len(), 2);

    // Only A has expired.
    apply_ok(
        &mut state,
        4,
        Command::CaPruneRoots {
            now_unix: NOW + 2 * HOUR,
        },
    );
    let ids: Vec<&str> = state.ca.roots.iter().map(|r| r.root.id.as_str()).collect();
    assert_eq!(ids, [b.root.id.as_str(), c.root.id.as_str()]);
    assert_eq!(
        state.ca.prune_after,
        BTreeMap::from([(b.root.id.clone(), NOW + 11 * HOUR)])
    );

    apply_ok(&mut state, 5, Command::CaPruneRoots { now_unix: i64::MAX });
    assert_eq!(state.ca.roots.len(), 1);
    assert_eq!(active_ids(&state), [c.root.id.as_str()]);
    assert_eq!(state.ca.next_serial, 4);
}

#[test]
fn ca_prune_roots_without_ca_is_a_noop() {
    let mut state = State::default();
    apply_noop(&mut state, 1, Command::CaPruneRoots { now_unix: NOW });
}

// ---------------------------------------------------------------------------------------------
// Determinism and snapshots
// ---------------------------------------------------------------------------------------------

/// A mixed command sequence touching every part of the state.
fn scenario() -> Vec<Command> {
    let a = new_root(1);
    let b = new_root(2);
    vec![
        register(
            "n1",
            Some(service("web", "web")),
            vec![check("serf", "", HealthStatus::Passing)],
        ),
        register("n1", Some(sidecar("web-sidecar-proxy", "web")), vec![]),
        register("n2", Some(service("db", "db")), vec![]),
        upsert(intention("web", "db", IntentionAction::Allow), false),
        upsert(intention("*", "db", IntentionAction::Deny), false),
        upsert(intention("web", "db", IntentionAction::Deny), false), // conflict
        ca_initialize(&a, ca_config(Some("1h"))),
        Command::SetNodeHealth {
            node: "n1".to_string(),
            status: HealthStatus::Critical,
            output: "down".to_string(),
        },
        ca_rotate(&a.root.id, &a, &b, NOW),
        deregister("n2", Some("db"), None),
        deregister("n2", Some("db"), None), // not found
        Command::SetDefaultPolicy {
            policy: DefaultPolicy::Allow,
        },
        Command::CaPruneRoots {
            now_unix: NOW + 2 * HOUR,
        },
        defaults_set("web", "http", None),
        intentions_entry_set(
            "web",
            r#"[{"Name":"billing","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"/v[0-9]+/.*","Header":[{"Name":"x-a","Present":true,"Invert":true}]}}]}]"#,
            None,
        ),
    ]
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
    let mut state = State::default();
    for (i, cmd) in scenario().into_iter().enumerate() {
        state.apply(i as u64 + 1, cmd);
    }
    // Give the snapshot an L7 intention and some meta too (skipped-when-empty fields).
    apply_ok(
        &mut state,
        20,
        upsert(
            Intention {
                action: None,
                permissions: vec![IntentionPermission {
                    action: IntentionAction::Allow,
                    http: Some(HttpPermission {
                        path_exact: "/health".to_string(),
                        methods: vec!["GET".to_string()],
                        ..HttpPermission::default()
                    }),
                }],
                meta: BTreeMap::from([("owner".to_string(), "team-a".to_string())]),
                ..intention("api", "web", IntentionAction::Allow)
            },
            false,
        ),
    );
    let bytes = serde_json::to_vec(&state).expect("serialize state");
    let restored: State = serde_json::from_slice(&bytes).expect("deserialize state");
    assert_eq!(restored, state);
    assert_eq!(restored.digest(), state.digest());

    // And the restored replica keeps agreeing with the original on what follows.
    let mut original = state;
    let mut restored = restored;
    let next = register("n3", Some(service("api", "api")), vec![]);
    assert_eq!(original.apply(21, next.clone()), restored.apply(21, next));
    assert_eq!(original.digest(), restored.digest());
}

#[test]
fn digest_reflects_every_change() {
    let mut state = catalog();
    let before = state.digest();
    assert_eq!(before.len(), 16);
    assert_eq!(before, state.clone().digest());
    apply_ok(
        &mut state,
        12,
        Command::UpdateCheck {
            node: "n1".to_string(),
            check_id: "serf".to_string(),
            status: HealthStatus::Warning,
            output: String::new(),
        },
    );
    assert_ne!(state.digest(), before);
}

#[test]
fn last_index_is_the_max_applied_index() {
    let mut state = State::default();
    assert_eq!(state.last_index, 0);
    state.apply(3, register("n1", None, vec![]));
    assert_eq!(state.last_index, 3);
    // A rejected command still counts as applied.
    let r = state.apply(4, deregister("n1", Some("nope"), None));
    assert!(r.error.is_some());
    assert_eq!(r.index, 4);
    assert_eq!(state.last_index, 4);
    // Re-applying an older entry (e.g. after restoring a snapshot) does not move it back.
    state.apply(2, register("n1", None, vec![]));
    assert_eq!(state.last_index, 4);
}

// ---------------------------------------------------------------------------------------------
// Property: replicas agree, rejected commands change nothing
// ---------------------------------------------------------------------------------------------

fn arb_status() -> impl Strategy<Value = HealthStatus> {
    prop::sample::select(vec![
        HealthStatus::Passing,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ])
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

fn arb_command() -> impl Strategy<Value = Command> {
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
            .prop_map(|(n, c, status)| Command::UpdateCheck {
                node: n.to_string(),
                check_id: c.to_string(),
                status,
                output: String::new(),
            }),
        1 => (arb_node_name(), arb_status()).prop_map(|(n, status)| Command::SetNodeHealth {
            node: n.to_string(),
            status,
            output: "set".to_string(),
        }),
        3 => (
            arb_intention_name(),
            arb_intention_name(),
            proptest::option::of(prop::sample::select(vec![
                IntentionAction::Allow,
                IntentionAction::Deny,
            ])),
            any::<bool>(),
        )
            .prop_map(|(src, dst, action, replace)| upsert(
                Intention {
                    action,
                    ..intention(src, dst, IntentionAction::Allow)
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

// ---------------------------------------------------------------------------------------------
// Config entries
// ---------------------------------------------------------------------------------------------

use crate::config_entries::{ConfigEntry, ConfigKind, Protocol};

fn defaults_set(name: &str, protocol: &str, cas: Option<u64>) -> Command {
    let json = format!(r#"{{"Kind":"service-defaults","Name":"{name}","Protocol":"{protocol}"}}"#);
    Command::ConfigEntrySet {
        entry: ConfigEntry::from_json(json.as_bytes()).expect("valid entry"),
        cas,
    }
}

fn intentions_entry_set(name: &str, sources: &str, cas: Option<u64>) -> Command {
    let json = format!(r#"{{"Kind":"service-intentions","Name":"{name}","Sources":{sources}}}"#);
    Command::ConfigEntrySet {
        entry: ConfigEntry::from_json(json.as_bytes()).expect("valid entry"),
        cas,
    }
}

fn entry_delete(kind: ConfigKind, name: &str, cas: Option<u64>) -> Command {
    Command::ConfigEntryDelete {
        kind,
        name: name.to_string(),
        cas,
    }
}

fn protocol_of(state: &State, name: &str) -> Option<Protocol> {
    match state.config_entry(ConfigKind::ServiceDefaults, name)? {
        ConfigEntry::ServiceDefaults(d) => Some(d.protocol()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn service_defaults_set_cas_and_delete() {
    let mut s = State::default();
    apply_ok(&mut s, 5, defaults_set("api", "http", Some(0)));
    assert_eq!(protocol_of(&s, "api"), Some(Protocol::Http));
    assert_eq!(s.config_index(ConfigKind::ServiceDefaults), 5);
    // cas 0 on an existing entry, and a stale cas, fail and change nothing.
    let e = apply_rejected(&mut s, 6, defaults_set("api", "grpc", Some(0)));
    assert!(matches!(e, ApplyError::Conflict(_)), "{e:?}");
    let e = apply_rejected(&mut s, 7, defaults_set("api", "grpc", Some(4)));
    assert!(matches!(e, ApplyError::Conflict(_)), "{e:?}");
    apply_ok(&mut s, 8, defaults_set("api", "grpc", Some(5)));
    let Some(ConfigEntry::ServiceDefaults(d)) = s.config_entry(ConfigKind::ServiceDefaults, "api")
    else {
        panic!()
    };
    assert_eq!((d.create_index, d.modify_index), (5, 8));
    assert_eq!(d.protocol(), Protocol::Grpc);
    // Invalid entries are refused by the FSM too (a command built without from_json).
    let mut bad = d.clone();
    bad.protocol = "udp".into();
    let e = apply_rejected(
        &mut s,
        9,
        Command::ConfigEntrySet {
            entry: ConfigEntry::ServiceDefaults(bad),
            cas: None,
        },
    );
    assert!(
        matches!(e, ApplyError::Invalid(Invalid::ConfigEntry { ref reason }) if reason.contains("udp")),
        "{e:?}"
    );
    // Delete with a stale cas fails; missing-entry delete is a no-op success.
    apply_rejected(
        &mut s,
        10,
        entry_delete(ConfigKind::ServiceDefaults, "api", Some(5)),
    );
    apply_ok(
        &mut s,
        11,
        entry_delete(ConfigKind::ServiceDefaults, "api", Some(8)),
    );
    assert_eq!(protocol_of(&s, "api"), None);
    assert_eq!(s.config_index(ConfigKind::ServiceDefaults), 11);
    apply_noop(
        &mut s,
        12,
        entry_delete(ConfigKind::ServiceDefaults, "api", None),
    );
    assert!(s.config_entries(ConfigKind::ServiceDefaults).is_empty());
}

#[test]
fn mesh_entry_set_cas_and_delete() {
    let mut s = State::default();
    let set = |json: &str, cas| Command::ConfigEntrySet {
        entry: ConfigEntry::from_json(json.as_bytes()).expect("valid entry"),
        cas,
    };
    let merge =
        r#"{"Kind":"mesh","HTTP":{"Incoming":{"RequestNormalization":{"MergeSlashes":true}}}}"#;
    apply_ok(&mut s, 3, set(merge, Some(0)));
    let Some(ConfigEntry::Mesh(m)) = s.config_entry(ConfigKind::Mesh, "mesh") else {
        panic!()
    };
    assert!(m.request_normalization().merge_slashes);
    assert_eq!((m.create_index, m.modify_index), (3, 3));
    assert_eq!(s.config_index(ConfigKind::Mesh), 3);
    assert!(s.config_entry(ConfigKind::Mesh, "other").is_none());
    apply_rejected(&mut s, 4, set(r#"{"Kind":"mesh"}"#, Some(2)));
    apply_ok(&mut s, 5, set(r#"{"Kind":"mesh"}"#, Some(3)));
    let Some(ConfigEntry::Mesh(m)) = s.config_entry(ConfigKind::Mesh, "mesh") else {
        panic!()
    };
    assert_eq!((m.create_index, m.modify_index), (3, 5));
    assert_eq!(s.config_entries(ConfigKind::Mesh).len(), 1);
    apply_ok(&mut s, 6, entry_delete(ConfigKind::Mesh, "mesh", None));
    assert!(s.config_entries(ConfigKind::Mesh).is_empty());
    assert_eq!(s.config_index(ConfigKind::Mesh), 6);
}

#[test]
fn service_intentions_entry_replaces_its_destination_atomically() {
    let mut s = State::default();
    apply_ok(
        &mut s,
        3,
        upsert(intention("web", "api", IntentionAction::Allow), false),
    );
    apply_ok(
        &mut s,
        4,
        upsert(intention("old", "api", IntentionAction::Allow), false),
    );
    apply_ok(
        &mut s,
        5,
        upsert(intention("web", "db", IntentionAction::Allow), false),
    );
    // The legacy intentions already form an entry.
    let Some(ConfigEntry::ServiceIntentions(e)) =
        s.config_entry(ConfigKind::ServiceIntentions, "api")
    else {
        panic!()
    };
    assert_eq!(e.sources.len(), 2);
    assert_eq!((e.create_index, e.modify_index), (3, 4));

    apply_ok(
        &mut s,
        6,
        intentions_entry_set(
            "api",
            r#"[{"Name":"web","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"/admin"}}]},
                {"Name":"*","Action":"deny"}]"#,
            Some(4),
        ),
    );
    let api: Vec<&Intention> = s
        .intentions
        .values()
        .filter(|i| i.destination_name == "api")
        .collect();
    assert_eq!(api.len(), 2, "`old` was removed, `*` added: {api:?}");
    let web = api.iter().find(|i| i.source_name == "web").unwrap();
    assert_eq!(web.create_index, 3, "same source keeps its create index");
    assert_eq!(web.modify_index, 6);
    assert_eq!(web.action, None);
    assert_eq!(web.permissions.len(), 1);
    assert_eq!(web.precedence, 9);
    // Other destinations are untouched.
    assert!(s.intentions.values().any(|i| i.destination_name == "db"));
    assert_eq!(s.tables.intentions, 6);

    // The L4 view keeps denying the L7 intention (Consul), the wildcard applies to others.
    let set = intentions::IntentionSet::new(s.intentions.values().cloned(), DefaultPolicy::Allow);
    assert!(!set.decide("web", "api").allowed);
    assert!(!set.decide("other", "api").allowed);

    // A legacy write to the destination shows up in the entry and moves its ModifyIndex, so a
    // cas with the entry's old index now fails.
    apply_ok(
        &mut s,
        7,
        upsert(intention("ops", "api", IntentionAction::Allow), false),
    );
    let Some(ConfigEntry::ServiceIntentions(e)) =
        s.config_entry(ConfigKind::ServiceIntentions, "api")
    else {
        panic!()
    };
    assert_eq!(e.modify_index, 7);
    assert_eq!(e.create_index, 3);
    assert_eq!(e.sources.len(), 3);
    let err = apply_rejected(&mut s, 8, intentions_entry_set("api", "[]", Some(6)));
    assert!(matches!(err, ApplyError::Conflict(_)), "{err:?}");

    // A bad source rejects the whole entry, nothing changes.
    let bad = ConfigEntry::ServiceIntentions(crate::config_entries::ServiceIntentions {
        sources: vec![crate::config_entries::SourceIntention {
            action: None,
            ..e.sources[0].clone()
        }],
        ..e.clone()
    });
    let err = apply_rejected(
        &mut s,
        9,
        Command::ConfigEntrySet {
            entry: bad,
            cas: None,
        },
    );
    assert!(
        matches!(err, ApplyError::Invalid(Invalid::ConfigEntry { ref reason }) if reason.starts_with("Sources[0]")),
        "{err:?}"
    );

    // Deleting the entry removes every intention of the destination and nothing else.
    apply_ok(
        &mut s,
        10,
        entry_delete(ConfigKind::ServiceIntentions, "api", None),
    );
    assert!(
        s.config_entry(ConfigKind::ServiceIntentions, "api")
            .is_none()
    );
    assert!(!s.intentions.values().any(|i| i.destination_name == "api"));
    assert_eq!(
        s.config_entries(ConfigKind::ServiceIntentions).len(),
        1,
        "db remains"
    );

    // Legacy delete of the last source removes the entry too.
    apply_ok(&mut s, 11, delete_intention("web", "db"));
    assert!(s.config_entries(ConfigKind::ServiceIntentions).is_empty());
    assert!(s.intention_entries.is_empty());
}

#[test]
fn empty_intentions_entry_exists_until_deleted() {
    let mut s = State::default();
    apply_ok(&mut s, 2, intentions_entry_set("api", "[]", Some(0)));
    let Some(ConfigEntry::ServiceIntentions(e)) =
        s.config_entry(ConfigKind::ServiceIntentions, "api")
    else {
        panic!()
    };
    assert!(e.sources.is_empty());
    assert_eq!(e.modify_index, 2);
    apply_ok(
        &mut s,
        3,
        entry_delete(ConfigKind::ServiceIntentions, "api", Some(2)),
    );
    assert!(
        s.config_entry(ConfigKind::ServiceIntentions, "api")
            .is_none()
    );
}
