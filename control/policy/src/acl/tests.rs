use proptest::prelude::*;

use super::*;
use crate::intentions::DefaultPolicy;

const TOKEN_ID: &str = "6a1253d2-1785-24fd-91c2-f8e78c745511";

fn policy(id: &str, name: &str, rules: &str, dcs: &[&str]) -> AclPolicy {
    AclPolicy {
        id: id.into(),
        name: name.into(),
        rules: rules.into(),
        datacenters: dcs.iter().map(|d| d.to_string()).collect(),
        ..AclPolicy::default()
    }
}

fn link(id: &str) -> AclLink {
    AclLink {
        id: id.into(),
        name: String::new(),
    }
}

fn token() -> AclToken {
    AclToken {
        accessor_id: TOKEN_ID.into(),
        secret_id: "e9a3e4b5-7c1d-4a2b-9f3e-1d2c3b4a5f6e".into(),
        ..AclToken::default()
    }
}

fn authz(rules: &str, default: DefaultPolicy) -> Authorizer {
    Authorizer::new(TOKEN_ID, &Rules::parse(rules).unwrap(), default)
}

// ---- precedence: property test against a plain reference ----

#[derive(Debug, Clone)]
struct RawRule {
    prefix: bool,
    segment: String,
    level: AccessLevel,
    intentions: Option<AccessLevel>,
}

fn level() -> impl Strategy<Value = AccessLevel> {
    prop_oneof![
        Just(AccessLevel::Read),
        Just(AccessLevel::Write),
        Just(AccessLevel::Deny)
    ]
}

/// Short names over a tiny alphabet, so exact and prefix rules collide often.
fn name() -> impl Strategy<Value = String> {
    "[ab]{0,4}"
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (
        any::<bool>(),
        name(),
        level(),
        proptest::option::of(level()),
    )
        .prop_map(|(prefix, segment, level, intentions)| RawRule {
            prefix,
            segment,
            level,
            intentions,
        })
}

/// The slow, plain reading of Consul's documented rules: merge rules for the same (kind,
/// segment) deny > write > read; an exact rule for the name wins; else the longest prefix that
/// the name starts with; else the default.
fn reference(
    policies: &[Vec<RawRule>],
    name: &str,
    intentions: bool,
    write: bool,
    default: DefaultPolicy,
) -> bool {
    let rank = |l: AccessLevel| match l {
        AccessLevel::Read => 0,
        AccessLevel::Write => 1,
        AccessLevel::Deny => 2,
    };
    let mut merged: Vec<(bool, String, AccessLevel, Option<AccessLevel>)> = Vec::new();
    for r in policies.iter().flatten() {
        match merged
            .iter_mut()
            .find(|m| m.0 == r.prefix && m.1 == r.segment)
        {
            Some(m) => {
                if rank(r.level) > rank(m.2) {
                    m.2 = r.level;
                }
                m.3 = match (m.3, r.intentions) {
                    (Some(a), Some(b)) => Some(if rank(b) > rank(a) { b } else { a }),
                    (a, b) => a.or(b),
                };
            }
            None => merged.push((r.prefix, r.segment.clone(), r.level, r.intentions)),
        }
    }
    let effective = |m: &(bool, String, AccessLevel, Option<AccessLevel>)| {
        if intentions {
            m.3.unwrap_or(if m.2 == AccessLevel::Deny {
                AccessLevel::Deny
            } else {
                AccessLevel::Read
            })
        } else {
            m.2
        }
    };
    let exact = merged.iter().find(|m| !m.0 && m.1 == name);
    let mut best: Option<&(bool, String, AccessLevel, Option<AccessLevel>)> = None;
    for m in merged
        .iter()
        .filter(|m| m.0 && name.starts_with(m.1.as_str()))
    {
        if best.is_none_or(|b| m.1.len() > b.1.len()) {
            best = Some(m);
        }
    }
    match exact.or(best).map(effective) {
        Some(AccessLevel::Write) => true,
        Some(AccessLevel::Read) => !write,
        Some(AccessLevel::Deny) => false,
        None => default.allows(),
    }
}

