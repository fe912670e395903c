//! `meshctl acl …` against a real `meshd dev --acl`: Consul's verbs and single-dash flags,
//! the token from `MESH_HTTP_TOKEN` or `--token`, rules from a file, and the refusals an
//! operator sees (anonymous writes, a second bootstrap, invalid rules).

use std::process::Output;

use mesh_tests::process::stdout_ok;

use super::*;

/// `meshctl --http-addr ADDR <args>` with `MESH_HTTP_TOKEN` set to `token` (or unset).
fn meshctl(dev: &Dev, token: Option<&str>, args: &[&str]) -> Output {
    mesh_tests::process::meshctl_as(&dev.addr.to_string(), token, args)
}

fn json_ok(out: &Output, what: &str) -> Value {
    serde_json::from_str(&stdout_ok(out, what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn operator_workflow_with_consul_flags() {
    let dev = Dev::start(true);

    // Bootstrap once, as Consul's `acl bootstrap` prints it; the second is refused.
    let out = meshctl(&dev, None, &["acl", "bootstrap", "-format=json"]);
    let root = json_ok(&out, "bootstrap")["SecretID"]
        .as_str()
        .unwrap()
        .to_string();
    let again = meshctl(&dev, None, &["acl", "bootstrap"]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("ACL bootstrap no longer allowed"), "{err}");
    assert!(
        !err.contains(&root),
        "the refusal must not print a secret: {err}"
    );

    // Anonymous may not create a policy.
    let denied = meshctl(&dev, None, &["acl", "policy", "create", "-name", "x"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("lacks permission 'acl:write'"),
        "{denied:?}"
    );

    // A policy from an HCL file (`-rules @FILE`), in Consul's layout.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("db.hcl");
    std::fs::write(
        &rules,
        "service \"db\" {\n  policy = \"write\"\n  intentions = \"write\"\n}\n",
    )
    .unwrap();
    let rules_arg = format!("@{}", rules.display());
    let out = meshctl(
        &dev,
        Some(&root),
        &[
            "acl", "policy", "create", "-name", "db-owner", "-rules", &rules_arg,
        ],
    );
    let text = stdout_ok(&out, "policy create");
    let field = |text: &str, label: &str, value: &str| {
        text.lines()
            .any(|l| l.starts_with(label) && l[label.len()..].trim() == value)
    };
    assert!(field(&text, "Name:", "db-owner"), "{text}");
    assert!(text.contains("Rules:\nservice \"db\""), "{text}");

    // Invalid rules: refused with the field and line, nothing created.
    std::fs::write(&rules, "service \"db\" {\n  polcy = \"write\"\n}\n").unwrap();
    let bad = meshctl(
        &dev,
        Some(&root),
        &[
            "acl", "policy", "create", "-name", "bad", "-rules", &rules_arg,
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("polcy") && err.contains("line 2"), "{err}");
    let names: Vec<String> = json_ok(
        &meshctl(
            &dev,
            Some(&root),
            &["acl", "policy", "list", "-format", "json"],
        ),
        "policy list",
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|p| p["Name"].as_str().unwrap().to_string())
    .collect();
    assert!(names.contains(&"db-owner".to_string()), "{names:?}");
    assert!(!names.contains(&"bad".to_string()), "{names:?}");

    // A token with the policy by name and a service identity, with `--token` this time.
    let out = meshctl(
        &dev,
        None,
        &[
            "--token",
            &root,
            "acl",
            "token",
            "create",
            "-description",
            "web and db",
            "-policy-name",
            "db-owner",
            "-service-identity",
            "web",
            "-format",
            "json",
        ],
    );
    let token = json_ok(&out, "token create");
    let secret = token["SecretID"].as_str().unwrap().to_string();
    assert_eq!(token["Policies"][0]["Name"], "db-owner");
    assert_eq!(token["ServiceIdentities"][0]["ServiceName"], "web");

    // The new token reads itself in Consul's layout; it cannot write ACLs.
    let text = stdout_ok(
        &meshctl(&dev, Some(&secret), &["acl", "token", "read", "-self"]),
        "self",
    );
    assert!(field(&text, "Description:", "web and db"), "{text}");
    assert!(
        text.contains("Service Identities:\n   web (Datacenters: all)"),
        "{text}"
    );
    let denied = meshctl(&dev, Some(&secret), &["acl", "token", "list"]);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");

    // Deleted, the token is no longer accepted.
    let accessor = token["AccessorID"].as_str().unwrap();
    stdout_ok(
        &meshctl(
            &dev,
            Some(&root),
            &["acl", "token", "delete", "-id", accessor],
        ),
        "delete",
    );
    let gone = meshctl(&dev, Some(&secret), &["acl", "token", "read", "-self"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("ACL not found"),
        "{gone:?}"
    );
}
