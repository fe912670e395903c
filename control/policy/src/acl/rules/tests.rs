use super::*;

const RICH_HCL: &str = r#"
# Every resource this mesh enforces, exact and prefix.
service "web" {
  policy = "write"
  intentions = "read"
}
service "db" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
service_prefix "internal-" {
  policy = "deny"
  intentions = "deny"
}
node "n1" {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
agent "n1" {
  policy = "read"
}
agent_prefix "edge-" {
  policy = "deny"
}
operator = "read"
acl = "deny"
mesh = "write"
"#;

const RICH_JSON: &str = r#"{
  "service": {
    "web": { "policy": "write", "intentions": "read" },
    "db": { "policy": "read" }
  },
  "service_prefix": {
    "": { "policy": "read" },
    "internal-": { "policy": "deny", "intentions": "deny" }
  },
  "node": { "n1": { "policy": "write" } },
  "node_prefix": { "": { "policy": "read" } },
  "agent": { "n1": { "policy": "read" } },
  "agent_prefix": { "edge-": { "policy": "deny" } },
  "operator": "read",
  "acl": "deny",
  "mesh": "write"
}"#;

fn svc(policy: AccessLevel, intentions: Option<AccessLevel>) -> ServiceRule {
    ServiceRule { policy, intentions }
}

use AccessLevel::{Deny, Read, Write};

#[test]
fn hcl_and_json_forms_are_equal() {
    let hcl = Rules::from_hcl(RICH_HCL).unwrap();
    let json = Rules::from_json(RICH_JSON).unwrap();
    assert_eq!(hcl, json);
    // And what they say, field by field.
    assert_eq!(hcl.services["web"], svc(Write, Some(Read)));
    assert_eq!(hcl.services["db"], svc(Read, None));
    assert_eq!(hcl.service_prefixes[""], svc(Read, None));
    assert_eq!(hcl.service_prefixes["internal-"], svc(Deny, Some(Deny)));
    assert_eq!(hcl.nodes["n1"], Write);
    assert_eq!(hcl.node_prefixes[""], Read);
    assert_eq!(hcl.agents["n1"], Read);
    assert_eq!(hcl.agent_prefixes["edge-"], Deny);
    assert_eq!(
        (hcl.operator, hcl.acl, hcl.mesh),
        (Some(Read), Some(Deny), Some(Write))
    );
    // `parse` picks the form from the text.
    assert_eq!(Rules::parse(RICH_HCL).unwrap(), hcl);
    assert_eq!(Rules::parse(RICH_JSON).unwrap(), hcl);
}