fn to_rules(policy: &[RawRule], with_intentions: bool) -> Rules {
    // One policy may not repeat a segment (the parser refuses it), so merge within it too.
    let mut out = Rules::default();
    for r in policy {
        let mut one = Rules::default();
        let rule = ServiceRule {
            policy: r.level,
            intentions: if with_intentions { r.intentions } else { None },
        };
        let (svc, node) = if r.prefix {
            (&mut one.service_prefixes, &mut one.node_prefixes)
        } else {
            (&mut one.services, &mut one.nodes)
        };
        svc.insert(r.segment.clone(), rule);
        node.insert(r.segment.clone(), r.level);
        out.merge(&one);
    }
    out
}

proptest! {
    #[test]
    fn decisions_match_the_reference(
        policies in proptest::collection::vec(proptest::collection::vec(raw_rule(), 0..8), 1..5),
        names in proptest::collection::vec(name(), 1..10),
        allow_default in any::<bool>(),
    ) {
        let default = if allow_default { DefaultPolicy::Allow } else { DefaultPolicy::Deny };
        let mut merged = Rules::default();
        for p in &policies {
            merged.merge(&to_rules(p, true));
        }
        let a = Authorizer::new(TOKEN_ID, &merged, default);
        for n in &names {
            prop_assert_eq!(a.service_read(n).allowed, reference(&policies, n, false, false, default), "service_read {}", n);
            prop_assert_eq!(a.service_write(n).allowed, reference(&policies, n, false, true, default), "service_write {}", n);
            prop_assert_eq!(a.intentions_read(n).allowed, reference(&policies, n, true, false, default), "intentions_read {}", n);
            prop_assert_eq!(a.intentions_write(n).allowed, reference(&policies, n, true, true, default), "intentions_write {}", n);
            // Nodes carry the same rules without intentions.
            prop_assert_eq!(a.node_read(n).allowed, reference(&policies, n, false, false, default), "node_read {}", n);
            prop_assert_eq!(a.node_write(n).allowed, reference(&policies, n, false, true, default), "node_write {}", n);
            // Nothing was said about agents: the default decides.
            prop_assert_eq!(a.agent_write(n).reason, Reason::Default(default));
        }
    }

    #[test]
    fn hcl_and_json_agree_on_generated_rules(policy in proptest::collection::vec(raw_rule(), 0..8)) {
        let rules = to_rules(&policy, true);
        let mut hcl = String::new();
        let mut json = serde_json::Map::new();
        for (res, map) in [("service", &rules.services), ("service_prefix", &rules.service_prefixes)] {
            let mut segs = serde_json::Map::new();
            for (seg, r) in map {
                let mut fields = serde_json::Map::new();
                fields.insert("policy".into(), r.policy.as_str().into());
                hcl += &format!("{res} {seg:?} {{\n  policy = {:?}\n", r.policy.as_str());
                if let Some(i) = r.intentions {
                    hcl += &format!("  intentions = {:?}\n", i.as_str());
                    fields.insert("intentions".into(), i.as_str().into());
                }
                hcl += "}\n";
                segs.insert(seg.clone(), fields.into());
            }
            json.insert(res.into(), segs.into());
        }
        let json = serde_json::Value::Object(json).to_string();
        let from_hcl = Rules::from_hcl(&hcl).unwrap();
        prop_assert_eq!(&from_hcl, &Rules::from_json(&json).unwrap());
        prop_assert_eq!(from_hcl.services, rules.services);
    }
}

// ---- precedence, by example ----

#[test]
fn exact_beats_prefix_and_longest_prefix_wins() {
    let a = authz(
        r#"
service_prefix "" { policy = "read" }
service_prefix "api" { policy = "write" }
service_prefix "api-internal" { policy = "deny" }
service "api-internal-health" { policy = "read" }
"#,
        DefaultPolicy::Deny,
    );
    assert!(a.service_read("web").allowed);
    assert!(!a.service_write("web").allowed);
    assert!(a.service_write("api-gw").allowed);
    assert_eq!(a.service_write("api-gw").matched_prefix(), Some("api"));
    assert!(!a.service_read("api-internal-db").allowed);
    let d = a.service_read("api-internal-health");
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        Reason::Exact {
            level: AccessLevel::Read
        }
    );
    assert!(!a.service_write("api-internal-health").allowed);
    // A read rule decides a write: it denies, it does not fall through to an allow default.
    let a = authz(r#"service "db" { policy = "read" }"#, DefaultPolicy::Allow);
    assert!(!a.service_write("db").allowed);
    assert!(a.service_write("other").allowed);
}

