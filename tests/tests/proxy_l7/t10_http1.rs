//! HTTP/1.1: the declared protocol learned from the agent, every permission match rule
//! (path, method, the six header rules), first-match order, fallback to the default policy,
//! metrics, hop-by-hop headers, keep-alive and pipelining across a 403.

use serde_json::json;

use crate::apps::HttpApp;
use crate::{L7Chain, curl, raw_exchange, set_protocol};

fn perms() -> serde_json::Value {
    let h = |path: &str, header: serde_json::Value| json!({"Action": "allow", "HTTP": {"PathExact": path, "Header": [header]}});
    json!([
        // 0 and 1: same match, deny first: first match wins.
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/admin"}},
        h("/present", json!({"Name": "X-Present", "Present": true})),
        h("/exact", json!({"Name": "x-exact", "Exact": "yes"})),
        h("/prefix", json!({"Name": "x-prefix", "Prefix": "abc"})),
        h("/suffix", json!({"Name": "x-suffix", "Suffix": "xyz"})),
        h("/regex", json!({"Name": "x-regex", "Regex": "v[0-9]+"})),
        h("/invert", json!({"Name": "x-env", "Exact": "prod", "Invert": true})),
        {"Action": "allow", "HTTP": {"PathPrefix": "/api/", "Methods": ["GET", "HEAD"]}},
        {"Action": "allow", "HTTP": {"PathRegex": "/items/[0-9]+"}},
    ])
}

#[test]
fn permissions_decide_each_request_after_protocol_discovery() {
    let app = HttpApp::start(false);
    // No service-defaults entry yet: db is tcp, and an intention with Permissions denies at L4.
    let chain = L7Chain::start(app.port(), None, &[]);
    chain.set_permissions(perms());
    let r = curl(&[&chain.url("/api/x")]);
    assert_eq!(r.status, 0, "tcp destination must refuse at L4: {r:?}");
    assert!(app.seen.requests().is_empty());

    // The protocol arrives by blocking query and applies to new connections.
    set_protocol(chain.http(), "db", "http");
    chain.wait_status("/api/x", 200);

    let cases: &[(&str, &[&str], u16)] = &[
        // path prefix + methods
        ("/api/x", &[], 200),
        ("/api/x", &["-X", "POST"], 403),
        ("/api/x", &["-I"], 200),
        // first match: the deny at index 0 wins over the allow at index 1
        ("/admin/users", &[], 403),
        // path regex is a full match
        ("/items/42", &[], 200),
        ("/items/42x", &[], 403),
        // header rules, each with a matching and a non-matching request
        // curl's `name;` sends the header with an empty value: present all the same.
        ("/present", &["-H", "x-present;"], 200),
        ("/present", &["-H", "x-present: 1"], 200),
        ("/present", &[], 403),
        ("/exact", &["-H", "x-exact: yes"], 200),
        ("/exact", &["-H", "x-exact: yes!"], 403),
        ("/prefix", &["-H", "x-prefix: abcdef"], 200),
        ("/prefix", &["-H", "x-prefix: xabc"], 403),
        ("/suffix", &["-H", "x-suffix: 123xyz"], 200),
        ("/suffix", &["-H", "x-suffix: xyz123"], 403),
        ("/regex", &["-H", "x-regex: v12"], 200),
        ("/regex", &["-H", "x-regex: v12a"], 403),
        ("/invert", &["-H", "x-env: dev"], 200),
        ("/invert", &["-H", "x-env: prod"], 403),
        // Envoy semantics: an absent header fails a value match, inverted or not.
        ("/invert", &[], 403),
        // no permission matches: the default policy (deny in `meshd dev`)
        ("/other", &[], 403),
        // the query string is not part of the path
        ("/exact?x=1", &["-H", "x-exact: yes"], 200),
    ];
    for (path, args, want) in cases {
        let url = chain.url(path);
        let mut a: Vec<&str> = args.to_vec();
        a.push(&url);
        let r = curl(&a);
        assert_eq!(r.status, *want, "{path} {args:?}: {r:?}");
        if *want == 403 {
            assert_eq!(r.body.trim(), "access denied by mesh intentions");
        }
    }
    // Denied requests never reached the application; allowed ones did, once each.
    let seen = app.seen.requests();
    assert!(
        seen.iter()
            .all(|l| !l.contains("/admin") && !l.contains("/other") && !l.starts_with("POST")),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|l| *l == "GET /exact").count(), 2);
    assert_eq!(seen.iter().filter(|l| *l == "GET /present").count(), 2);

    // One log line per denial, naming source, destination, method, path and the rule.
    let log = chain.db.log();
    let line = log
        .lines()
        .find(|l| l.contains("inbound request denied") && l.contains("/admin/users"))
        .unwrap_or_else(|| panic!("no denial line:\n{log}"));
    for want in [
        "web",
        "destination=db",
        "method=GET",
        "Permissions[0] (deny)",
    ] {
        assert!(line.contains(want), "{want:?} missing in {line}");
    }
    let line = log
        .lines()
        .find(|l| l.contains("inbound request denied") && l.contains("path=/other"))
        .unwrap();
    assert!(line.contains("default policy (deny)"), "{line}");

    // Metrics by decision and by matched rule (intention key + permission index, or default).
    let m = |labels: &[&str]| chain.db.metric("meshproxy_http_requests_total", labels);
    assert!(m(&["decision=\"deny\"", "rule=\"web=>db#0\""]) >= 1.0);
    assert_eq!(m(&["decision=\"allow\"", "rule=\"web=>db#1\""]), 0.0);
    assert!(m(&["decision=\"allow\"", "rule=\"web=>db#3\""]) >= 2.0);
    assert!(
        m(&[
            "decision=\"deny\"",
            "rule=\"default\"",
            "reason=\"no_permission_matched\""
        ]) >= 1.0
    );
    assert!(
        chain
            .db
            .metric("meshproxy_http_responses_total", &["class=\"4xx\""])
            >= 1.0
    );
}

