//! Config entries: `service-defaults` and `mesh` with check-and-set, and `service-intentions`
//! as the other view of the intentions table.

use super::*;
use crate::config_entries::{MeshConfig, Protocol, ServiceIntentions, SourceIntention};
use crate::intentions::{self, DefaultPolicy};
use IntentionAction::Allow;

fn entry_delete(kind: ConfigKind, name: &str, cas: Option<u64>) -> Command {
    Command::ConfigEntryDelete {
        kind,
        name: name.to_string(),
        cas,
    }
}

/// Sets `entry` as it is, without `ConfigEntry::from_json`'s validation.
fn entry_set_unchecked(entry: ConfigEntry) -> Command {
    Command::ConfigEntrySet { entry, cas: None }
}

fn protocol_of(state: &State, name: &str) -> Option<Protocol> {
    match state.config_entry(ConfigKind::ServiceDefaults, name)? {
        ConfigEntry::ServiceDefaults(d) => Some(d.protocol()),
        other => panic!("{other:?}"),
    }
}

/// The `service-intentions` entry of `name`, which must exist.
#[track_caller]
fn intentions_entry(state: &State, name: &str) -> ServiceIntentions {
    match state.config_entry(ConfigKind::ServiceIntentions, name) {
        Some(ConfigEntry::ServiceIntentions(e)) => e,
        other => panic!("no service-intentions entry {name:?}: {other:?}"),
    }
}

/// The `mesh` entry, which must exist.
#[track_caller]
fn mesh_entry(state: &State) -> MeshConfig {
    match state.config_entry(ConfigKind::Mesh, "mesh") {
        Some(ConfigEntry::Mesh(m)) => m,
        other => panic!("no mesh entry: {other:?}"),
    }
}

#[test]
fn service_defaults_set_cas_and_delete() {
    let mut s = State::default();
    apply_ok(&mut s, 5, defaults_set("api", "http", Some(0)));
    assert_eq!(protocol_of(&s, "api"), Some(Protocol::Http));
    assert_eq!(s.config_index(ConfigKind::ServiceDefaults), 5);
    // cas 0 on an existing entry, and a stale cas, fail and change nothing.
    let create_only = defaults_set("api", "grpc", Some(0));
    assert_rejected!(&mut s, 6, create_only, ApplyError::Conflict(_));
    let stale = defaults_set("api", "grpc", Some(4));
    assert_rejected!(&mut s, 7, stale, ApplyError::Conflict(_));
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
    let e = apply_err(
        &mut s,
        9,
        entry_set_unchecked(ConfigEntry::ServiceDefaults(bad)),
    );
    assert!(
        matches!(e, ApplyError::Invalid(Invalid::ConfigEntry { ref reason }) if reason.contains("udp")),
        "{e:?}"
    );
    // Delete with a stale cas fails; missing-entry delete is a no-op success.
    let delete = |cas| entry_delete(ConfigKind::ServiceDefaults, "api", cas);
    apply_err(&mut s, 10, delete(Some(5)));
    apply_ok(&mut s, 11, delete(Some(8)));
    assert_eq!(protocol_of(&s, "api"), None);
    assert_eq!(s.config_index(ConfigKind::ServiceDefaults), 11);
    apply_noop(&mut s, 12, delete(None));
    assert!(s.config_entries(ConfigKind::ServiceDefaults).is_empty());
}

#[test]
fn mesh_entry_set_cas_and_delete() {
    let mut s = State::default();
    let merge =
        r#"{"Kind":"mesh","HTTP":{"Incoming":{"RequestNormalization":{"MergeSlashes":true}}}}"#;
    apply_ok(&mut s, 3, entry_set(merge, Some(0)));
    let m = mesh_entry(&s);
    assert!(m.request_normalization().merge_slashes);
    assert_eq!((m.create_index, m.modify_index), (3, 3));
    assert_eq!(s.config_index(ConfigKind::Mesh), 3);
    assert!(s.config_entry(ConfigKind::Mesh, "other").is_none());
    apply_err(&mut s, 4, entry_set(r#"{"Kind":"mesh"}"#, Some(2)));
    apply_ok(&mut s, 5, entry_set(r#"{"Kind":"mesh"}"#, Some(3)));
    let m = mesh_entry(&s);
    assert_eq!((m.create_index, m.modify_index), (3, 5));
    assert_eq!(s.config_entries(ConfigKind::Mesh).len(), 1);
    apply_ok(&mut s, 6, entry_delete(ConfigKind::Mesh, "mesh", None));
    assert!(s.config_entries(ConfigKind::Mesh).is_empty());
    assert_eq!(s.config_index(ConfigKind::Mesh), 6);
}

#[test]
fn service_intentions_entry_replaces_its_destination_atomically() {
    let mut s = State::default();
    let legacy = [
        create("web", "api", Allow),
        create("old", "api", Allow),
        create("web", "db", Allow),
    ];
    apply_all_ok(&mut s, 3, legacy);
    // The legacy intentions already form an entry.
    let e = intentions_entry(&s, "api");
    assert_eq!(e.sources.len(), 2);
    assert_eq!((e.create_index, e.modify_index), (3, 4));

    let sources = r#"[{"Name":"web","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"/admin"}}]},
                {"Name":"*","Action":"deny"}]"#;
    apply_ok(&mut s, 6, intentions_entry_set("api", sources, Some(4)));
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
    apply_ok(&mut s, 7, create("ops", "api", Allow));
    let e = intentions_entry(&s, "api");
    assert_eq!(e.modify_index, 7);
    assert_eq!(e.create_index, 3);
    assert_eq!(e.sources.len(), 3);
    let stale = intentions_entry_set("api", "[]", Some(6));
    assert_rejected!(&mut s, 8, stale, ApplyError::Conflict(_));

    // A bad source rejects the whole entry, nothing changes.
    let bad = ConfigEntry::ServiceIntentions(ServiceIntentions {
        sources: vec![SourceIntention {
            action: None,
            ..e.sources[0].clone()
        }],
        ..e.clone()
    });
    let err = apply_err(&mut s, 9, entry_set_unchecked(bad));
    assert!(
        matches!(err, ApplyError::Invalid(Invalid::ConfigEntry { ref reason }) if reason.starts_with("Sources[0]")),
        "{err:?}"
    );

    // Deleting the entry removes every intention of the destination and nothing else.
    let delete_api = entry_delete(ConfigKind::ServiceIntentions, "api", None);
    apply_ok(&mut s, 10, delete_api);
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
    let e = intentions_entry(&s, "api");
    assert!(e.sources.is_empty());
    assert_eq!(e.modify_index, 2);
    let delete_api = entry_delete(ConfigKind::ServiceIntentions, "api", Some(2));
    apply_ok(&mut s, 3, delete_api);
    assert!(
        s.config_entry(ConfigKind::ServiceIntentions, "api")
            .is_none()
    );
}