#[test]
fn default_policy_only_when_nothing_matches() {
    let rules = r#"service_prefix "web" { policy = "deny" }
node "n1" { policy = "read" }"#;
    for default in [DefaultPolicy::Allow, DefaultPolicy::Deny] {
        let a = authz(rules, default);
        assert!(
            !a.service_read("web-1").allowed,
            "a matching deny beats {default}"
        );
        assert!(a.node_read("n1").allowed, "a matching read beats {default}");
        for d in [
            a.service_read("db"),
            a.node_write("n2"),
            a.agent_read("n1"),
            a.operator_write(),
            a.acl_read(),
            a.mesh_write(),
        ] {
            assert_eq!(d.reason, Reason::Default(default), "{d:?}");
            assert_eq!(d.allowed, default.allows(), "{d:?}");
        }
    }
}

#[test]
fn intentions_follow_the_service_rule_unless_given() {
    let a = authz(
        r#"
service "web" { policy = "write" }
service "db" {
  policy = "read"
  intentions = "write"
}
service "secret" { policy = "deny" }
service_prefix "" {
  policy = "read"
  intentions = "deny"
}
"#,
        DefaultPolicy::Allow,
    );
    // service:write implies intentions:read only.
    assert!(a.intentions_read("web").allowed);
    assert!(!a.intentions_write("web").allowed);
    assert!(a.intentions_write("db").allowed);
    assert!(!a.intentions_read("secret").allowed);
    assert!(!a.intentions_read("other").allowed);
    assert!(a.service_read("other").allowed);
}

#[test]
fn mesh_falls_back_to_operator_then_default() {
    let a = authz(r#"operator = "read""#, DefaultPolicy::Allow);
    assert!(a.mesh_read().allowed);
    let d = a.mesh_write();
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        Reason::OperatorFallback {
            level: AccessLevel::Read
        }
    );
    let a = authz("operator = \"read\"\nmesh = \"write\"", DefaultPolicy::Deny);
    assert!(a.mesh_write().allowed);
    assert!(!a.operator_write().allowed);
    let a = authz(
        "operator = \"write\"\nmesh = \"deny\"",
        DefaultPolicy::Allow,
    );
    assert!(!a.mesh_read().allowed);
    // acl does not fall back to anything.
    let a = authz(r#"operator = "write""#, DefaultPolicy::Deny);
    assert!(!a.acl_read().allowed);
}

#[test]
fn policies_merge_deny_over_write_over_read() {
    let mut idx = AclIndex::new();
    idx.insert_policy(policy(
        "p1",
        "reader",
        r#"service_prefix "" { policy = "read" }"#,
        &[],
    ))
    .unwrap();
    idx.insert_policy(policy(
        "p2",
        "writer",
        r#"service_prefix "" { policy = "write" }
service "db" { policy = "write" }
acl = "read""#,
        &[],
    ))
    .unwrap();
    idx.insert_policy(policy(
        "p3",
        "denier",
        r#"service "db" { policy = "deny" }
acl = "write""#,
        &[],
    ))
    .unwrap();
    let mut t = token();
    t.policies = vec![link("p1"), link("p2")];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(a.service_write("web").allowed, "write beats read");
    assert!(a.service_write("db").allowed);
    assert!(a.acl_read().allowed && !a.acl_write().allowed);
    t.policies.push(link("p3"));
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Allow);
    assert!(
        !a.service_read("db").allowed,
        "deny beats write on the same segment"
    );
    assert!(
        a.service_write("web").allowed,
        "other segments keep their rules"
    );
    assert!(a.acl_write().allowed, "write beats read for scalars");
    // Links by name work; dangling links are skipped.
    t.policies = vec![
        AclLink {
            id: String::new(),
            name: "writer".into(),
        },
        link("gone"),
    ];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(a.service_write("web").allowed);
}

#[test]
fn policy_datacenters_filter() {
    let mut idx = AclIndex::new();
    idx.insert_policy(policy("p1", "dc2-only", "operator = \"write\"", &["dc2"]))
        .unwrap();
    idx.insert_policy(policy("p2", "everywhere", "acl = \"read\"", &[]))
        .unwrap();
    let mut t = token();
    t.policies = vec![link("p1"), link("p2")];
    let dc1 = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(!dc1.operator_read().allowed);
    assert!(dc1.acl_read().allowed);
    let dc2 = idx.authorizer(&t, "dc2", DefaultPolicy::Deny);
    assert!(dc2.operator_write().allowed);
}

