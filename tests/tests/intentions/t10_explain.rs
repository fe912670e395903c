//! `meshctl intention check` and `match --explain` as processes against `meshd dev`: the
//! output names what decided (the intention's ID and precedence, the L7 permission index, the
//! default policy, the trust-domain and namespace checks), `-format=json` parses, the exit
//! codes are Consul's (0 allowed, 2 denied, 1 error), and the proxy's log line for a decision
//! uses the same words as meshctl's `Reason:` line for the same pair.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use mesh_control::fsm::Command;
use mesh_control::intentions::DefaultPolicy;
use mesh_tests::chain::{Chain, roundtrip};
use mesh_tests::dev::{meshd_dev, ok, set_intention, wait_ca};
use mesh_tests::process::{eventually, meshctl, meshctl_as};
use serde_json::{Value, json};

/// `meshctl --http-addr ADDR intention ARGS` → (exit code, stdout, stderr).
fn intention(addr: SocketAddr, args: &[&str]) -> (Option<i32>, String, String) {
    let mut argv = vec!["intention"];
    argv.extend_from_slice(args);
    let Output {
        status,
        stdout,
        stderr,
    } = meshctl(&addr.to_string(), &argv);
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The line of `out` starting with `prefix`, without it.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

fn intention_id(addr: SocketAddr, src: &str, dst: &str) -> String {
    let v = ok(
        "GET",
        addr,
        &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
        None,
    );
    let id = v["ID"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "{v}");
    id
}

/// web → db allow (9), * → db deny (8), and L7 permissions web → api (deny /admin, allow /).
fn write_intentions(addr: SocketAddr) {
    set_intention(addr, "web", "db", "allow");
    set_intention(addr, "*", "db", "deny");
    ok(
        "PUT",
        addr,
        "/v1/config",
        Some(&json!({
            "Kind": "service-intentions", "Name": "api",
            "Sources": [{"Name": "web", "Permissions": [
                {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                {"Action": "allow", "HTTP": {"PathPrefix": "/"}},
            ]}],
        })),
    );
}

#[test]
fn check_names_the_deciding_rule_and_keeps_the_exit_codes() {
    let meshd = meshd_dev();
    let addr = meshd.http_addr;
    wait_ca(addr);
    write_intentions(addr);
    let web_db = intention_id(addr, "web", "db");
    let any_db = intention_id(addr, "*", "db");

    // Exact-name intention: allowed, named with precedence and ID.
    let (code, out, err) = intention(addr, &["check", "web", "db"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().next(), Some("Allowed"), "{out}");
    assert_eq!(
        line(&out, "Reason: "),
        format!(r#"Matched L4 intention "web" => "db" (allow, precedence 9, ID {web_db})"#)
    );
    assert_eq!(
        line(&out, "Decided by: "),
        format!(r#"intention "web" => "db" (precedence 9, ID {web_db})"#)
    );
    assert!(
        line(&out, "Check trust-domain: ").starts_with("passed"),
        "{out}"
    );
    assert!(
        line(&out, "Check namespace: ").starts_with("passed"),
        "{out}"
    );

    // Wildcard source: denied by precedence 8.
    let (code, out, _) = intention(addr, &["check", "api", "db"]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(out.lines().next(), Some("Denied"), "{out}");
    assert_eq!(
        line(&out, "Decided by: "),
        format!(r#"intention "*" => "db" (precedence 8, ID {any_db})"#)
    );

    // No intention: the default policy (deny in dev).
    let (code, out, _) = intention(addr, &["check", "web", "cache"]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(line(&out, "Decided by: "), "default policy (deny)");
    assert!(
        line(&out, "Reason: ").contains("default policy (deny)"),
        "{out}"
    );

    // L7: the permission index, in text and in JSON (Consul's single-dash flag spelling).
    let (code, out, _) = intention(addr, &["check", "web", "api", "--http-path", "/v1/x"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line(&out, "Decided by: ")
            .starts_with(r#"Permissions[1] of intention "web" => "api" (precedence 9"#),
        "{out}"
    );
    let (code, out, _) = intention(
        addr,
        &[
            "check",
            "-format=json",
            "web",
            "api",
            "-http-path",
            "/admin/x",
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Allowed"], false);
    assert_eq!(v["Decided"]["Kind"], "permission");
    assert_eq!(v["Decided"]["PermissionIndex"], 0);
    assert_eq!(v["Decided"]["Intention"]["SourceName"], "web");
    assert_eq!(v["Decided"]["Intention"]["Precedence"], 9);
    assert_eq!(v["Decided"]["DefaultPolicy"], "deny");
    assert_eq!(v["Path"], "/admin/x");
    assert!(
        v["Reason"]
            .as_str()
            .unwrap()
            .contains("Permissions[0] (deny)"),
        "{v}"
    );

    // JSON for an L4 decision: the intention with its ID, both checks.
    let (code, out, _) = intention(addr, &["check", "--format", "json", "web", "db"]);
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Decided"]["Kind"], "intention");
    assert_eq!(v["Decided"]["Intention"]["ID"], web_db.as_str());
    assert_eq!(v["Decided"]["Intention"]["Action"], "allow");
    assert_eq!(v["Decided"]["PermissionIndex"], Value::Null);
    let checks: Vec<(&str, bool)> = v["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["Name"].as_str().unwrap(), c["Passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(checks, [("trust-domain", true), ("namespace", true)]);

    // Another namespace and another trust domain, as SPIFFE IDs.
    let td = ok("GET", addr, "/v1/connect/ca/roots", None)["TrustDomain"]
        .as_str()
        .unwrap()
        .to_string();
    let team_a = format!("spiffe://{td}/ns/team-a/dc/dc1/svc/web");
    let (code, out, _) = intention(addr, &["check", &team_a, "db"]);
    assert_eq!(code, Some(2), "{out}");
    let ns = line(&out, "Check namespace: ");
    assert!(ns.starts_with("failed") && ns.contains("team-a"), "{out}");
    assert!(ns.contains(r#""web" => "db""#), "{out}");
    let (code, out, _) = intention(
        addr,
        &[
            "check",
            "spiffe://other.consul/ns/default/dc/dc1/svc/web",
            "db",
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(line(&out, "Decided by: "), "the trust-domain check (deny)");
    assert!(
        line(&out, "Check trust-domain: ")
            .starts_with(r#"failed: peer is in trust domain "other.consul""#),
        "{out}"
    );

    // A malformed SPIFFE ID is a usage error (exit 1), not a decision.
    let (code, out, err) = intention(addr, &["check", "spiffe://x/nope", "db"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("not a SPIFFE service ID"), "{err}");
}

/// Default allow (set through Raft: no flag sets the intentions' default), against the agent a
/// server embeds; meshctl runs as a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_default_allow() {
    let (h, _dir) = super::start().await;
    h.server
        .write(Command::SetDefaultPolicy {
            policy: DefaultPolicy::Allow,
        })
        .await
        .unwrap();
    let addr = h.http_addr;
    let (code, out, _) =
        tokio::task::spawn_blocking(move || intention(addr, &["check", "web", "db"]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().next(), Some("Allowed"), "{out}");
    assert_eq!(line(&out, "Decided by: "), "default policy (allow)");
    assert_eq!(
        line(&out, "Reason: "),
        "Default behavior configured by the default policy (allow)"
    );
    h.shutdown().await;
}

#[test]
fn match_explain_lists_every_intention_in_evaluation_order() {
    let meshd = meshd_dev();
    let addr = meshd.http_addr;
    wait_ca(addr);
    write_intentions(addr);
    let ids = [
        intention_id(addr, "web", "api"),
        intention_id(addr, "web", "db"),
        intention_id(addr, "*", "db"),
    ];

    let (code, out, _) = intention(
        addr,
        &["match", "--explain", "-destination", "db", "--peer", "api"],
    );
    assert_eq!(code, Some(0), "{out}");
    let want = [
        format!(
            r#""web" => "api"  precedence 9  L7 permissions  not matched: destination is db  ID {}"#,
            ids[0]
        ),
        format!(
            r#""web" => "db"  precedence 9  allow  not matched: source is api  ID {}"#,
            ids[1]
        ),
        format!(
            r#""*" => "db"  precedence 8  deny  matched: decides  ID {}"#,
            ids[2]
        ),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");

    // For web the exact intention decides and the wildcard is not reached.
    let (_, out, _) = intention(
        addr,
        &["match", "--explain", "--destination", "db", "--peer", "web"],
    );
    assert!(out.contains("allow  matched: decides"), "{out}");
    assert!(
        out.contains(r#"deny  not reached: a higher-precedence intention decided ("web" => "db")"#),
        "{out}"
    );
    // No intention for the pair: said so.
    let (_, out, _) = intention(
        addr,
        &[
            "match",
            "--explain",
            "--destination",
            "cache",
            "--peer",
            "web",
        ],
    );
    assert!(out.contains("the default policy decides"), "{out}");

    // One side only, as JSON: every intention, the matching ones marked.
    let (code, out, _) = intention(
        addr,
        &["match", "--explain", "-source", "web", "-format=json"],
    );
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows: Vec<(&str, &str, u64, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["SourceName"].as_str().unwrap(),
                r["DestinationName"].as_str().unwrap(),
                r["Precedence"].as_u64().unwrap(),
                r["Outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("web", "api", 9, "matched"),
            ("web", "db", 9, "matched"),
            ("*", "db", 8, "matched"),
        ]
    );
    let (_, out, _) = intention(addr, &["match", "--explain", "-source", "api"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("not matched: source is api"))
            .count(),
        2,
        "{out}"
    );
    // --peer needs --explain.
    let (code, _, _) = intention(addr, &["match", "-destination", "db", "--peer", "web"]);
    assert_eq!(code, Some(2), "clap usage error");
}

/// Waits until db's proxy has logged a denial of web with `reason`, retrying the connection.
fn wait_denial_logged(chain: &Chain, reason: &str) -> String {
    eventually(
        "db's proxy logs the denial",
        Duration::from_secs(20),
        || {
            let back = roundtrip(chain.upstream, b"x").unwrap_or_default();
            assert!(back.is_empty(), "denied connection echoed {back:?}");
            chain
                .db
                .log()
                .lines()
                .find(|l| l.contains("inbound connection denied") && l.contains(reason))
                .map(str::to_string)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()))
}

#[test]
fn proxy_log_and_meshctl_use_the_same_words() {
    let meshd = meshd_dev();
    let http = meshd.http_addr;
    let chain = Chain::start(http);

    // Default policy: meshctl's reason is in the proxy's denial line, word for word.
    let (code, out, _) = intention(http, &["check", "web", "db"]);
    assert_eq!(code, Some(2), "{out}");
    let reason = line(&out, "Reason: ").to_string();
    assert!(reason.contains("default policy (deny)"), "{out}");
    let logged = wait_denial_logged(&chain, &reason);
    assert!(logged.contains(&format!("reason={reason}")), "{logged}");

    // An intention: the same `Matched L4 intention ...` text, ID and precedence included.
    set_intention(http, "web", "db", "deny");
    let id = intention_id(http, "web", "db");
    let want = format!(r#"Matched L4 intention "web" => "db" (deny, precedence 9, ID {id})"#);
    let out = eventually(
        "meshctl sees the intention",
        Duration::from_secs(20),
        || {
            let (code, out, _) = intention(http, &["check", "web", "db"]);
            (code == Some(2) && out.contains(&want)).then_some(out)
        },
    )
    .unwrap();
    assert_eq!(line(&out, "Reason: "), want);
    let logged = wait_denial_logged(&chain, &want);
    assert!(logged.contains(&format!("reason={want}")), "{logged}");
}

/// A token that may ask the server's check (`service:read` on db, `intentions = "deny"`) but not read db's
/// intentions gets the verdict alone, Consul's exit code, and why there is no explanation on
/// stderr; the management token gets the explanation.
#[test]
fn check_without_intentions_read_falls_back_to_the_verdict() {
    let mut args = mesh_tests::dev::dev_args();
    args.push("--acl".into());
    let meshd = mesh_tests::process::Meshd::spawn("dev", &args).expect("meshd dev --acl starts");
    let addr = meshd.http_addr.to_string();
    wait_ca(meshd.http_addr);
    let secret = |out: Output| -> String {
        let text = mesh_tests::process::stdout_ok(&out, "meshctl");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["SecretID"].as_str().unwrap().to_string()
    };
    let root = secret(meshctl(&addr, &["acl", "bootstrap", "--format", "json"]));
    let as_root = |args: &[&str]| meshctl_as(&addr, Some(&root), args);
    mesh_tests::process::stdout_ok(
        &as_root(&[
            "acl",
            "policy",
            "create",
            "--name",
            "db-read",
            "--rules",
            "service \"db\" {\n  policy = \"read\"\n  intentions = \"deny\"\n}",
        ]),
        "policy create",
    );
    let reader = secret(as_root(&[
        "acl",
        "token",
        "create",
        "--policy-name",
        "db-read",
        "--format",
        "json",
    ]));
    mesh_tests::process::stdout_ok(
        &as_root(&["intention", "create", "--allow", "web", "db"]),
        "intention create",
    );

    let out = meshctl_as(&addr, Some(&reader), &["intention", "check", "web", "db"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Allowed\n");
    assert!(
        stderr.contains("no explanation") && stderr.contains("intentions:read"),
        "{stderr}"
    );
    let out = meshctl_as(&addr, Some(&reader), &["intention", "check", "api", "db"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Denied\n");

    let out = as_root(&["intention", "check", "web", "db"]);
    let text = mesh_tests::process::stdout_ok(&out, "check as root");
    assert!(
        line(&text, "Reason: ").starts_with(r#"Matched L4 intention "web" => "db" (allow"#),
        "{text}"
    );
}
