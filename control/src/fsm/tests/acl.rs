//! The ACL tables: bootstrap once (with seeding), token/policy/role upserts under Consul's
//! rules (unique names and secrets, links to existing objects, stored by ID and named at read
//! time), the built-ins that cannot be renamed or deleted, and snapshots of it all.

use super::*;
use crate::acl::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, AclLink, GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME, global_management_policy,
};

const READ_ALL: &str = r#"service_prefix "" { policy = "read" }"#;

/// A bootstrapped state (at index 1) with the bootstrap token `uuid(1)`.
/// The command that writes `acl_policy(id, name, rules)`.
fn policy_set(id: &str, name: &str, rules: &str) -> Command {
    Command::AclPolicySet {
        policy: acl_policy(id, name, rules),
    }
}

fn bootstrapped() -> State {
    let mut state = State::default();
    apply_ok(
        &mut state,
        1,
        acl_bootstrap(acl_token(1, &[GLOBAL_MANAGEMENT_POLICY_ID])),
    );
    state
}

#[test]
fn bootstrap_seeds_builtins_and_stores_the_token() {
    let state = bootstrapped();
    assert!(state.acl.is_bootstrapped());
    assert_eq!(state.acl.bootstrap_index, 1);
    assert_eq!(state.tables.acl, 1);

    let gm = &state.acl.policies[GLOBAL_MANAGEMENT_POLICY_ID];
    assert_eq!(gm.name, GLOBAL_MANAGEMENT_POLICY_NAME);
    assert_eq!(gm.rules, global_management_policy().rules);
    assert_eq!((gm.create_index, gm.modify_index), (1, 1));

    let anon = &state.acl.tokens[ANONYMOUS_TOKEN_ACCESSOR_ID];
    assert_eq!(anon.secret_id, "anonymous");
    assert!(anon.policies.is_empty());

    let token = &state.acl.tokens[&uuid(1)];
    assert_eq!(token.create_time, ACL_NOW);
    assert_eq!(state.acl.secrets[&uuid(1001)], uuid(1));
    // Stored by ID; the name comes back at read time.
    assert_eq!(token.policies[0].name, "");
    assert_eq!(
        state.acl.token_view(token).policies,
        [AclLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
        }]
    );
}

#[test]
fn second_bootstrap_is_refused_with_the_reset_index() {
    let mut state = bootstrapped();
    let err = assert_rejected!(
        &mut state,
        5,
        acl_bootstrap(acl_token(2, &[GLOBAL_MANAGEMENT_POLICY_ID])),
        ApplyError::Conflict(Conflict::AclBootstrapped { reset_index: 1 })
    );
    assert_eq!(
        err.to_string(),
        "ACL bootstrap no longer allowed (reset index: 1)"
    );
}

#[test]
fn a_failed_bootstrap_seeds_nothing() {
    let mut state = State::default();
    let mut bad = acl_token(1, &[GLOBAL_MANAGEMENT_POLICY_ID]);
    bad.secret_id = "not-a-uuid".into();
    assert_rejected!(
        &mut state,
        1,
        acl_bootstrap(bad),
        ApplyError::Invalid(Invalid::Acl { .. })
    );
    assert!(state.acl.is_empty());
}

#[test]
fn token_links_resolve_by_name_and_unknown_links_are_refused() {
    let mut state = bootstrapped();
    apply_ok(&mut state, 2, policy_set(&uuid(50), "readers", READ_ALL));
    let mut t = acl_token(2, &[]);
    t.policies = vec![AclLink {
        id: String::new(),
        name: "readers".into(),
    }];
    apply_ok(&mut state, 3, Command::AclTokenSet { token: t });
    assert_eq!(state.acl.tokens[&uuid(2)].policies, links(&[&uuid(50)]));

    let err = assert_rejected!(
        &mut state,
        4,
        Command::AclTokenSet {
            token: acl_token(3, &[&uuid(99)]),
        },
        ApplyError::Invalid(Invalid::AclUnknownPolicyId { .. })
    );
    assert_eq!(err.http_status(), 400);
    let mut by_name = acl_token(3, &[]);
    by_name.roles = vec![AclLink {
        id: String::new(),
        name: "nope".into(),
    }];
    assert_rejected!(
        &mut state,
        5,
        Command::AclTokenSet { token: by_name },
        ApplyError::Invalid(Invalid::AclUnknownRoleName { .. })
    );
}

