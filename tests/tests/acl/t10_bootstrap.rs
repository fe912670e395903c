//! The one-time bootstrap, and the ACL API with ACLs off.

use super::*;

#[test]
fn bootstrap_works_once() {
    let dev = Dev::start(true);
    let first = dev.ok("PUT", "/v1/acl/bootstrap", Auth::None, None);
    let secret = first["SecretID"].as_str().unwrap();
    assert_eq!(first["ID"], first["SecretID"], "Consul's legacy ID field");
    assert_eq!(first["Description"], "Bootstrap Token (Global Management)");
    assert_eq!(
        first["Policies"],
        serde_json::json!([{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}])
    );
    assert!(
        first["CreateTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let second = dev.curl("PUT", "/v1/acl/bootstrap", Auth::Header(secret), None);
    assert_eq!(second.status, 403, "{}", second.body);
    let reset = first["CreateIndex"].as_u64().unwrap();
    assert_eq!(
        second.body,
        format!("Permission denied: ACL bootstrap no longer allowed (reset index: {reset})")
    );

    // The bootstrap seeded the anonymous token.
    let tokens = dev.ok("GET", "/v1/acl/tokens", Auth::Header(secret), None);
    let anonymous = "00000000-0000-0000-0000-000000000002";
    let listed = tokens.as_array().unwrap();
    assert!(
        listed.iter().any(|t| t["AccessorID"] == anonymous),
        "{tokens}"
    );
    dev.stop();
}

#[test]
fn acls_off_answer_401_acl_support_disabled() {
    let dev = Dev::start(false);
    for (method, path) in [
        ("PUT", "/v1/acl/bootstrap"),
        ("PUT", "/v1/acl/token"),
        ("GET", "/v1/acl/token/self"),
        ("GET", "/v1/acl/tokens"),
        ("GET", "/v1/acl/policies"),
        (
            "DELETE",
            "/v1/acl/role/00000000-0000-0000-0000-000000000009",
        ),
    ] {
        let r = dev.curl(method, path, Auth::None, None);
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, "ACL support disabled"),
            "{method} {path}"
        );
    }
    // The rest of the API is untouched.
    dev.curl("GET", "/v1/catalog/services", Auth::None, None)
        .assert_status(200);
    dev.stop();
}
