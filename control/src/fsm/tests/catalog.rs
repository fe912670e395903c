//! The catalog table: registration and its indexes, deregistration, and the health views built
//! from node and instance checks.

use super::*;
use HealthStatus::{Critical, Passing, Warning};

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
    let web_checks = [
        check("serf", "", Passing),
        check("web-check", "web", Passing),
    ];
    let proxy_check = check("web-proxy-check", "web-sidecar-proxy", Passing);
    apply_all_ok(
        &mut state,
        10,
        [
            register("n1", service("web", "web"), web_checks),
            register("n1", sidecar("web-sidecar-proxy", "web"), [proxy_check]),
        ],
    );
    state
}

/// A state with only node `n1` holding `web-1` (and `checks`), registered at index 5.
fn web_1(checks: impl IntoIterator<Item = HealthCheck>) -> State {
    let mut state = State::default();
    apply_ok(
        &mut state,
        5,
        register("n1", service("web-1", "web"), checks),
    );
    state
}

// ---------------------------------------------------------------------------------------------
// Registration and indexes
// ---------------------------------------------------------------------------------------------

#[test]
fn register_sets_create_and_modify_indexes_and_table_indexes() {
    let state = web_1([check("web-check", "web-1", Warning)]);

    let n = &state.nodes["n1"];
    assert_eq!((n.create_index, n.modify_index), (5, 5));
    let s = svc(&state, "n1", "web-1");
    assert_eq!((s.create_index, s.modify_index), (5, 5));
    assert_eq!(s.node, "n1", "the instance is stamped with its node");
    let c = chk(&state, "n1", "web-check");
    assert_eq!((c.create_index, c.modify_index), (5, 5));
    assert_eq!(c.node, "n1");
    assert_eq!(c.status, Warning);
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
    apply_ok(&mut state, 1, register("n1", service("", "web"), []));
    assert_eq!(svc(&state, "n1", "web").service, "web");
    assert_eq!(svc(&state, "n1", "web").id, "web");
}

#[test]
fn register_check_for_service_whose_id_defaults_to_its_name() {
    // Consul defaults `ID` to `Service` before checking what the checks refer to, so a check
    // naming the service by its (defaulted) ID in the same registration is accepted.
    let mut state = State::default();
    let web_check = check("web-check", "web", Critical);
    apply_ok(
        &mut state,
        1,
        register("n1", service("", "web"), [web_check]),
    );
    assert_eq!(chk(&state, "n1", "web-check").service_id, "web");
    let health = state.service_health("web", false);
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].status(), Critical);
}

#[test]
fn reregistering_identical_service_bumps_nothing() {
    let mut state = web_1([check("web-check", "web-1", Passing)]);
    let again = register(
        "n1",
        service("web-1", "web"),
        [check("web-check", "web-1", Passing)],
    );
    apply_noop(&mut state, 9, again);
    assert_eq!(svc(&state, "n1", "web-1").modify_index, 5);
    assert_eq!(state.tables.services, 5);
    assert_eq!(state.tables.checks, 5);
    assert_eq!(state.tables.nodes, 5);
}

#[test]
fn reregistering_with_stale_indexes_in_the_request_is_still_identical() {
    // Clients echo back what they read, indexes included; those are not a change.
    let mut state = web_1([]);
    let mut echoed = svc(&state, "n1", "web-1").clone();
    echoed.create_index = 1;
    echoed.modify_index = 2;
    apply_noop(&mut state, 6, register("n1", echoed, []));
}

#[test]
fn changed_service_bumps_modify_index_and_keeps_create_index() {
    let mut state = web_1([]);
    let mut changed = service("web-1", "web");
    changed.port = 9090;
    changed.tags = vec!["v2".to_string()];
    apply_ok(&mut state, 8, register("n1", changed, []));

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
    let mut state = web_1([]);
    let moved = Node {
        address: "10.0.0.2".to_string(),
        ..node("n1")
    };
    let register_moved = Command::Register {
        node: moved,
        service: None,
        checks: vec![],
    };
    apply_ok(&mut state, 7, register_moved);
    let n = &state.nodes["n1"];
    assert_eq!((n.create_index, n.modify_index), (5, 7));
    assert_eq!(n.address, "10.0.0.2");
    assert_eq!(state.tables.nodes, 7);
    assert_eq!(state.tables.services, 5);
    assert_eq!(svc(&state, "n1", "web-1").modify_index, 5);
}