#[test]
fn service_identity_grants_and_datacenters() {
    let idx = AclIndex::new();
    let mut t = token();
    t.service_identities = vec![
        AclServiceIdentity {
            service_name: "web".into(),
            datacenters: vec![],
        },
        AclServiceIdentity {
            service_name: "db".into(),
            datacenters: vec!["dc2".into()],
        },
    ];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(a.service_write("web").allowed);
    assert!(a.service_write("web-sidecar-proxy").allowed);
    assert!(!a.service_write("web-other").allowed);
    assert!(a.service_read("anything").allowed);
    assert!(a.node_read("any-node").allowed);
    assert!(!a.node_write("any-node").allowed);
    assert!(a.intentions_read("web").allowed);
    assert!(!a.intentions_write("web").allowed);
    assert!(
        !a.service_write("db").allowed,
        "db's identity is for dc2 only"
    );
    assert!(!a.operator_read().allowed && !a.agent_read("n").allowed);
    let a = idx.authorizer(&t, "dc2", DefaultPolicy::Deny);
    assert!(a.service_write("db").allowed && a.service_write("db-sidecar-proxy").allowed);
}

#[test]
fn node_identity_grants_only_in_its_datacenter() {
    let idx = AclIndex::new();
    let mut t = token();
    t.node_identities = vec![AclNodeIdentity {
        node_name: "n1".into(),
        datacenter: "dc1".into(),
    }];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(a.node_write("n1").allowed);
    assert!(
        !a.node_read("n2").allowed,
        "the template reads services, not nodes"
    );
    assert!(a.service_read("web").allowed && !a.service_write("web").allowed);
    let a = idx.authorizer(&t, "dc2", DefaultPolicy::Deny);
    assert!(!a.node_write("n1").allowed && !a.service_read("web").allowed);
}

#[test]
fn roles_bring_policies_and_identities() {
    let mut idx = AclIndex::new();
    idx.insert_policy(policy("p1", "ops", "operator = \"read\"", &[]))
        .unwrap();
    idx.insert_policy(policy("p2", "dc9", "acl = \"write\"", &["dc9"]))
        .unwrap();
    idx.insert_role(AclRole {
        id: "r1".into(),
        name: "web-role".into(),
        policies: vec![link("p1"), link("p2")],
        service_identities: vec![AclServiceIdentity {
            service_name: "web".into(),
            datacenters: vec![],
        }],
        node_identities: vec![AclNodeIdentity {
            node_name: "n7".into(),
            datacenter: "dc1".into(),
        }],
        ..AclRole::default()
    });
    let mut t = token();
    t.roles = vec![AclLink {
        id: String::new(),
        name: "web-role".into(),
    }];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    assert!(a.operator_read().allowed);
    assert!(!a.acl_read().allowed, "p2 is for dc9 only");
    assert!(a.service_write("web-sidecar-proxy").allowed);
    assert!(a.node_write("n7").allowed);
}

#[test]
fn global_management_can_do_everything() {
    let mut idx = AclIndex::new();
    idx.insert_policy(global_management_policy()).unwrap();
    let mut t = token();
    t.policies = vec![link(GLOBAL_MANAGEMENT_POLICY_ID)];
    let a = idx.authorizer(&t, "dc1", DefaultPolicy::Deny);
    for n in ["", "web", "db-sidecar-proxy", "n1"] {
        for d in [
            a.service_write(n),
            a.intentions_write(n),
            a.node_write(n),
            a.agent_write(n),
        ] {
            assert!(d.allowed, "{d:?}");
        }
    }
    for d in [
        a.operator_write(),
        a.acl_write(),
        a.mesh_write(),
        a.mesh_read(),
    ] {
        assert!(d.allowed, "{d:?}");
    }
    assert_eq!(
        validate_policy(&global_management_policy()).map(|_| ()),
        Ok(())
    );
}

// ---- denial messages ----

