//! Policies (HCL and JSON rules, validation, list without rules, by name) and roles.

use super::*;

#[test]
fn policies_with_hcl_and_json_rules() {
    let (dev, root) = Dev::bootstrapped();
    let auth = Auth::Header(&root);

    let hcl = dev.put("/v1/acl/policy", auth, r#"{"Name":"web-hcl","Description":"hcl","Rules":"service \"web\" {\n  policy = \"write\"\n}\n"}"#);
    let json = dev.put(
        "/v1/acl/policy",
        auth,
        r#"{"Name":"web-json","Rules":"{\"service\":{\"web\":{\"policy\":\"read\"}}}"}"#,
    );
    assert_ne!(hcl["ID"], json["ID"]);
    assert_eq!(hcl["Name"], "web-hcl");

    let by_name = dev.ok("GET", "/v1/acl/policy/name/web-json", auth, None);
    assert_eq!(by_name["ID"], json["ID"]);
    assert!(by_name["Rules"].as_str().unwrap().contains("service"));
    let by_id = dev.ok(
        "GET",
        &format!("/v1/acl/policy/{}", hcl["ID"].as_str().unwrap()),
        auth,
        None,
    );
    assert_eq!(by_id["Description"], "hcl");

    let list = dev.ok("GET", "/v1/acl/policies", auth, None);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p.get("Rules").is_none(), "{p}");
            p["Name"].as_str().unwrap()
        })
        .collect();
    for n in ["global-management", "web-hcl", "web-json"] {
        assert!(names.contains(&n), "{names:?}");
    }

    // Names are unique; the built-in cannot go.
    let r = dev.curl("PUT", "/v1/acl/policy", auth, Some(r#"{"Name":"web-hcl"}"#));
    r.assert_refused(400, "already exists");
    dev.curl(
        "DELETE",
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        auth,
        None,
    )
    .assert_status(400);
    dev.stop();
}

#[test]
fn invalid_rules_are_refused_naming_the_field() {
    let (dev, root) = Dev::bootstrapped();
    let r = dev.curl(
        "PUT",
        "/v1/acl/policy",
        Auth::Header(&root),
        Some(r#"{"Name":"typo","Rules":"service \"db\" {\n  polcy = \"read\"\n}"}"#),
    );
    r.assert_refused(400, r#"service "db".polcy"#);
    assert!(r.body.contains("line 2"), "{}", r.body);

    let r = dev.curl(
        "PUT",
        "/v1/acl/policy",
        Auth::Header(&root),
        Some(r#"{"Name":"level","Rules":"operator = \"sudo\""}"#),
    );
    r.assert_refused(400, "operator");

    // Nothing was stored.
    dev.curl("GET", "/v1/acl/policy/name/typo", Auth::Header(&root), None)
        .assert_status(404);
    dev.stop();
}

#[test]
fn roles_link_policies_and_grant_through_tokens() {
    let (dev, root) = Dev::bootstrapped();
    let auth = Auth::Header(&root);
    let policy = dev.put(
        "/v1/acl/policy",
        auth,
        r#"{"Name":"acl-read","Rules":"acl = \"read\""}"#,
    );
    let role = dev.put(
        "/v1/acl/role",
        auth,
        r#"{"Name":"auditor","Policies":[{"Name":"acl-read"}]}"#,
    );
    assert_eq!(role["Policies"][0]["ID"], policy["ID"]);
    assert_eq!(role["Policies"][0]["Name"], "acl-read");
    let role_id = role["ID"].as_str().unwrap();
    assert_eq!(
        dev.ok("GET", "/v1/acl/role/name/auditor", auth, None)["ID"],
        role_id
    );
    assert_eq!(
        dev.ok("GET", "/v1/acl/roles", auth, None)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let token = dev.ok(
        "PUT",
        "/v1/acl/token",
        auth,
        Some(&format!(r#"{{"Roles":[{{"ID":"{role_id}"}}]}}"#)),
    );
    let secret = token["SecretID"].as_str().unwrap();
    dev.ok("GET", "/v1/acl/policies", Auth::Header(secret), None);

    // A link to a role that does not exist is refused.
    dev.curl(
        "PUT",
        "/v1/acl/token",
        auth,
        Some(r#"{"Roles":[{"Name":"nobody"}]}"#),
    )
    .assert_status(400);

    dev.ok("DELETE", &format!("/v1/acl/role/{role_id}"), auth, None);
    let r = dev.curl("GET", "/v1/acl/policies", Auth::Header(secret), None);
    assert_eq!(r.status, 403, "the role is gone: {}", r.body);
    dev.stop();
}
