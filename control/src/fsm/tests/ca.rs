//! The CA table: initialization, rotation (with its conflicts and the prune deadline it sets),
//! configuration and the leaf TTL, and pruning of rotated-out roots.

use std::time::Duration;

use super::*;

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
    let cmd = ca_rotate("not-the-active-id", &old, &new, NOW);
    assert_rejected!(&mut state, 2, cmd, ApplyError::Conflict(_));
    assert_eq!(active_ids(&state), [old.root.id.as_str()]);
    assert!(state.ca.prune_after.is_empty());
}

#[test]
fn ca_rotate_with_already_present_root_is_conflict() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    let cmd = ca_rotate(&old.root.id, &old, &old, NOW);
    assert_rejected!(&mut state, 2, cmd, ApplyError::Conflict(_));
}

#[test]
fn ca_rotate_before_initialize_is_rejected() {
    let old = new_root(1);
    let new = new_root(2);
    let mut state = State::default();
    let cmd = ca_rotate(&old.root.id, &old, &new, NOW);
    assert_rejected!(&mut state, 1, cmd, ApplyError::Invalid(_));
}

#[test]
fn ca_rotate_switches_active_root_and_schedules_pruning() {
    let old = new_root(1);
    let mut state = ca_state(&old, None);
    let new = new_root(2);
    let cross = cross_sign(&old, &new);
    let rotate = Command::CaRotate {
        expected_active: old.root.id.clone(),
        new_root: Box::new(new.clone()),
        cross_signed_pem: cross.clone(),
        config: None,
        now_unix: NOW,
    };
    apply_ok(&mut state, 5, rotate);

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
    let stale = ca_rotate(&old.root.id, &new, &newer, NOW);
    assert_rejected!(&mut state, 6, stale, ApplyError::Conflict(_));
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
    let mut rotate = ca_rotate(&old.root.id, &old, &new, NOW);
    if let Command::CaRotate { config, .. } = &mut rotate {
        *config = Some(ca_config(Some("24h")));
    }
    apply_ok(&mut state, 4, rotate);
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
    let two_hours = Command::CaSetConfig {
        config: ca_config(Some("2h")),
    };
    apply_ok(&mut state, 3, two_hours);
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
    apply_noop(&mut state, 3, prune_roots(NOW));
    apply_noop(&mut state, 4, prune_roots(NOW + HOUR));
    assert_eq!(state.ca.roots.len(), 2);
    assert_eq!(state.tables.roots, 2);

    apply_ok(&mut state, 5, prune_roots(NOW + HOUR + 1));
    assert_eq!(state.ca.roots.len(), 1);
    assert_eq!(active_ids(&state), [new.root.id.as_str()]);
    assert!(state.ca.prune_after.is_empty());
    assert_eq!(state.tables.roots, 5);

    // The active root is never pruned, however late.
    apply_noop(&mut state, 6, prune_roots(i64::MAX));
    assert_eq!(active_ids(&state), [new.root.id.as_str()]);
}

#[test]
fn ca_prune_roots_never_removes_active_root_even_if_scheduled() {
    // Rotate A -> B -> A': B gets a prune deadline, and so does A. Only inactive roots go.
    let a = new_root(1);
    let mut state = ca_state(&a, Some("1h"));
    let b = new_root(2);
    let c = new_root(3);
    apply_all_ok(
        &mut state,
        2,
        [
            ca_rotate(&a.root.id, &a, &b, NOW),
            ca_rotate(&b.root.id, &b, &c, NOW + 10 * HOUR),
        ],
    );
    assert_eq!(active_ids(&state), [c.root.id.as_str()]);
    assert_eq!(state.ca.prune_after.len(), 2);

    // Only A has expired.
    apply_ok(&mut state, 4, prune_roots(NOW + 2 * HOUR));
    let ids: Vec<&str> = state.ca.roots.iter().map(|r| r.root.id.as_str()).collect();
    assert_eq!(ids, [b.root.id.as_str(), c.root.id.as_str()]);
    assert_eq!(
        state.ca.prune_after,
        BTreeMap::from([(b.root.id.clone(), NOW + 11 * HOUR)])
    );

    apply_ok(&mut state, 5, prune_roots(i64::MAX));
    assert_eq!(state.ca.roots.len(), 1);
    assert_eq!(active_ids(&state), [c.root.id.as_str()]);
    assert_eq!(state.ca.next_serial, 4);
}

#[test]
fn ca_prune_roots_without_ca_is_a_noop() {
    let mut state = State::default();
    apply_noop(&mut state, 1, prune_roots(NOW));
}