#[test]
fn changed_check_bumps_its_modify_index_and_checks_table() {
    let mut state = web_1([check("web-check", "web-1", Passing)]);
    let critical = check("web-check", "web-1", Critical);
    apply_ok(&mut state, 6, register("n1", None, [critical]));
    let c = chk(&state, "n1", "web-check");
    assert_eq!((c.create_index, c.modify_index), (5, 6));
    assert_eq!(state.tables.checks, 6);
    assert_eq!(state.tables.services, 5);
}

#[test]
fn invalid_registrations_are_rejected_and_change_nothing() {
    let mut state = catalog();
    let proxy_without_proxy = ServiceInstance {
        kind: "connect-proxy".to_string(),
        ..service("p", "p")
    };
    let proxy_without_destination = ServiceInstance {
        proxy: Some(ProxyConfig::default()),
        ..sidecar("p", "web")
    };
    let cases = [
        ("empty node name", register("", service("x", "x"), [])),
        ("empty service name", register("n1", service("x", ""), [])),
        (
            "connect-proxy without Proxy",
            register("n1", proxy_without_proxy, []),
        ),
        (
            "connect-proxy without destination",
            register("n1", proxy_without_destination, []),
        ),
        (
            "check for unknown service",
            register("n1", None, [check("c", "no-such-service", Passing)]),
        ),
        (
            "check for a service on another node",
            register("n2", None, [check("c", "web", Passing)]),
        ),
        (
            "check without ID",
            register("n1", None, [check("", "", Passing)]),
        ),
        (
            // The valid service must not be half-applied when a check is invalid.
            "valid service, invalid check",
            register("n3", service("api", "api"), [check("c", "web", Passing)]),
        ),
    ];
    for (i, (what, cmd)) in cases.into_iter().enumerate() {
        let index = 100 + i as u64;
        let err = apply_err(&mut state, index, cmd);
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
// Deregistration
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
    apply_all_ok(
        &mut state,
        1,
        [
            register("n1", service("a", "a"), [check("serf", "", Passing)]),
            register("n1", service("b", "b"), []),
            deregister("n1", Some("b"), None),
        ],
    );
    assert_eq!(state.tables.services, 3);
    assert_eq!(state.tables.checks, 1);
}

#[test]
fn deregister_unknown_service_or_check_is_not_found_and_changes_nothing() {
    let mut state = catalog();
    let unknown_service = deregister("n1", Some("nope"), None);
    let err = assert_rejected!(&mut state, 20, unknown_service, ApplyError::NotFound(_));
    assert_eq!(err.http_status(), 404);
    let unknown_check = deregister("n1", None, Some("nope"));
    assert_rejected!(&mut state, 21, unknown_check, ApplyError::NotFound(_));
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
    apply_ok(&mut state, 2, register("n2", service("db", "db"), []));
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
// Node sync (one anti-entropy pass as one entry)
// ---------------------------------------------------------------------------------------------

fn sync(n: &str, ops: impl IntoIterator<Item = Command>) -> Command {
    Command::SyncNode {
        node: n.into(),
        ops: ops.into_iter().collect(),
    }
}

#[test]
fn a_node_sync_applies_its_writes_in_order_at_one_index() {
    let mut state = catalog();
    apply_ok(
        &mut state,
        20,
        sync(
            "n1",
            [
                register(
                    "n1",
                    service("api", "api"),
                    [check("api-check", "api", Passing)],
                ),
                update_check("n1", "web-check", Critical, "down"),
                deregister("n1", Some("web-sidecar-proxy"), None),
                deregister("n1", None, Some("serf")),
            ],
        ),
    );
    assert_eq!(svc(&state, "n1", "api").create_index, 20);
    assert_eq!(chk(&state, "n1", "api-check").create_index, 20);
    assert_eq!(chk(&state, "n1", "web-check").status, Critical);
    assert!(!state.services["n1"].contains_key("web-sidecar-proxy"));
    assert!(!state.checks["n1"].contains_key("web-proxy-check"));
    assert!(!state.checks["n1"].contains_key("serf"));
    assert_eq!(
        (state.tables.services, state.tables.checks),
        (20, 20),
        "one entry: every table it touched moves to its index"
    );
}

#[test]
fn a_node_sync_with_a_failing_write_changes_nothing() {
    let mut state = catalog();
    // The first two writes would succeed; the third names a check the node does not have.
    let e = apply_err(
        &mut state,
        20,
        sync(
            "n1",
            [
                register("n1", service("api", "api"), []),
                deregister("n1", Some("web"), None),
                update_check("n1", "no-such-check", Critical, ""),
            ],
        ),
    );
    assert!(matches!(e, ApplyError::NotFound(_)), "{e:?}");
    // A sync of a node the catalog does not know yet, failing: the node is not left behind.
    let e = apply_err(
        &mut state,
        21,
        sync(
            "n2",
            [
                register("n2", service("db", "db"), []),
                update_check("n2", "missing", Passing, ""),
            ],
        ),
    );
    assert!(matches!(e, ApplyError::NotFound(_)), "{e:?}");
}

#[test]
fn a_node_sync_refuses_writes_to_other_nodes_and_other_commands() {
    let mut state = catalog();
    for op in [
        register("n2", service("api", "api"), []),
        deregister("n2", Some("web"), None),
        update_check("n2", "serf", Critical, ""),
        deregister("n1", None, None),
        set_node_health("n1", Critical, ""),
        sync("n1", []),
    ] {
        let name = op.op();
        let e = apply_err(&mut state, 20, sync("n1", [op]));
        assert!(
            matches!(e, ApplyError::Invalid(Invalid::SyncOp { .. })),
            "{name}: {e:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

#[test]
fn service_health_connect_returns_sidecars_and_native_instances_only() {
    let mut state = catalog();
    let native = ServiceInstance {
        connect: ServiceConnect { native: true },
        ..service("web-native", "web")
    };
    apply_all_ok(
        &mut state,
        12,
        [
            // A connect-native instance of web on n2, and a plain instance of db on n2.
            register("n2", native, []),
            register("n2", service("db", "db"), []),
            // A sidecar for db must not show up for web.
            register("n2", sidecar("db-sidecar-proxy", "db"), []),
        ],
    );

    let ids = |v: Vec<crate::wire::ServiceHealth>| -> Vec<String> {
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
        apply_all_ok(
            &mut state,
            1,
            [
                register("n1", service("other", "other"), []),
                register("n1", service("web", "web"), checks),
            ],
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
    let refused = update_check("n1", "web-check", Critical, "connection refused");
    apply_ok(&mut state, 20, refused.clone());
    let c = chk(&state, "n1", "web-check");
    assert_eq!(c.status, Critical);
    assert_eq!(c.output, "connection refused");
    assert_eq!((c.create_index, c.modify_index), (10, 20));
    assert_eq!(state.tables.checks, 20);
    assert_eq!(state.health_index(), 20);
    assert_eq!(state.service_health("web", false)[0].status(), Critical);
    // The proxy does not carry web's check.
    assert_eq!(state.service_health("web", true)[0].status(), Passing);

    // Same status and output again: nothing changes.
    apply_noop(&mut state, 21, refused);
}

#[test]
fn update_unknown_check_is_not_found() {
    let mut state = catalog();
    for (n, c) in [("n1", "nope"), ("ghost", "serf")] {
        let cmd = update_check(n, c, Critical, "");
        assert_rejected!(&mut state, 20, cmd, ApplyError::NotFound(_));
    }
}

#[test]
fn set_node_health_marks_every_check_of_the_node() {
    let mut state = catalog();
    let db_check = check("db-check", "db", Passing);
    apply_ok(
        &mut state,
        2,
        register("n2", service("db", "db"), [db_check]),
    );
    let down = set_node_health("n1", Critical, "agent not responding");
    apply_ok(&mut state, 20, down);
    for c in state.checks["n1"].values() {
        assert_eq!(c.status, Critical, "{}", c.check_id);
        assert_eq!(c.output, "agent not responding");
        assert_eq!(c.modify_index, 20);
    }
    assert_eq!(chk(&state, "n2", "db-check").status, Passing);
    assert_eq!(chk(&state, "n2", "db-check").modify_index, 2);
    assert_eq!(state.tables.checks, 20);
    for h in state
        .service_health("web", false)
        .into_iter()
        .chain(state.service_health("web", true))
    {
        assert_eq!(h.status(), Critical);
    }

    // Already critical everywhere: no change, no index bump.
    let still_down = set_node_health("n1", Critical, "still not responding");
    apply_noop(&mut state, 21, still_down);
}

#[test]
fn set_node_health_of_node_without_checks_changes_nothing() {
    let mut state = State::default();
    apply_ok(&mut state, 1, register("n1", service("web", "web"), []));
    apply_noop(&mut state, 2, set_node_health("n1", Critical, ""));
    // And deregistering the node then does not report a checks change it never had.
    apply_ok(&mut state, 3, deregister("n1", None, None));
    assert_eq!(state.tables.checks, 0);
}

#[test]
fn set_node_health_of_unknown_node_is_not_found() {
    let mut state = catalog();
    let cmd = set_node_health("ghost", Critical, "");
    assert_rejected!(&mut state, 20, cmd, ApplyError::NotFound(_));
}
