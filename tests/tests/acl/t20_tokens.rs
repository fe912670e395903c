//! Tokens: who may create them, `token/self`, redaction in the list, deletion, and the places a
//! token travels in.

use super::*;

const ACL_READ_POLICY: &str = r#"{"Name":"acl-read","Rules":"acl = \"read\""}"#;

#[test]
fn anonymous_may_not_create_a_token_but_management_may() {
    let (dev, root) = Dev::bootstrapped();

    let r = dev.curl(
        "PUT",
        "/v1/acl/token",
        Auth::None,
        Some(r#"{"Description":"x"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body,
        "Permission denied: anonymous token lacks permission 'acl:write'. The anonymous token \
         is used implicitly when a request does not specify a token."
    );

    let t = dev.put(
        "/v1/acl/token",
        Auth::Header(&root),
        r#"{"Description":"ci","ExpirationTTL":"1h"}"#,
    );
    let accessor = t["AccessorID"].as_str().unwrap();
    let secret = t["SecretID"].as_str().unwrap();
    assert_eq!(accessor.len(), 36);
    assert_eq!(secret.len(), 36);
    assert_ne!(accessor, secret);
    assert!(t.get("ExpirationTTL").is_none());
    assert!(t["ExpirationTime"].as_str().is_some(), "{t}");

    // An unknown secret is not the anonymous token.
    assert_eq!(
        dev.get(
            "/v1/acl/token/self",
            Auth::Header("6a1b7a2c-0000-4000-8000-000000000000")
        ),
        (403, "ACL not found".to_string())
    );
    dev.stop();
}

#[test]
fn token_self_in_every_carrier() {
    let (dev, root) = Dev::bootstrapped();
    for auth in [Auth::Header(&root), Auth::Bearer(&root)] {
        let me = dev.ok("GET", "/v1/acl/token/self", auth, None);
        assert_eq!(me["SecretID"], root.as_str());
        assert_eq!(me["Policies"][0]["Name"], "global-management");
    }
    let me = dev.ok(
        "GET",
        &format!("/v1/acl/token/self?token={root}"),
        Auth::None,
        None,
    );
    assert_eq!(me["SecretID"], root.as_str());
    // The query parameter wins over the header, as in Consul.
    assert_eq!(
        dev.get(
            "/v1/acl/token/self?token=6a1b7a2c-0000-4000-8000-000000000000",
            Auth::Header(&root)
        ),
        (403, "ACL not found".to_string())
    );
    dev.stop();
}

#[test]
fn list_hides_secrets_from_a_read_only_token() {
    let (dev, root) = Dev::bootstrapped();
    dev.put("/v1/acl/policy", Auth::Header(&root), ACL_READ_POLICY);
    let reader = dev.put(
        "/v1/acl/token",
        Auth::Header(&root),
        r#"{"Description":"reader","Policies":[{"Name":"acl-read"}]}"#,
    );
    let reader_secret = reader["SecretID"].as_str().unwrap();

    let seen_by_reader = dev.ok("GET", "/v1/acl/tokens", Auth::Header(reader_secret), None);
    let list = seen_by_reader.as_array().unwrap();
    assert!(list.len() >= 3, "{seen_by_reader}");
    assert!(
        list.iter().all(|t| t["SecretID"] == "<hidden>"),
        "{seen_by_reader}"
    );
    let one = dev.ok(
        "GET",
        &format!("/v1/acl/token/{}", reader["AccessorID"].as_str().unwrap()),
        Auth::Header(reader_secret),
        None,
    );
    assert_eq!(one["SecretID"], "<hidden>");

    let seen_by_root = dev.ok("GET", "/v1/acl/tokens", Auth::Header(&root), None);
    assert!(
        seen_by_root
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["SecretID"] == reader_secret),
        "{seen_by_root}"
    );

    // acl:read does not write.
    let r = dev.curl(
        "PUT",
        "/v1/acl/token",
        Auth::Header(reader_secret),
        Some("{}"),
    );
    r.assert_refused(403, "lacks permission 'acl:write'");
    dev.stop();
}

#[test]
fn a_deleted_token_is_acl_not_found() {
    let (dev, root) = Dev::bootstrapped();
    let t = dev.put(
        "/v1/acl/token",
        Auth::Header(&root),
        r#"{"Description":"tmp"}"#,
    );
    let (accessor, secret) = (
        t["AccessorID"].as_str().unwrap(),
        t["SecretID"].as_str().unwrap(),
    );
    dev.ok("GET", "/v1/acl/token/self", Auth::Header(secret), None);

    let deleted = dev.ok(
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        Auth::Header(&root),
        None,
    );
    assert_eq!(deleted, serde_json::json!(true));
    let r = dev.curl("GET", "/v1/acl/token/self", Auth::Header(secret), None);
    assert_eq!((r.status, r.body.as_str()), (403, "ACL not found"));
    let r = dev.curl(
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        Auth::Header(&root),
        None,
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "Cannot find token to delete")
    );
    dev.stop();
}

#[test]
fn clone_copies_grants_under_new_ids() {
    let (dev, root) = Dev::bootstrapped();
    let p = dev.put("/v1/acl/policy", Auth::Header(&root), ACL_READ_POLICY);
    let body = format!(
        r#"{{"Description":"orig","Policies":[{{"ID":"{}"}}],"ServiceIdentities":[{{"ServiceName":"web"}}]}}"#,
        p["ID"].as_str().unwrap()
    );
    let orig = dev.put("/v1/acl/token", Auth::Header(&root), &body);
    let id = orig["AccessorID"].as_str().unwrap();
    let path = format!("/v1/acl/token/{id}/clone");

    // Cloning needs acl:write: the original (acl:read only) may not clone itself.
    let own = orig["SecretID"].as_str().unwrap();
    dev.curl("PUT", &path, Auth::Header(own), None)
        .assert_refused(403, "lacks permission 'acl:write'");

    let clone = dev.put(&path, Auth::Header(&root), r#"{"Description":"copy"}"#);
    assert_ne!(clone["AccessorID"], orig["AccessorID"]);
    assert_ne!(clone["SecretID"], orig["SecretID"]);
    assert_eq!(clone["Description"], "copy");
    assert_eq!(clone["Policies"], orig["Policies"]);
    assert_eq!(clone["ServiceIdentities"], orig["ServiceIdentities"]);
    // The clone's secret works on its own.
    let me = dev.ok(
        "GET",
        "/v1/acl/token/self",
        Auth::Header(clone["SecretID"].as_str().unwrap()),
        None,
    );
    assert_eq!(me["AccessorID"], clone["AccessorID"]);
    // An unknown original is refused as Consul does.
    dev.curl(
        "PUT",
        "/v1/acl/token/6a1b7a2c-0000-4000-8000-000000000000/clone",
        Auth::Header(&root),
        None,
    )
    .assert_refused(403, "Cannot find token to clone");
    dev.stop();
}
