//! `?tag=`, `?node-meta=` and `?filter=` seen with curl against `meshd dev`: what py-consul
//! cannot show (the raw 400 and its position, that a refused filter is not held by a blocking
//! wait, that the index is the unfiltered one). The client agent's cached
//! `/v1/health/connect` (not a route of `meshd dev`) is the `agent` suite's `t90`.

use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::process::eventually;
use serde_json::Value;

/// One curl answer.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `field` of every row of a list answer (`path` into each row).
    fn ids(&self, path: &[&str]) -> Vec<String> {
        let rows = self.json();
        let mut out: Vec<String> = rows
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {}", self.body))
            .iter()
            .map(|r| {
                path.iter()
                    .fold(r, |v, k| &v[*k])
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `curl -G` of `path` with `params` URL-encoded (repeat a key to repeat the parameter).
fn curl(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20", "-w", "\n%{http_code}"]);
    if method == "GET" {
        cmd.arg("-G");
        for (k, v) in params {
            cmd.args(["--data-urlencode", &format!("{k}={v}")]);
        }
    } else {
        cmd.args(["-X", method, "--data-binary", body.unwrap_or("")]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Answer {
        status: code.parse().unwrap_or(0),
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

#[test]
fn list_filters_with_curl() {
    let meshd = super::dev(&[]);
    let addr = meshd.http_addr;
    let put = |path: &str, body: &str| {
        let r = curl(addr, "PUT", path, &[], Some(body));
        assert_eq!(r.status, 200, "PUT {path}: {}", r.body);
    };
    put(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-1","Port":8080,"Tags":["v1"],"Connect":{"SidecarService":{}}}"#,
    );
    put(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-2","Port":8081,"Tags":["v2"]}"#,
    );
    put(
        "/v1/catalog/register",
        r#"{"Node":"ext-node","Address":"127.0.0.9","NodeMeta":{"rack":"r2"},
            "Service":{"Service":"web","ID":"web-ext","Port":9090,"Tags":["v2"]}}"#,
    );
    let all = eventually(
        "three web instances in the catalog",
        Duration::from_secs(10),
        || {
            let r = curl(addr, "GET", "/v1/catalog/service/web", &[], None);
            (r.ids(&["ServiceID"]) == ["web-1", "web-2", "web-ext"]).then_some(r)
        },
    )
    .expect("catalog synced");

    // ?tag=nope: 200 and an empty list, not the instances.
    let r = curl(
        addr,
        "GET",
        "/v1/catalog/service/web",
        &[("tag", "nope")],
        None,
    );
    assert_eq!((r.status, r.body.trim()), (200, "[]"), "{}", r.body);
    // The index of a filtered answer is the unfiltered one (blocking queries line up).
    assert_eq!(r.header("X-Consul-Index"), all.header("X-Consul-Index"));
    let r = curl(
        addr,
        "GET",
        "/v1/health/service/web",
        &[("tag", "v2"), ("node-meta", "rack:r2")],
        None,
    );
    assert_eq!(r.ids(&["Service", "ID"]), ["web-ext"], "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/catalog/nodes",
        &[("node-meta", "rack:r2")],
        None,
    );
    assert_eq!(r.ids(&["Node"]), ["ext-node"], "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/catalog/services",
        &[("node-meta", "rack:r2")],
        None,
    );
    assert_eq!(r.json(), serde_json::json!({"web": ["v2"]}), "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/connect/intentions",
        &[("filter", "SourceName == web")],
        None,
    );
    assert_eq!((r.status, r.body.trim()), (200, "[]"), "{}", r.body);

    // A bad filter is 400 with the position, at once even on a blocking query.
    let index = all.header("X-Consul-Index").unwrap_or("1").to_string();
    let started = Instant::now();
    let r = curl(
        addr,
        "GET",
        "/v1/health/service/web",
        &[
            ("filter", "Service.Port =="),
            ("index", &index),
            ("wait", "30s"),
        ],
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.starts_with("Failed to create boolean expression evaluator: 1:16 (15): no match found at end of input, expected: a value"),
        "{}",
        r.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let refusals = [
        (
            "/v1/catalog/service/web",
            "Servce.Port == 1",
            "Selector \"Servce.Port\" is not valid",
        ),
        (
            "/v1/catalog/service/web",
            "ServiceTags == v1",
            "Invalid match operator \"Equal\" for a list value",
        ),
        (
            "/v1/agent/services",
            "Tags matches \"(\"",
            "1:14 (13): Failed to compile regular expression",
        ),
        (
            "/v1/agent/checks",
            "(Status == passing",
            "1:19 (18): Unmatched parentheses",
        ),
    ];
    for (path, filter, want) in refusals {
        let r = curl(addr, "GET", path, &[("filter", filter)], None);
        assert_eq!(r.status, 400, "{path} {filter}: {}", r.body);
        assert!(r.body.contains(want), "{path} {filter}: {}", r.body);
    }

    // The check lists and node reads filter too (the same helper).
    let sidecar_checks = "ServiceID == \"web-1-sidecar-proxy\"";
    let r = curl(
        addr,
        "GET",
        "/v1/health/checks/web-sidecar-proxy",
        &[],
        None,
    );
    let every = r.json().as_array().map_or(0, Vec::len);
    assert!(every >= 2, "the sidecar's checks: {}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/health/state/any",
        &[(
            "filter",
            &format!("{sidecar_checks} and Name contains Aliasing"),
        )],
        None,
    );
    assert_eq!(
        r.ids(&["CheckID"]),
        ["service:web-1-sidecar-proxy:2"],
        "{}",
        r.body
    );
    let r = curl(
        addr,
        "GET",
        "/v1/health/node/ext-node",
        &[("filter", "CheckID == nothing")],
        None,
    );
    assert_eq!((r.status, r.body.trim()), (200, "[]"), "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/catalog/node-services/ext-node",
        &[("filter", "Port == 9090")],
        None,
    );
    assert_eq!(r.json()["Services"][0]["ID"], "web-ext", "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/catalog/node/ext-node",
        &[("filter", "Port != 9090")],
        None,
    );
    assert_eq!(r.json()["Services"], serde_json::json!({}), "{}", r.body);
    let r = curl(
        addr,
        "GET",
        "/v1/health/checks/web",
        &[("filter", "Statuss == passing")],
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);

    drop(meshd);
}
