//! The intentions table: server-owned fields, create versus replace, validation, deletion,
//! precedence order, and the default policy.

use super::*;
use crate::intentions::{self, DefaultPolicy};
use crate::model::{HttpPermission, IntentionPermission};
use IntentionAction::{Allow, Deny};

fn web_db_id() -> String {
    intentions::legacy_id("default", "web", "default", "db")
}

/// An intention with only the HTTP permission `action` on `path_prefix`.
fn l7_only(src: &str, dst: &str, action: IntentionAction, path_prefix: &str) -> Intention {
    Intention {
        action: None,
        permissions: vec![IntentionPermission {
            action,
            http: Some(HttpPermission {
                path_prefix: path_prefix.to_string(),
                ..HttpPermission::default()
            }),
        }],
        ..intention(src, dst, Allow)
    }
}

#[test]
fn intention_upsert_sets_id_precedence_and_indexes() {
    let mut state = State::default();
    // Whatever the client sends for server-owned fields is overwritten.
    let i = Intention {
        id: "client-chosen".to_string(),
        precedence: 1,
        create_index: 99,
        modify_index: 99,
        ..intention("web", "db", Allow)
    };
    apply_ok(&mut state, 7, upsert(i, false));

    let id = web_db_id();
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
    apply_ok(&mut state, 7, create("web", "db", Allow));
    let deny = create("web", "db", Deny);
    let err = assert_rejected!(&mut state, 8, deny, ApplyError::Conflict(_));
    assert_eq!(err.http_status(), 409);
    assert_eq!(state.intentions[&web_db_id()].action, Some(Allow));
}

#[test]
fn intention_upsert_with_replace_keeps_create_index() {
    let mut state = State::default();
    apply_ok(&mut state, 7, create("web", "db", Allow));
    let deny = Intention {
        description: "lock down".to_string(),
        ..intention("web", "db", Deny)
    };
    apply_ok(&mut state, 9, upsert(deny, true));

    assert_eq!(state.intentions.len(), 1);
    let stored = state.intention_list().remove(0);
    assert_eq!(stored.action, Some(Deny));
    assert_eq!(stored.description, "lock down");
    assert_eq!((stored.create_index, stored.modify_index), (7, 9));
    assert_eq!(state.tables.intentions, 9);

    // `replace` on a new pair simply creates it.
    apply_ok(&mut state, 10, upsert(intention("api", "db", Allow), true));
    let id = intentions::legacy_id("default", "api", "default", "db");
    let created = &state.intentions[&id];
    assert_eq!((created.create_index, created.modify_index), (10, 10));
}

#[test]
fn invalid_intentions_are_rejected() {
    let mut state = State::default();
    apply_ok(&mut state, 1, create("web", "db", Allow));
    let both = Intention {
        action: Some(Allow),
        ..l7_only("api", "db", Allow, "/api")
    };
    let neither = Intention {
        action: None,
        ..intention("api", "db", Allow)
    };
    let empty_source = intention("", "db", Allow);
    let partial_wildcard = intention("web*", "db", Allow);
    // Also with `replace` on the existing pair: validation comes first.
    let replace_invalid = Intention {
        action: None,
        ..intention("web", "db", Allow)
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
        let cmd = upsert(i, replace);
        assert_rejected!(&mut state, 10 + index as u64, cmd, ApplyError::Invalid(_));
    }
}

#[test]
fn intention_with_permissions_only_is_accepted() {
    let mut state = State::default();
    let l7 = l7_only("web", "api", Deny, "/admin");
    apply_ok(&mut state, 3, upsert(l7.clone(), false));
    let stored = state.intention_list().remove(0);
    assert_eq!(stored.permissions, l7.permissions);
    assert_eq!(stored.action, None);
}

#[test]
fn intention_delete() {
    let mut state = State::default();
    apply_all_ok(
        &mut state,
        1,
        [create("web", "db", Allow), create("api", "db", Allow)],
    );
    let reversed = delete_intention("db", "web");
    assert_rejected!(&mut state, 3, reversed, ApplyError::NotFound(_));
    assert_eq!(state.tables.intentions, 2);

    apply_ok(&mut state, 4, delete_intention("web", "db"));
    assert_eq!(state.intentions.len(), 1);
    assert_eq!(state.tables.intentions, 4);
    let again = delete_intention("web", "db");
    assert_rejected!(&mut state, 5, again, ApplyError::NotFound(_));

    // Deleted pairs can be created again without `replace`, with fresh indexes.
    apply_ok(&mut state, 6, create("web", "db", Deny));
    assert_eq!(state.intentions[&web_db_id()].create_index, 6);
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
    let creates = pairs.map(|(src, dst)| create(src, dst, Allow));
    apply_all_ok(&mut state, 1, creates);
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
    let allow = Command::SetDefaultPolicy {
        policy: DefaultPolicy::Allow,
    };
    apply_ok(&mut state, 4, allow);
    assert_eq!(state.default_policy, DefaultPolicy::Allow);
    assert_eq!(state.tables.config, 4);
}