#[test]
fn denial_messages_are_consuls() {
    let a = authz("", DefaultPolicy::Deny);
    let e = a.service_write("db").check().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Permission denied: token with AccessorID '{TOKEN_ID}' lacks permission 'service:write' on \"db\""
        )
    );
    assert_eq!(
        a.intentions_read("db").check().unwrap_err().to_string(),
        format!(
            "Permission denied: token with AccessorID '{TOKEN_ID}' lacks permission 'intention:read' on \"db\""
        )
    );
    assert_eq!(
        a.operator_read().check().unwrap_err().to_string(),
        format!(
            "Permission denied: token with AccessorID '{TOKEN_ID}' lacks permission 'operator:read'"
        )
    );
    assert_eq!(
        a.mesh_write().check().unwrap_err().to_string(),
        format!(
            "Permission denied: token with AccessorID '{TOKEN_ID}' lacks permission 'mesh:write'"
        )
    );
    // An empty name has no `on` part; quotes in a name are escaped as Go's %q does.
    assert!(
        !a.node_read("")
            .check()
            .unwrap_err()
            .to_string()
            .contains(" on ")
    );
    assert!(
        a.agent_read("a\"b")
            .check()
            .unwrap_err()
            .to_string()
            .ends_with(r#"'agent:read' on "a\"b""#)
    );
    // The anonymous token gets Consul's wording.
    let anon = Authorizer::new(
        ANONYMOUS_TOKEN_ACCESSOR_ID,
        &Rules::default(),
        DefaultPolicy::Deny,
    );
    assert_eq!(
        anon.node_read("n1").check().unwrap_err().to_string(),
        "Permission denied: anonymous token lacks permission 'node:read' on \"n1\". The anonymous token is used implicitly when a request does not specify a token."
    );
    // Allowed decisions have no denial.
    let a = authz("acl = \"read\"", DefaultPolicy::Deny);
    assert_eq!(a.acl_read().check(), Ok(()));
    assert_eq!(a.acl_read().denial(), None);
}

// ---- model ----

#[test]
fn token_debug_redacts_the_secret() {
    let t = token();
    let dbg = format!("{t:?}");
    assert!(!dbg.contains(&t.secret_id), "{dbg}");
    assert!(
        dbg.contains("<redacted>") && dbg.contains(TOKEN_ID),
        "{dbg}"
    );
    let dbg = format!("{t:#?}");
    assert!(!dbg.contains(&t.secret_id), "{dbg}");
}

#[test]
fn objects_use_consuls_json_names() {
    let json = serde_json::json!({
        "AccessorID": TOKEN_ID,
        "SecretID": "e9a3e4b5-7c1d-4a2b-9f3e-1d2c3b4a5f6e",
        "Description": "web token",
        "Policies": [{"ID": "p1", "Name": "reader"}],
        "Roles": [{"ID": "r1", "Name": "web-role"}],
        "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1"]}],
        "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}],
        "Local": false,
        "ExpirationTime": "2026-12-04T15:04:05Z",
        "CreateTime": "2026-12-04T14:04:05.123456Z",
        "CreateIndex": 5,
        "ModifyIndex": 7
    });
    let t: AclToken = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(t.service_identities[0].service_name, "web");
    assert_eq!(t.expiration_time.as_deref(), Some("2026-12-04T15:04:05Z"));
    assert_eq!(serde_json::to_value(&t).unwrap(), json);
    let t: AclToken = serde_json::from_value(serde_json::json!({"ExpirationTTL": "1h"})).unwrap();
    assert_eq!(t.expiration_ttl.as_deref(), Some("1h"));

    let p = policy("p1", "reader", "operator = \"read\"", &["dc1"]);
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["ID"], "p1");
    assert_eq!(v["Rules"], "operator = \"read\"");
    assert_eq!(v["Datacenters"][0], "dc1");
    assert_eq!(serde_json::from_value::<AclPolicy>(v).unwrap(), p);
    let r: AclRole = serde_json::from_value(serde_json::json!({
        "ID": "r1", "Name": "web-role", "Policies": [{"Name": "reader"}],
        "ServiceIdentities": [{"ServiceName": "web"}],
        "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}],
        "CreateIndex": 1, "ModifyIndex": 2
    }))
    .unwrap();
    assert_eq!(r.policies[0].name, "reader");
    assert_eq!(r.modify_index, 2);
}

// ---- validation ----