#[test]
fn empty_and_unset_scalars() {
    assert!(Rules::parse("").unwrap().is_empty());
    assert!(Rules::parse("  \n# nothing\n").unwrap().is_empty());
    assert!(Rules::parse("{}").unwrap().is_empty());
    // Consul treats an empty scalar as not set.
    assert_eq!(Rules::parse(r#"operator = """#).unwrap().operator, None);
    // And an empty `intentions` as absent.
    let r = Rules::parse(
        r#"service "a" {
  policy = "read"
  intentions = ""
}"#,
    )
    .unwrap();
    assert_eq!(r.services["a"], svc(Read, None));
}

#[test]
fn object_attribute_form_is_the_same_as_blocks() {
    let blocks = Rules::from_hcl(r#"service "db" { policy = "read" }"#).unwrap();
    let attr = Rules::from_hcl(r#"service = { db = { policy = "read" } }"#).unwrap();
    assert_eq!(blocks, attr);
}

#[test]
fn global_management_rules_parse() {
    let r = Rules::parse(crate::acl::GLOBAL_MANAGEMENT_RULES).unwrap();
    assert_eq!(r.service_prefixes[""], svc(Write, Some(Write)));
    assert_eq!(r.node_prefixes[""], Write);
    assert_eq!(r.agent_prefixes[""], Write);
    assert_eq!(
        (r.operator, r.acl, r.mesh),
        (Some(Write), Some(Write), Some(Write))
    );
}

#[test]
fn identity_templates_match_consuls_text() {
    // Consul's templates, written out, parse to what the identity functions build.
    let service = Rules::from_hcl(
        r#"
service "web" { policy = "write" }
service "web-sidecar-proxy" { policy = "write" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
"#,
    )
    .unwrap();
    assert_eq!(service, crate::acl::service_identity_rules("web"));
    let node = Rules::from_hcl(
        r#"
node "n1" { policy = "write" }
service_prefix "" { policy = "read" }
"#,
    )
    .unwrap();
    assert_eq!(node, crate::acl::node_identity_rules("n1"));
}

/// Parses with both forms and checks the error's code, that its message names `field` and,
/// for HCL, the `line`.
fn refused(hcl: &str, json: &str, code: &str, field: &str, line: Option<usize>) {
    let e = Rules::from_hcl(hcl).expect_err(hcl);
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains(field), "{e:?} should name {field}");
    assert_eq!(e.line(), line, "{e}");
    if line.is_some() {
        assert!(
            e.to_string()
                .contains(&format!("(line {})", line.unwrap_or(0))),
            "{e}"
        );
    }
    let e = Rules::from_json(json).expect_err(json);
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains(field), "{e:?} should name {field}");
}

#[test]
fn unknown_resource_is_refused() {
    refused(
        "operator = \"read\"\nservices \"db\" {\n policy = \"read\"\n}",
        r#"{"services": {"db": {"policy": "read"}}}"#,
        "unknown_resource",
        "\"services\"",
        Some(2),
    );
}

#[test]
fn consul_resources_this_mesh_does_not_enforce_are_refused() {
    for r in [
        "key",
        "key_prefix",
        "session",
        "session_prefix",
        "event",
        "event_prefix",
        "query",
        "query_prefix",
        "peering",
        "partition",
        "namespace",
    ] {
        let hcl = format!("{r} \"x\" {{\n  policy = \"read\"\n}}");
        let json = format!(r#"{{"{r}": {{"x": {{"policy": "read"}}}}}}"#);
        refused(
            &hcl,
            &json,
            "unsupported_resource",
            &format!("{r:?}"),
            Some(1),
        );
        let e = Rules::from_hcl(&hcl).unwrap_err();
        assert!(e.to_string().contains("not supported by this mesh"), "{e}");
    }
    refused(
        "keyring = \"read\"",
        r#"{"keyring": "read"}"#,
        "unsupported_resource",
        "\"keyring\"",
        Some(1),
    );
}

#[test]
fn unknown_field_is_refused_with_its_path_and_line() {
    refused(
        "service \"db\" {\n  policy = \"read\"\n  polcy = \"write\"\n}",
        r#"{"service": {"db": {"policy": "read", "polcy": "write"}}}"#,
        "unknown_field",
        "service \"db\".polcy",
        Some(3),
    );
    // `intentions` belongs to service rules only.
    refused(
        "node \"n1\" {\n  policy = \"read\"\n  intentions = \"read\"\n}",
        r#"{"node": {"n1": {"policy": "read", "intentions": "read"}}}"#,
        "unknown_field",
        "node \"n1\".intentions",
        Some(3),
    );
}

#[test]
fn invalid_access_levels_are_refused() {
    // `list` is only for key_prefix in Consul; levels are case-sensitive.
    for bad in ["list", "READ", "allow", "sudo"] {
        refused(
            &format!("\n\nagent_prefix \"\" {{\n  policy = \"{bad}\"\n}}"),
            &format!(r#"{{"agent_prefix": {{"": {{"policy": "{bad}"}}}}}}"#),
            "invalid_access_level",
            "agent_prefix \"\".policy",
            Some(4),
        );
    }
    refused(
        "service \"a\" {\n  policy = \"read\"\n  intentions = \"list\"\n}",
        r#"{"service": {"a": {"policy": "read", "intentions": "list"}}}"#,
        "invalid_access_level",
        "service \"a\".intentions",
        Some(3),
    );
    refused(
        "mesh = \"admin\"",
        r#"{"mesh": "admin"}"#,
        "invalid_access_level",
        "mesh",
        Some(1),
    );
}

#[test]
fn missing_policy_is_refused() {
    refused(
        "service \"a\" {\n  intentions = \"write\"\n}",
        r#"{"service": {"a": {"intentions": "write"}}}"#,
        "missing_field",
        "service \"a\".policy",
        Some(1),
    );
}

#[test]
fn duplicates_are_refused() {
    let e = Rules::from_hcl(
        "service \"db\" {\n  policy = \"read\"\n}\nservice \"db\" {\n  policy = \"write\"\n}",
    )
    .unwrap_err();
    assert_eq!((e.code(), e.line()), ("duplicate", Some(4)), "{e}");
    assert!(e.to_string().contains("service \"db\""), "{e}");
    // JSON objects with a repeated key are seen too (not silently last-wins).
    let e =
        Rules::from_json(r#"{"service": {"db": {"policy": "read"}, "db": {"policy": "write"}}}"#)
            .unwrap_err();
    assert_eq!(e.code(), "duplicate", "{e}");
    let e = Rules::from_json(r#"{"operator": "read", "operator": "write"}"#).unwrap_err();
    assert_eq!(e.code(), "duplicate", "{e}");
    let e =
        Rules::from_json(r#"{"node": {"n": {"policy": "read", "policy": "deny"}}}"#).unwrap_err();
    assert_eq!(e.code(), "duplicate", "{e}");
    assert!(e.to_string().contains("node \"n\".policy"), "{e}");
    // The same segment as exact and as prefix is two rules, not a duplicate.
    Rules::from_hcl("node \"a\" { policy = \"read\" }\nnode_prefix \"a\" { policy = \"deny\" }")
        .unwrap();
}

#[test]
fn wrong_shapes_are_refused() {
    refused(
        "operator {\n}",
        r#"{"operator": {}}"#,
        "wrong_type",
        "operator",
        Some(1),
    );
    refused(
        "service = \"db\"",
        r#"{"service": "db"}"#,
        "wrong_type",
        "service",
        Some(1),
    );
    refused(
        "node \"n\" {\n  policy = 1\n}",
        r#"{"node": {"n": {"policy": 1}}}"#,
        "wrong_type",
        "node \"n\".policy",
        Some(2),
    );
    refused(
        "acl = [\"read\"]",
        r#"{"acl": ["read"]}"#,
        "wrong_type",
        "acl",
        Some(1),
    );
    // A block without its label, and a rule value that is not a block.
    let e = Rules::from_hcl("service {\n  policy = \"read\"\n}").unwrap_err();
    assert_eq!(e.code(), "wrong_type", "{e}");
    assert!(e.to_string().contains("service \"policy\""), "{e}");
    // Interpolation is not literal text.
    let e = Rules::from_hcl("operator = \"${var.x}\"").unwrap_err();
    assert_eq!(e.code(), "wrong_type", "{e}");
    assert!(e.to_string().contains("template"), "{e}");
}

#[test]
fn syntax_errors_carry_the_parsers_position() {
    let e = Rules::from_hcl("operator = \"read\"\nservice \"db\" {\n  policy = \n}").unwrap_err();
    assert_eq!(e.code(), "invalid_hcl", "{e}");
    assert!(matches!(e.line(), Some(3) | Some(4)), "{e}");
    let e = Rules::from_json("{\n  \"operator\": \"read\",\n}").unwrap_err();
    assert_eq!((e.code(), e.line()), ("invalid_json", Some(3)), "{e}");
    let e = Rules::from_json("[]").unwrap_err();
    assert_eq!(e.code(), "wrong_type", "{e}");
}

#[test]
fn merge_is_deny_over_write_over_read_per_segment() {
    let a = Rules::from_hcl(
        r#"
service "db" { policy = "write" }
service "web" {
  policy = "read"
  intentions = "write"
}
node_prefix "" { policy = "read" }
operator = "write"
"#,
    )
    .unwrap();
    let b = Rules::from_hcl(
        r#"
service "db" {
  policy = "read"
  intentions = "deny"
}
service "web" { policy = "deny" }
node_prefix "" { policy = "write" }
node "n1" { policy = "deny" }
operator = "read"
acl = "read"
"#,
    )
    .unwrap();
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab, ba, "merge is order independent");
    assert_eq!(ab.services["db"], svc(Write, Some(Deny)));
    // An explicit intentions survives a merge with a rule that has none.
    assert_eq!(ab.services["web"], svc(Deny, Some(Write)));
    assert_eq!(ab.node_prefixes[""], Write);
    assert_eq!(ab.nodes["n1"], Deny);
    assert_eq!(
        (ab.operator, ab.acl, ab.mesh),
        (Some(Write), Some(Read), None)
    );
    // Merging with itself changes nothing.
    let mut aa = a.clone();
    aa.merge(&a);
    assert_eq!(aa, a);
}

#[test]
fn effective_intentions_default_from_policy() {
    assert_eq!(svc(Read, None).effective_intentions(), Read);
    assert_eq!(svc(Write, None).effective_intentions(), Read);
    assert_eq!(svc(Deny, None).effective_intentions(), Deny);
    assert_eq!(svc(Deny, Some(Write)).effective_intentions(), Write);
}

#[test]
fn hcl2_wants_one_attribute_per_line() {
    // Consul's HCL 1 parser takes this; HCL 2 (hcl-rs) refuses it, with the position.
    let e =
        Rules::from_hcl("\nservice \"a\" { policy = \"read\" intentions = \"read\" }").unwrap_err();
    assert_eq!((e.code(), e.line()), ("invalid_hcl", Some(2)), "{e}");
    // One attribute on one line is fine.
    Rules::from_hcl(r#"service "a" { policy = "read" }"#).unwrap();
}
