//! Unit tests of the state machine, one module per table as the FSM itself is split: catalog
//! (with the health views), intentions, CA rotation and pruning, config entries, ACLs, and the
//! determinism that Raft replication and snapshots rely on.
//!
//! This module holds what they share: builders of the commands and records the tests write
//! (defaults everywhere but the names a test is about) and the `apply_*` assertions. Every
//! rejected command is checked to leave the state exactly as it was apart from `last_index` (a
//! rejected entry is still applied, so Raft's applied index moves on).

mod acl;
mod ca;
mod catalog;
mod config_entries;
mod indexes;
mod intentions;
mod replication;
mod secret;

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::*;
use crate::ca::{BuiltinProvider, CaProvider, StoredRoot};
use crate::config_entries::{ConfigEntry, ConfigKind};
use crate::intentions::intention_between;
use crate::model::{
    CaConfig, HealthCheck, HealthStatus, Intention, IntentionAction, Node, ProxyConfig,
    ServiceConnect, ServiceInstance,
};

const CLUSTER_ID: &str = "11111111-2222-3333-4444-555555555555";
const TD: &str = "11111111-2222-3333-4444-555555555555.consul";
/// A fixed "now" for CA commands (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000;
const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// Catalog records and commands
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

/// Node `n` (default address) registering `service`, if any, with `checks`.
fn register(
    n: &str,
    service: impl Into<Option<ServiceInstance>>,
    checks: impl IntoIterator<Item = HealthCheck>,
) -> Command {
    Command::Register {
        node: node(n),
        service: service.into(),
        checks: checks.into_iter().collect(),
    }
}

fn deregister(n: &str, service_id: Option<&str>, check_id: Option<&str>) -> Command {
    Command::Deregister {
        node: n.to_string(),
        service_id: service_id.map(str::to_string),
        check_id: check_id.map(str::to_string),
    }
}

fn update_check(n: &str, check_id: &str, status: HealthStatus, output: &str) -> Command {
    Command::UpdateCheck {
        node: n.to_string(),
        check_id: check_id.to_string(),
        status,
        output: output.to_string(),
    }
}

fn set_node_health(n: &str, status: HealthStatus, output: &str) -> Command {
    Command::SetNodeHealth {
        node: n.to_string(),
        status,
        output: output.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Intentions
// ---------------------------------------------------------------------------------------------

/// The L4 intention `src => dst` in the default namespace.
fn intention(src: &str, dst: &str, action: IntentionAction) -> Intention {
    Intention {
        action: Some(action),
        ..intention_between(src, dst)
    }
}

fn upsert(i: Intention, replace: bool) -> Command {
    Command::IntentionUpsert {
        intention: i,
        replace,
    }
}

/// Creates the L4 intention `src => dst` (an existing one for the pair is a conflict).
fn create(src: &str, dst: &str, action: IntentionAction) -> Command {
    upsert(intention(src, dst, action), false)
}

fn delete_intention(src: &str, dst: &str) -> Command {
    Command::IntentionDelete {
        source_ns: "default".to_string(),
        source: src.to_string(),
        destination_ns: "default".to_string(),
        destination: dst.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// CA
// ---------------------------------------------------------------------------------------------

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

fn prune_roots(now_unix: i64) -> Command {
    Command::CaPruneRoots { now_unix }
}

// ---------------------------------------------------------------------------------------------
// Config entries
// ---------------------------------------------------------------------------------------------

/// Sets the entry `json` decodes to (a valid one).
fn entry_set(json: &str, cas: Option<u64>) -> Command {
    Command::ConfigEntrySet {
        entry: ConfigEntry::from_json(json.as_bytes()).expect("valid entry"),
        cas,
    }
}

fn defaults_set(name: &str, protocol: &str, cas: Option<u64>) -> Command {
    entry_set(
        &format!(r#"{{"Kind":"service-defaults","Name":"{name}","Protocol":"{protocol}"}}"#),
        cas,
    )
}

fn intentions_entry_set(name: &str, sources: &str, cas: Option<u64>) -> Command {
    entry_set(
        &format!(r#"{{"Kind":"service-intentions","Name":"{name}","Sources":{sources}}}"#),
        cas,
    )
}

// ---------------------------------------------------------------------------------------------
// ACLs
// ---------------------------------------------------------------------------------------------

/// A fixed "now" for ACL commands, RFC 3339 (the proposer's clock).
const ACL_NOW: &str = "2023-11-14T22:13:20Z";

/// A UUID made of `n` (tests need distinct, valid IDs).
fn uuid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// Links by ID.
fn links(ids: &[&str]) -> Vec<crate::acl::AclLink> {
    ids.iter()
        .map(|id| crate::acl::AclLink {
            id: id.to_string(),
            name: String::new(),
        })
        .collect()
}

/// Token `n` (accessor `uuid(n)`, secret `uuid(n + 1000)`) linking `policies` by ID.
fn acl_token(n: u32, policies: &[&str]) -> crate::acl::AclToken {
    crate::acl::AclToken {
        accessor_id: uuid(n),
        secret_id: uuid(n + 1000),
        description: format!("token {n}"),
        policies: links(policies),
        create_time: ACL_NOW.to_string(),
        ..Default::default()
    }
}

fn acl_policy(id: &str, name: &str, rules: &str) -> crate::acl::AclPolicy {
    crate::acl::AclPolicy {
        id: id.to_string(),
        name: name.to_string(),
        rules: rules.to_string(),
        ..Default::default()
    }
}

fn acl_role(id: &str, name: &str, policies: &[&str]) -> crate::acl::AclRole {
    crate::acl::AclRole {
        id: id.to_string(),
        name: name.to_string(),
        policies: links(policies),
        ..Default::default()
    }
}

fn acl_bootstrap(token: crate::acl::AclToken) -> Command {
    Command::AclBootstrap {
        token,
        now: ACL_NOW.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Applying, and what it must have done
// ---------------------------------------------------------------------------------------------

/// Applies `cmd` and asserts it succeeded.
#[track_caller]
fn apply_ok(state: &mut State, index: u64, cmd: Command) {
    let last_index = state.last_index.max(index);
    let result = state.apply(index, cmd);
    assert_eq!(result, ApplyResult { index, error: None });
    assert_eq!(state.last_index, last_index);
}

/// Applies `cmds` at `first`, `first + 1`, … and asserts each succeeded.
#[track_caller]
fn apply_all_ok(state: &mut State, first: u64, cmds: impl IntoIterator<Item = Command>) {
    for (index, cmd) in (first..).zip(cmds) {
        apply_ok(state, index, cmd);
    }
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
fn apply_err(state: &mut State, index: u64, cmd: Command) -> ApplyError {
    let expected = only_index_moved(state, index);
    let result = state.apply(index, cmd);
    assert_eq!(result.index, index);
    let error = result.error.expect("command should have been rejected");
    assert_eq!(*state, expected, "rejected command changed the state");
    assert_eq!(state.digest(), expected.digest());
    error
}

/// [`apply_err`], and asserts the error matches `$kind` (e.g. `ApplyError::NotFound(_)`).
macro_rules! assert_rejected {
    ($state:expr, $index:expr, $cmd:expr, $kind:pat) => {{
        let err = apply_err($state, $index, $cmd);
        assert!(matches!(err, $kind), "{err:?}");
        err
    }};
}
use assert_rejected;

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