#[test]
fn token_validation() {
    assert_eq!(validate_token(&token()), Ok(()));
    assert_eq!(
        validate_token(&AclToken::default()),
        Ok(()),
        "IDs are generated when empty"
    );
    let anon = AclToken {
        accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into(),
        secret_id: ANONYMOUS_TOKEN_SECRET_ID.into(),
        ..AclToken::default()
    };
    assert_eq!(validate_token(&anon), Ok(()));
    let code = |t: &AclToken| validate_token(t).unwrap_err().code();

    let mut t = token();
    t.secret_id = "not-a-uuid".into();
    assert_eq!(code(&t), "invalid_uuid");
    let mut t = token();
    t.service_identities = vec![AclServiceIdentity {
        service_name: "Web".into(),
        datacenters: vec![],
    }];
    assert_eq!(code(&t), "invalid_service_identity_name");
    t.service_identities[0].service_name = "web-".into();
    assert_eq!(code(&t), "invalid_service_identity_name");
    t.service_identities[0].service_name = String::new();
    assert_eq!(code(&t), "service_identity_missing_name");
    t.service_identities[0].service_name = "web_1".into();
    t.service_identities[0].datacenters = vec!["dc1".into()];
    assert_eq!(validate_token(&t), Ok(()));
    t.local = true;
    assert_eq!(code(&t), "service_identity_datacenters_on_local_token");
    let mut t = token();
    t.node_identities = vec![AclNodeIdentity {
        node_name: "n1".into(),
        datacenter: String::new(),
    }];
    assert_eq!(code(&t), "node_identity_missing_datacenter");
    let mut t = token();
    t.policies = vec![AclLink::default()];
    assert_eq!(code(&t), "empty_link");
    let mut t = token();
    t.expiration_time = Some("2026-12-04T15:04:05+01:00".into());
    assert_eq!(validate_token(&t), Ok(()));
    t.expiration_ttl = Some("1h".into());
    assert_eq!(code(&t), "expiration_both");
    t.expiration_time = None;
    assert_eq!(validate_token(&t), Ok(()));
    t.expiration_ttl = Some("0s".into());
    assert_eq!(code(&t), "zero_expiration_ttl");
    t.expiration_ttl = Some("1 hour".into());
    assert_eq!(code(&t), "invalid_expiration_ttl");
    t.expiration_ttl = None;
    for bad in [
        "2026-12-04 15:04:05Z",
        "2026-02-30T15:04:05Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T15:04:05",
        "2026-12-04T15:04:05.Z",
    ] {
        t.expiration_time = Some(bad.into());
        assert_eq!(code(&t), "invalid_expiration_time", "{bad}");
    }
}

#[test]
fn policy_and_role_validation() {
    assert!(validate_policy(&policy("", "ok_name-1", "", &[])).is_ok());
    let e = validate_policy(&policy("", "bad name", "", &[])).unwrap_err();
    assert_eq!(e.code(), "invalid_policy_name");
    let long = "a".repeat(129);
    assert_eq!(
        validate_policy(&policy("", &long, "", &[]))
            .unwrap_err()
            .code(),
        "invalid_policy_name"
    );
    assert_eq!(
        validate_policy(&policy("", "p", "", &["dc1", ""]))
            .unwrap_err()
            .code(),
        "empty_datacenter"
    );
    let e = validate_policy(&policy("", "p", "key \"x\" { policy = \"read\" }", &[])).unwrap_err();
    assert_eq!(e.code(), "unsupported_resource");
    assert!(e.to_string().starts_with("invalid Rules: "), "{e}");
    assert_eq!(
        validate_policy(&policy("nope", "p", "", &[]))
            .unwrap_err()
            .code(),
        "invalid_uuid"
    );

    let mut r = AclRole {
        name: "a".repeat(256),
        ..AclRole::default()
    };
    assert_eq!(validate_role(&r), Ok(()));
    r.name.push('a');
    assert_eq!(validate_role(&r).unwrap_err().code(), "invalid_role_name");
    r.name = "web-role".into();
    r.node_identities = vec![AclNodeIdentity {
        node_name: "N1".into(),
        datacenter: "dc1".into(),
    }];
    assert_eq!(
        validate_role(&r).unwrap_err().code(),
        "invalid_node_identity_name"
    );
}

#[test]
fn reference_helper_agrees_on_a_known_case() {
    // Guard the test oracle itself with a case worked out by hand.
    let p = vec![vec![
        RawRule {
            prefix: true,
            segment: "a".into(),
            level: AccessLevel::Write,
            intentions: None,
        },
        RawRule {
            prefix: false,
            segment: "ab".into(),
            level: AccessLevel::Read,
            intentions: None,
        },
    ]];
    assert!(reference(&p, "aa", false, true, DefaultPolicy::Deny));
    assert!(!reference(&p, "ab", false, true, DefaultPolicy::Deny));
    assert!(reference(&p, "ab", true, false, DefaultPolicy::Deny));
    assert!(!reference(&p, "b", false, false, DefaultPolicy::Deny));
}