#[test]
fn rename_shows_in_links_and_deleted_policy_drops_out() {
    let mut state = bootstrapped();
    apply_all_ok(
        &mut state,
        2,
        [
            policy_set(&uuid(50), "readers", READ_ALL),
            Command::AclTokenSet {
                token: acl_token(2, &[&uuid(50)]),
            },
            policy_set(&uuid(50), "viewers", READ_ALL),
        ],
    );
    let view = state.acl.token_view(&state.acl.tokens[&uuid(2)]);
    assert_eq!(view.policies[0].name, "viewers");
    let p = &state.acl.policies[&uuid(50)];
    assert_eq!((p.create_index, p.modify_index), (2, 4));

    apply_ok(&mut state, 5, Command::AclPolicyDelete { id: uuid(50) });
    let view = state.acl.token_view(&state.acl.tokens[&uuid(2)]);
    assert!(view.policies.is_empty());
}

#[test]
fn policy_names_are_unique_and_rules_validated() {
    let mut state = bootstrapped();
    apply_ok(&mut state, 2, policy_set(&uuid(50), "readers", READ_ALL));
    let err = assert_rejected!(
        &mut state,
        3,
        policy_set(&uuid(51), "readers", READ_ALL),
        ApplyError::Invalid(Invalid::AclPolicyNameTaken { .. })
    );
    assert_eq!(
        err.to_string(),
        r#"Invalid Policy: A Policy with Name "readers" already exists"#
    );
    let err = assert_rejected!(
        &mut state,
        4,
        policy_set(&uuid(52), "bad", "service \"db\" {\n  polcy = \"read\"\n}"),
        ApplyError::Invalid(Invalid::Acl { .. })
    );
    assert!(err.to_string().contains("polcy"), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn global_management_keeps_name_rules_and_existence() {
    // Reserved before the bootstrap seeds it.
    let mut fresh = State::default();
    assert_rejected!(
        &mut fresh,
        1,
        policy_set(&uuid(50), GLOBAL_MANAGEMENT_POLICY_NAME, READ_ALL),
        ApplyError::Invalid(Invalid::AclPolicyNameTaken { .. })
    );

    let mut state = bootstrapped();
    let renamed = crate::acl::AclPolicy {
        name: "root".into(),
        ..global_management_policy()
    };
    let err = assert_rejected!(
        &mut state,
        2,
        Command::AclPolicySet { policy: renamed },
        ApplyError::Invalid(Invalid::GlobalManagementChange { .. })
    );
    assert_eq!(
        err.to_string(),
        "Changing the Name for the builtin global-management policy is not permitted"
    );
    let narrowed = crate::acl::AclPolicy {
        rules: READ_ALL.into(),
        ..global_management_policy()
    };
    assert_rejected!(
        &mut state,
        3,
        Command::AclPolicySet { policy: narrowed },
        ApplyError::Invalid(Invalid::GlobalManagementChange { .. })
    );
    assert_rejected!(
        &mut state,
        4,
        Command::AclPolicyDelete {
            id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
        },
        ApplyError::Invalid(Invalid::GlobalManagementDelete)
    );
    // The description may change.
    let described = crate::acl::AclPolicy {
        description: "root".into(),
        ..global_management_policy()
    };
    apply_ok(&mut state, 5, Command::AclPolicySet { policy: described });
    assert_eq!(
        state.acl.policies[GLOBAL_MANAGEMENT_POLICY_ID].create_index,
        1
    );
}

#[test]
fn token_update_keeps_secret_create_fields_and_expiration() {
    let mut state = bootstrapped();
    let mut t = acl_token(2, &[]);
    t.expiration_time = Some("2030-01-01T00:00:00Z".into());
    apply_ok(&mut state, 2, Command::AclTokenSet { token: t.clone() });

    let mut update = t.clone();
    update.description = "renamed".into();
    update.expiration_time = None;
    update.create_time = "2099-01-01T00:00:00Z".into();
    apply_ok(&mut state, 3, Command::AclTokenSet { token: update });
    let stored = &state.acl.tokens[&uuid(2)];
    assert_eq!(stored.description, "renamed");
    assert_eq!(
        stored.expiration_time.as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    assert_eq!(stored.create_time, ACL_NOW);
    assert_eq!((stored.create_index, stored.modify_index), (2, 3));

    let mut other_secret = t.clone();
    other_secret.secret_id = uuid(7777);
    assert_rejected!(
        &mut state,
        4,
        Command::AclTokenSet {
            token: other_secret,
        },
        ApplyError::Invalid(Invalid::AclSecretChange)
    );
    let mut later = t.clone();
    later.expiration_time = Some("2031-01-01T00:00:00Z".into());
    assert_rejected!(
        &mut state,
        5,
        Command::AclTokenSet { token: later },
        ApplyError::Invalid(Invalid::AclExpirationChange)
    );
    // A new token may not reuse a secret.
    let mut dup = acl_token(3, &[]);
    dup.secret_id = uuid(1002);
    assert_rejected!(
        &mut state,
        6,
        Command::AclTokenSet { token: dup },
        ApplyError::Invalid(Invalid::AclSecretInUse)
    );
}

#[test]
fn server_generated_fields_must_be_present() {
    let mut state = bootstrapped();
    let mut t = acl_token(2, &[]);
    t.secret_id.clear();
    assert_rejected!(
        &mut state,
        2,
        Command::AclTokenSet { token: t },
        ApplyError::Invalid(Invalid::AclMissingId { .. })
    );
    let mut anonymous = acl_token(4, &[]);
    anonymous.accessor_id = ANONYMOUS_TOKEN_ACCESSOR_ID.into();
    let mut fresh = State::default();
    assert_rejected!(
        &mut fresh,
        1,
        Command::AclTokenSet { token: anonymous },
        ApplyError::Invalid(Invalid::AclAccessorReserved)
    );
    let mut ttl = acl_token(3, &[]);
    ttl.expiration_ttl = Some("1h".into());
    assert_rejected!(
        &mut state,
        3,
        Command::AclTokenSet { token: ttl },
        ApplyError::Invalid(Invalid::AclUnconvertedTtl)
    );
    assert_rejected!(
        &mut state,
        4,
        policy_set("", "readers", READ_ALL),
        ApplyError::Invalid(Invalid::AclMissingId { .. })
    );
}

#[test]
fn token_delete_frees_the_secret_but_not_the_anonymous_token() {
    let mut state = bootstrapped();
    apply_ok(
        &mut state,
        2,
        Command::AclTokenSet {
            token: acl_token(2, &[]),
        },
    );
    apply_ok(
        &mut state,
        3,
        Command::AclTokenDelete {
            accessor_id: uuid(2),
        },
    );
    assert!(!state.acl.tokens.contains_key(&uuid(2)));
    assert!(!state.acl.secrets.contains_key(&uuid(1002)));
    assert_eq!(state.tables.acl, 3);
    let err = assert_rejected!(
        &mut state,
        4,
        Command::AclTokenDelete {
            accessor_id: uuid(2),
        },
        ApplyError::NotFound(NotFound::AclToken { .. })
    );
    assert_eq!(err.to_string(), "Cannot find token to delete");
    assert_rejected!(
        &mut state,
        5,
        Command::AclTokenDelete {
            accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into(),
        },
        ApplyError::Invalid(Invalid::AnonymousTokenDelete)
    );
}

#[test]
fn roles_link_policies_and_have_unique_names() {
    let mut state = bootstrapped();
    apply_all_ok(
        &mut state,
        2,
        [
            policy_set(&uuid(50), "readers", READ_ALL),
            Command::AclRoleSet {
                role: acl_role(&uuid(60), "ops", &[&uuid(50), &uuid(50)]),
            },
        ],
    );
    let role = &state.acl.roles[&uuid(60)];
    assert_eq!(role.policies, links(&[&uuid(50)]), "deduplicated, by ID");
    assert_eq!(state.acl.role_view(role).policies[0].name, "readers");
    assert_rejected!(
        &mut state,
        4,
        Command::AclRoleSet {
            role: acl_role(&uuid(61), "ops", &[]),
        },
        ApplyError::Invalid(Invalid::AclRoleNameTaken { .. })
    );
    assert_rejected!(
        &mut state,
        5,
        Command::AclRoleSet {
            role: acl_role(&uuid(61), "devs", &[&uuid(99)]),
        },
        ApplyError::Invalid(Invalid::AclUnknownPolicyId { .. })
    );
    apply_ok(&mut state, 6, Command::AclRoleDelete { id: uuid(60) });
    assert_rejected!(
        &mut state,
        7,
        Command::AclRoleDelete { id: uuid(60) },
        ApplyError::NotFound(NotFound::AclRole { .. })
    );
}

#[test]
fn acl_tables_survive_a_snapshot_and_old_snapshots_load() {
    let mut state = bootstrapped();
    apply_ok(&mut state, 2, policy_set(&uuid(50), "readers", READ_ALL));
    let bytes = serde_json::to_vec(&state).unwrap();
    let back: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.digest(), state.digest());

    // A state without ACLs encodes as before: no `acl` key, no `acl` table index needed.
    let plain = serde_json::to_value(State::default()).unwrap();
    assert!(plain.get("acl").is_none());
    let mut old = plain;
    old["tables"].as_object_mut().unwrap().remove("acl");
    let loaded: State = serde_json::from_value(old).unwrap();
    assert_eq!(loaded, State::default());
}

#[test]
fn debug_never_prints_secrets() {
    let state = bootstrapped();
    let text = format!("{state:?}");
    assert!(!text.contains(&uuid(1001)), "{text}");
}