#[test]
fn hop_by_hop_headers_do_not_cross_the_proxy() {
    let (_app, chain) = L7Chain::http1(
        json!([{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]),
        "/",
    );
    let r = curl(&[
        "-H",
        "Connection: x-private, keep-alive",
        "-H",
        "X-Private: secret",
        "-H",
        "Keep-Alive: timeout=9",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "TE: trailers",
        "-H",
        "X-End-To-End: 1",
        &chain.url("/hop"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let got = r
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("x-app-headers: "))
        .unwrap_or_else(|| panic!("{r:?}"))
        .trim()
        .to_string();
    let names: Vec<&str> = got.split(',').collect();
    assert!(names.contains(&"x-end-to-end"), "{got}");
    assert!(names.contains(&"te"), "TE: trailers is end to end: {got}");
    for hop in ["connection", "x-private", "keep-alive", "proxy-connection"] {
        assert!(!names.contains(&hop), "{hop} reached the app: {got}");
    }
    // The app's own Keep-Alive response header does not reach the client either.
    assert!(
        !r.headers.contains("keep-alive: timeout=5"),
        "{}",
        r.headers
    );
}

#[test]
fn connection_stays_usable_after_a_403_keep_alive_and_pipelined() {
    let (app, chain) = L7Chain::http1(
        json!([{"Action": "allow", "HTTP": {"PathPrefix": "/ok"}}]),
        "/ok",
    );

    // Keep-alive: curl reuses its connection for the second URL (num_connects 0).
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{num_connects}\n"])
        .args([chain.url("/denied"), chain.url("/ok/1"), chain.url("/ok/2")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "403 1\n200 0\n200 0\n", "{text}");
    // The same with a request body the denial leaves unread: hyper drains it, and the
    // connection is still reused.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-d", "some form data"])
        .args(["-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{num_connects}\n"])
        .args([chain.url("/denied"), chain.url("/ok/post")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403 1\n200 0\n");
    assert!(app.seen.requests().contains(&"POST /ok/post".to_string()));

    // Pipelining: three requests written at once, a denied one in the middle.
    let raw = b"GET /ok/a HTTP/1.1\r\nHost: db\r\n\r\n\
GET /nope HTTP/1.1\r\nHost: db\r\n\r\n\
GET /ok/b HTTP/1.1\r\nHost: db\r\n\r\n";
    let got = raw_exchange(chain.upstream, raw, |b| {
        String::from_utf8_lossy(b).contains("ok GET /ok/b")
    });
    let a = got.find("ok GET /ok/a").expect(&got);
    let denied = got.find("HTTP/1.1 403").expect(&got);
    let b = got.find("ok GET /ok/b").expect(&got);
    assert!(a < denied && denied < b, "responses out of order: {got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 3, "{got}");

    // A live connection is not closed when the intention changes: its next request is
    // decided against the new permissions.
    let mut s = std::net::TcpStream::connect(chain.upstream).unwrap();
    let get = |s: &mut std::net::TcpStream, path: &str| {
        use std::io::Write;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: db\r\n\r\n").as_bytes())
            .unwrap();
        let got = crate::read_until(s, |b| {
            let t = String::from_utf8_lossy(b);
            t.contains(&format!("ok GET {path}")) || t.contains("mesh intentions")
        });
        String::from_utf8_lossy(&got).to_string()
    };
    assert!(get(&mut s, "/ok/live").starts_with("HTTP/1.1 200"));
    chain.set_permissions(json!([{"Action": "allow", "HTTP": {"PathPrefix": "/new"}}]));
    mesh_tests::process::eventually(
        "the same connection's next request is denied",
        std::time::Duration::from_secs(20),
        || {
            get(&mut s, "/ok/live")
                .starts_with("HTTP/1.1 403")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", chain.db.log()));
    assert!(get(&mut s, "/new/x").starts_with("HTTP/1.1 200"));
    assert!(
        chain.db.metric(
            "meshproxy_connections_total",
            &["result=\"closed_by_policy\""]
        ) == 0.0
    );
}
