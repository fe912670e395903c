//! Tests of config entry parsing and validation in Consul's JSON shape, and of the
//! entry ↔ intentions conversion.

use super::*;

fn parse(json: &str) -> Result<ConfigEntry, ConfigEntryError> {
    ConfigEntry::from_json(json.as_bytes())
}

#[test]
fn service_defaults_parse_and_protocol() {
    let e = parse(r#"{"Kind":"service-defaults","Name":"api","Protocol":"HTTP"}"#).unwrap();
    let ConfigEntry::ServiceDefaults(d) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(d.protocol, "http", "normalized to lower case");
    assert_eq!(d.protocol(), Protocol::Http);
    let e = parse(r#"{"Kind":"service-defaults","Name":"db"}"#).unwrap();
    let ConfigEntry::ServiceDefaults(d) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(d.protocol(), Protocol::Tcp, "tcp when unset");
    for p in ["tcp", "http", "http2", "grpc"] {
        let body = format!(r#"{{"Kind":"service-defaults","Name":"x","Protocol":"{p}"}}"#);
        assert!(parse(&body).is_ok(), "{p}");
    }
}

#[test]
fn bad_entries_are_rejected_with_the_reason() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"Name":"x"}"#, "missing_kind", "Kind must be set"),
        (
            r#"{"Kind":"proxy-defaults","Name":"global"}"#,
            "unknown_kind",
            "proxy-defaults",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"x","Protocol":"udp"}"#,
            "unknown_protocol",
            "tcp, http, http2, grpc",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"x","Mode":"transparent"}"#,
            "decode",
            "unknown field `Mode`",
        ),
        (
            r#"{"Kind":"service-defaults","Name":""}"#,
            "missing_name",
            "Name",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"*"}"#,
            "invalid_name",
            "\"*\"",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Namespace":"other","Sources":[]}"#,
            "namespace",
            "other",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Action":"allow","Bogus":1}]}"#,
            "decode",
            "unknown field `Bogus`",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/a","PathSuffix":"/b"}}]}]}"#,
            "decode",
            "unknown field `PathSuffix`",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathExact":"a"}}]}]}"#,
            "path_not_absolute",
            "Sources[0]: Permissions[0].HTTP.PathExact doesn't start with '/'",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"(["}}]}]}"#,
            "invalid_regex",
            "PathRegex is not a valid regular expression",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathExact":"/a","PathPrefix":"/b"}}]}]}"#,
            "conflicting_paths",
            "at most one of PathExact, PathPrefix, or PathRegex",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"Header":[{"Name":"x","Exact":"a","Prefix":"b"}]}}]}]}"#,
            "header_matchers",
            "exactly one of Present, Exact, Prefix, Suffix, or Regex",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}"#,
            "duplicate_source",
            "Sources[1] duplicates",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Action":"maybe"}]}"#,
            "decode",
            "unknown variant `maybe`",
        ),
        (
            r#"{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}]}"#,
            "permissions_on_wildcard_destination",
            "wildcarded destinations",
        ),
    ];
    for (body, code, msg) in cases {
        let err = parse(body).expect_err(body);
        assert_eq!(err.code(), *code, "{body}: {err}");
        assert!(err.to_string().contains(msg), "{body}: {err}");
    }
}

#[test]
fn intentions_entry_round_trips_through_intentions() {
    let e = parse(
        r#"{"Kind":"service-intentions","Name":"api","Meta":{"team":"pay"},"Sources":[
            {"Name":"*","Action":"deny"},
            {"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/v1","Methods":["GET"]}}]},
            {"Name":"ops","Action":"allow","Description":"oncall","Precedence":1,"LegacyID":"x"}
        ]}"#,
    )
    .unwrap();
    let ConfigEntry::ServiceIntentions(si) = &e else {
        panic!("{e:?}")
    };
    // Read-only fields given on write are dropped.
    assert!(
        si.sources
            .iter()
            .all(|s| s.precedence == 0 && s.legacy_id.is_empty())
    );
    let mut ixns: Vec<Intention> = si
        .sources
        .iter()
        .map(|s| source_to_intention(si, s))
        .collect();
    for i in &mut ixns {
        i.precedence = intentions::precedence(
            &i.source_ns,
            &i.source_name,
            &i.destination_ns,
            &i.destination_name,
        );
    }
    let meta = IntentionEntryMeta {
        meta: si.meta.clone(),
        create_index: 3,
        modify_index: 7,
    };
    let back = intentions_entry("default", "api", Some(&meta), &ixns).unwrap();
    // Sorted by precedence (9, 9, 8), ties by source name.
    let names: Vec<&str> = back.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ops", "web", "*"]);
    assert_eq!(back.sources[0].precedence, 9);
    assert_eq!(back.sources[2].precedence, 8);
    assert_eq!(back.sources[1].permissions, si.sources[1].permissions);
    assert_eq!((back.create_index, back.modify_index), (3, 7));
    assert_eq!(back.meta.get("team").map(String::as_str), Some("pay"));
    // The JSON shape is Consul's: Kind tag, PascalCase, Type, LegacyID.
    let json = serde_json::to_value(ConfigEntry::ServiceIntentions(back)).unwrap();
    assert_eq!(json["Kind"], "service-intentions");
    assert_eq!(json["Sources"][0]["Type"], "consul");
    assert!(json["Sources"][0]["LegacyID"].is_string());
    assert_eq!(
        json["Sources"][1]["Permissions"][0]["HTTP"]["PathPrefix"],
        "/v1"
    );
    // And it can be written back as read (read-only fields are accepted and ignored).
    assert!(ConfigEntry::from_json(json.to_string().as_bytes()).is_ok());
    assert!(intentions_entry("default", "other", None, &ixns).is_none());
}

#[test]
fn mesh_entry_in_consul_shape() {
    let e = parse(
        r#"{"Kind":"mesh","HTTP":{"Incoming":{"RequestNormalization":
            {"MergeSlashes":true,"HeadersWithUnderscoresAction":"REJECT_REQUEST"}}}}"#,
    )
    .unwrap();
    assert_eq!((e.kind(), e.name()), (ConfigKind::Mesh, "mesh"));
    let ConfigEntry::Mesh(m) = &e else {
        panic!("{e:?}")
    };
    let n = m.request_normalization();
    assert!(n.merge_slashes && !n.insecure_disable_path_normalization);
    // Serialized back in the same shape, without a Name of its own.
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["Kind"], "mesh");
    assert_eq!(
        v["HTTP"]["Incoming"]["RequestNormalization"]["HeadersWithUnderscoresAction"],
        "REJECT_REQUEST"
    );
    assert!(v.get("Name").is_none(), "{v}");
    // An empty entry means Consul's defaults.
    let ConfigEntry::Mesh(m) = parse(r#"{"Kind":"mesh","Name":"mesh"}"#).unwrap() else {
        panic!()
    };
    assert_eq!(m.request_normalization(), Default::default());
    // Refusals: another name, a field this mesh does not enforce, a bad action.
    let e = parse(r#"{"Kind":"mesh","Name":"other"}"#).unwrap_err();
    assert_eq!(e.code(), "mesh_name", "{e}");
    let e =
        parse(r#"{"Kind":"mesh","TransparentProxy":{"MeshDestinationsOnly":true}}"#).unwrap_err();
    assert!(e.to_string().contains("TransparentProxy"), "{e}");
    let e = parse(
        r#"{"Kind":"mesh","HTTP":{"Incoming":{"RequestNormalization":
            {"PathWithEscapedSlashesAction":"DECODE"}}}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("UNESCAPE_AND_FORWARD"), "{e}");
}
