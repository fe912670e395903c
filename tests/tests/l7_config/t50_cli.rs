//! `meshctl`: `intention check --http-*` with the proxy's matcher (in-process CLI, exit codes),
//! and the `config` verbs as a real process.

use clap::Parser;
use mesh_control::cli::{Cli, run};
use mesh_tests::process::meshctl;

use super::{API_INTENTIONS, Env, put};

async fn check(addr: std::net::SocketAddr, args: &[&str]) -> i32 {
    let mut argv = vec![
        "meshctl".to_string(),
        "--http-addr".into(),
        addr.to_string(),
        "intention".into(),
        "check".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    run(Cli::try_parse_from(&argv).expect("valid arguments")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intention_check_http_cases() {
    let env = Env::start().await;
    let agent = env.agent_http;
    let r = put(agent, "/v1/config", API_INTENTIONS).await;
    assert_eq!(r.text().trim(), "true");

    // (args, split at spaces; expected exit code: 0 allowed, 2 denied)
    let cases: &[(&str, i32)] = &[
        // Permissions[1]: regex path + GET/HEAD.
        ("web api --http-method GET --http-path /v1/items", 0),
        ("web api --http-method HEAD --http-path /v2/x?q=1", 0),
        ("web api --http-method DELETE --http-path /v1/items", 2),
        ("web api --http-path /v1/items", 0),
        // Permissions[0] (deny /admin) wins over nothing else: first match.
        ("web api --http-path /admin/v1/x", 2),
        // Permissions[2]: POST /upload with X-Tenant suffix and no X-Debug.
        (
            "web api --http-method POST --http-path /upload --http-header X-Tenant=a.corp",
            0,
        ),
        (
            "web api --http-method POST --http-path /upload --http-header X-Tenant=a.com",
            2,
        ),
        (
            "web api --http-method POST --http-path /upload --http-header X-Tenant=a.corp --http-header X-Debug=1",
            2,
        ),
        // No permission matches: default policy (deny).
        ("web api --http-path /other", 2),
        // L4 intention: allowed whatever the request.
        ("ops api --http-method DELETE --http-path /admin", 0),
        // No intention at all: default policy.
        ("nobody api --http-path /v1/x", 2),
        // Without --http-* flags it is the L4 check, which denies an L7 intention.
        ("web api", 2),
        ("ops api", 0),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.split_whitespace().collect();
        assert_eq!(
            check(agent, &args).await,
            *want,
            "meshctl intention check {args:?}"
        );
    }
    // Bad flags are usage errors (exit 1), not decisions.
    assert_eq!(
        check(agent, &["web", "api", "--http-path", "nope"]).await,
        1
    );
    assert_eq!(
        check(agent, &["web", "api", "--http-header", "novalue"]).await,
        1
    );

    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_verbs_as_a_process() {
    let env = Env::start().await;
    let addr = env.agent_http.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.json");
    std::fs::write(&file, API_INTENTIONS).unwrap();
    let defaults = dir.path().join("defaults.json");
    std::fs::write(
        &defaults,
        r#"{"Kind":"service-defaults","Name":"api","Protocol":"http"}"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"(("}}]}]}"#,
    )
    .unwrap();

    let out = tokio::task::spawn_blocking({
        let addr = addr.clone();
        let (file, defaults, bad) = (file.clone(), defaults.clone(), bad.clone());
        move || {
            let s = |p: &std::path::Path| p.display().to_string();
            let (file, defaults, bad) = (s(&file), s(&defaults), s(&bad));
            let api_defaults = ["--kind", "service-defaults", "--name", "api"];
            let on_api_defaults =
                |verb: &'static str| [&["config", verb][..], &api_defaults].concat();
            let calls: Vec<Vec<&str>> = vec![
                vec!["config", "write", &file],
                vec!["config", "write", &defaults],
                on_api_defaults("read"),
                vec!["config", "list", "--kind", "service-intentions"],
                vec!["config", "write", &bad],
                vec![
                    "intention",
                    "check",
                    "web",
                    "api",
                    "--http-method",
                    "GET",
                    "--http-path",
                    "/v1/x",
                ],
                on_api_defaults("delete"),
                on_api_defaults("read"),
            ];
            calls
                .iter()
                .map(|args| meshctl(&addr, args))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    let text = |i: usize| {
        (
            out[i].status.code(),
            String::from_utf8_lossy(&out[i].stdout).into_owned(),
            String::from_utf8_lossy(&out[i].stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = text(0);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("Config entry written: service-intentions/api"),
        "{stdout}"
    );
    assert_eq!(text(1).0, Some(0));
    let (code, stdout, _) = text(2);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("read prints JSON");
    assert_eq!(v["Protocol"], "http");
    assert_eq!(text(3).1.trim(), "api");
    let (code, _, stderr) = text(4);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("PathRegex is not a valid regular expression"),
        "{stderr}"
    );
    let (code, stdout, _) = text(5);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("Allowed\n"), "{stdout}");
    assert!(
        stdout.contains("Permissions[1] (allow) of L7 intention \"web\" => \"api\""),
        "{stdout}"
    );
    let (code, stdout, _) = text(6);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("Config entry deleted: service-defaults/api"));
    let (code, _, stderr) = text(7);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("404"), "{stderr}");

    env.shutdown().await;
}
