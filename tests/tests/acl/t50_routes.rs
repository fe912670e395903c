//! Every route a server answers (except `/v1/acl/*`, covered by the other files), against one
//! `meshd dev --acl` (default policy deny), table-driven: each route with four callers (no
//! token, an unknown token, a token that reads everything, a sufficient token) and the status,
//! the denial text and, for lists, the filtered body and `X-Consul-Results-Filtered-By-ACLs`.
//! Then narrowly scoped tokens (intentions on one destination, one service's reader, one
//! node's registrar, an operator), and the same table with ACLs off: everything answers.

use serde_json::{Value, json};

use super::*;

const UNKNOWN: &str = "6a1b7a2c-0000-4000-8000-000000000000";
const FILTERED: &str = "X-Consul-Results-Filtered-By-ACLs";

/// Reads everything a server route lists or shows, writes nothing.
const READ_ALL: &str = "service_prefix \"\" {\n  policy = \"read\"\n  intentions = \"read\"\n}\n\
node_prefix \"\" {\n  policy = \"read\"\n}\n\
agent_prefix \"\" {\n  policy = \"read\"\n}\n\
operator = \"read\"\n";

/// What a route asks of the caller.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// Nothing; the token is not even looked at (Consul's open routes).
    Open,
    /// Nothing but a valid token (an unknown one is `ACL not found`).
    AnyToken,
    /// The permission, for reading.
    Read(&'static str),
    /// The permission, for writing (the read-everything token is refused).
    Write(&'static str),
    /// A list filtered entry by entry: empty for the anonymous token, whole for a reader.
    List,
}

struct Row {
    method: &'static str,
    path: &'static str,
    body: Option<String>,
    need: Need,
    /// The sufficient token's status (a 404 shows the request got past the ACL check).
    ok: u16,
}

fn row(method: &'static str, path: &'static str, body: Option<Value>, need: Need) -> Row {
    Row {
        method,
        path,
        body: body.map(|b| b.to_string()),
        need,
        ok: 200,
    }
}

/// A `GET` row without a body.
fn get(path: &'static str, need: Need) -> Row {
    row("GET", path, None, need)
}

/// Every server route outside `/v1/acl/*`, in an order where each write finds what it needs
/// (the deregistration after the registration, reads of the mesh entry after its write).
fn routes(ca_config: &Value) -> Vec<Row> {
    use Need::*;
    let extra = json!({"Node": "n-extra", "Address": "10.0.0.9",
        "Service": {"ID": "extra-1", "Service": "extra", "Port": 1}});
    let ixn = json!({"SourceName": "x", "DestinationName": "y", "Action": "allow"});
    let defaults = json!({"Kind": "service-defaults", "Name": "db", "Protocol": "http"});
    let intentions_entry = json!({"Kind": "service-intentions", "Name": "db",
        "Sources": [{"Name": "web", "Action": "allow"}]});
    vec![
        get("/v1/status/leader", Open),
        get("/v1/status/peers", Open),
        get("/v1/connect/ca/roots", Open),
        get("/v1/operator/raft/configuration", Read("operator:read")),
        Row {
            ok: 404,
            ..row(
                "DELETE",
                "/v1/operator/raft/peer?address=127.0.0.1:1",
                None,
                Write("operator:write"),
            )
        },
        row(
            "PUT",
            "/v1/catalog/register",
            Some(extra),
            Write("node:write"),
        ),
        row(
            "PUT",
            "/v1/catalog/deregister",
            Some(json!({"Node": "n-extra", "ServiceID": "extra-1"})),
            Write("service:write"),
        ),
        get("/v1/catalog/services", List),
        get("/v1/catalog/nodes", List),
        get("/v1/catalog/service/web", List),
        get("/v1/catalog/connect/web", List),
        get("/v1/internal/members", List),
        get("/v1/health/service/web", List),
        get("/v1/health/connect/web", List),
        get("/v1/connect/intentions", List),
        row(
            "POST",
            "/v1/connect/intentions",
            Some(ixn),
            Write("intention:write"),
        ),
        row(
            "PUT",
            "/v1/connect/intentions/exact?source=a&destination=b",
            Some(json!({"Action": "deny"})),
            Write("intention:write"),
        ),
        get(
            "/v1/connect/intentions/exact?source=web&destination=db",
            Read("intention:read"),
        ),
        row(
            "DELETE",
            "/v1/connect/intentions/exact?source=a&destination=b",
            None,
            Write("intention:write"),
        ),
        get(
            "/v1/connect/intentions/check?source=web&destination=db",
            Read("service:read"),
        ),
        get(
            "/v1/connect/intentions/match?by=destination&name=db",
            Read("intention:read"),
        ),
        get("/v1/connect/ca/configuration", Read("operator:read")),
        row(
            "PUT",
            "/v1/connect/ca/configuration",
            Some(ca_config.clone()),
            Write("operator:write"),
        ),
        row(
            "PUT",
            "/v1/connect/ca/rotate",
            None,
            Write("operator:write"),
        ),
        row(
            "POST",
            "/v1/connect/ca/rotate",
            None,
            Write("operator:write"),
        ),
        get("/v1/internal/state-hash", Read("operator:read")),
        row("PUT", "/v1/config", Some(defaults), Write("service:write")),
        row(
            "PUT",
            "/v1/config",
            Some(json!({"Kind": "mesh", "Name": "mesh"})),
            Write("mesh:write"),
        ),
        row(
            "PUT",
            "/v1/config",
            Some(intentions_entry),
            Write("intention:write"),
        ),
        get("/v1/config/service-defaults", List),
        get("/v1/config/service-intentions", List),
        get("/v1/config/mesh", AnyToken),
        get("/v1/config/service-defaults/db", Read("service:read")),
        get("/v1/config/service-intentions/db", Read("intention:read")),
        get("/v1/config/mesh/mesh", AnyToken),
        row(
            "DELETE",
            "/v1/config/service-defaults/db",
            None,
            Write("service:write"),
        ),
    ]
}

/// Nodes, services (one a sidecar), intentions and config entries for the lists to show.
fn seed(dev: &Dev, auth: Auth<'_>) {
    let proxy = json!({"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy",
        "Kind": "connect-proxy", "Port": 21000,
        "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web"}});
    for body in [
        json!({"Node": "n-web", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}}),
        json!({"Node": "n-web", "Address": "10.0.0.1", "Service": proxy}),
        json!({"Node": "n-db", "Address": "10.0.0.2", "Service": {"Service": "db", "Port": 5432}}),
    ] {
        dev.put("/v1/catalog/register", auth, &body.to_string());
    }
    for (s, d) in [("web", "db"), ("api", "web"), ("api", "db")] {
        dev.put(
            &format!("/v1/connect/intentions/exact?source={s}&destination={d}"),
            auth,
            r#"{"Action":"allow"}"#,
        );
    }
    for name in ["web", "db"] {
        let e = json!({"Kind": "service-defaults", "Name": name, "Protocol": "http"});
        dev.put("/v1/config", auth, &e.to_string());
    }
}

/// A token holding one policy with `rules`.
pub(super) fn token(dev: &Dev, root: &str, name: &str, rules: &str) -> String {
    let policy = json!({"Name": name, "Rules": rules});
    dev.put("/v1/acl/policy", Auth::Header(root), &policy.to_string());
    let t = json!({"Description": name, "Policies": [{"Name": name}]});
    let t = dev.put("/v1/acl/token", Auth::Header(root), &t.to_string());
    t["SecretID"].as_str().expect("SecretID").to_string()
}

/// Entries in a list answer (an array or, for `/v1/catalog/services`, an object).
fn entries(r: &Reply) -> usize {
    match r.json() {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        other => panic!("not a list: {other}"),
    }
}

#[track_caller]
fn assert_denied(r: &Reply, what: &str, permission: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    assert!(
        r.body.contains(&format!("lacks permission '{permission}'")),
        "{what}: {:?}",
        r.body
    );
}

#[test]
fn every_route_with_four_callers() {
    let (dev, root) = Dev::bootstrapped();
    let mgmt = Auth::Header(&root);
    seed(&dev, mgmt);
    let reader = token(&dev, &root, "read-all", READ_ALL);
    let ca_config = dev.ok("GET", "/v1/connect/ca/configuration", mgmt, None);

    for r in routes(&ca_config) {
        let call = |auth| dev.curl(r.method, r.path, auth, r.body.as_deref());
        let what = format!("{} {}", r.method, r.path);
        let anonymous = call(Auth::None);
        let unknown = call(Auth::Header(UNKNOWN));
        let read_all = call(Auth::Header(&reader));
        match r.need {
            Need::Open => {
                for reply in [&anonymous, &unknown, &read_all] {
                    assert_eq!(reply.status, 200, "{what}: {}", reply.body);
                }
            }
            Need::AnyToken | Need::Read(_) | Need::List => {
                assert_eq!(
                    (unknown.status, unknown.body.as_str()),
                    (403, "ACL not found"),
                    "{what}"
                );
                assert_eq!(read_all.status, 200, "{what}: {}", read_all.body);
            }
            Need::Write(perm) => {
                assert_eq!(
                    (unknown.status, unknown.body.as_str()),
                    (403, "ACL not found"),
                    "{what}"
                );
                assert_denied(&read_all, &what, perm);
                assert!(read_all.body.contains("token with AccessorID"), "{what}");
            }
        }
        match r.need {
            Need::Read(perm) | Need::Write(perm) => {
                assert_denied(&anonymous, &what, perm);
                assert!(anonymous.body.contains("anonymous token"), "{what}");
            }
            Need::AnyToken => assert_eq!(anonymous.status, 200, "{what}: {}", anonymous.body),
            Need::List => {
                // Everything filtered out for the anonymous token (default deny); Consul
                // leaves the header out when the request carried no token.
                assert_eq!(anonymous.status, 200, "{what}: {}", anonymous.body);
                assert_eq!(entries(&anonymous), 0, "{what}: {}", anonymous.body);
                assert_eq!(anonymous.header(FILTERED), None, "{what}");
            }
            Need::Open => {}
        }
        let sufficient = call(mgmt);
        assert_eq!(sufficient.status, r.ok, "{what}: {}", sufficient.body);
        if let Need::List = r.need {
            // Nothing hidden from the reader or the management token.
            assert!(entries(&sufficient) > 0, "{what}: seeded, yet empty");
            assert_eq!(entries(&read_all), entries(&sufficient), "{what}");
            for reply in [&read_all, &sufficient] {
                assert_eq!(reply.header(FILTERED), None, "{what}");
            }
        }
    }
    dev.stop();
}

/// Asserts a list answer: 200, the names `name_of` finds in it, and whether it says it was
/// filtered.
#[track_caller]
fn assert_list(dev: &Dev, path: &str, auth: Auth<'_>, want: &[&str], filtered: bool) {
    let r = dev.curl("GET", path, auth, None);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let mut names: Vec<String> = match r.json() {
        Value::Object(o) => o.keys().cloned().collect(),
        Value::Array(a) => a.iter().map(name_of).collect(),
        other => panic!("{path}: not a list: {other}"),
    };
    names.sort();
    assert_eq!(names, want, "{path}");
    let header = filtered.then_some("true");
    assert_eq!(r.header(FILTERED), header, "{path}");
}

/// What identifies an entry of the lists under test.
fn name_of(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    s("ServiceName")
        .or_else(|| v["Service"]["Service"].as_str().map(str::to_string))
        .or_else(|| {
            s("SourceName")
                .map(|src| format!("{src}->{}", s("DestinationName").unwrap_or_default()))
        })
        .or_else(|| s("Name"))
        .or_else(|| s("Node"))
        .unwrap_or_else(|| panic!("no name in {v}"))
}

#[test]
fn narrow_tokens_get_exactly_their_part() {
    let (dev, root) = Dev::bootstrapped();
    let mgmt = Auth::Header(&root);
    seed(&dev, mgmt);

    // Intentions to db, and nothing else.
    let db_ixn = token(
        &dev,
        &root,
        "db-intentions",
        "service \"db\" {\n  policy = \"read\"\n  intentions = \"write\"\n}\n",
    );
    let auth = Auth::Header(&db_ixn);
    dev.put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        auth,
        r#"{"Action":"deny"}"#,
    );
    let r = dev.curl(
        "PUT",
        "/v1/connect/intentions/exact?source=db&destination=web",
        auth,
        Some(r#"{"Action":"allow"}"#),
    );
    assert_denied(&r, "intention to web", "intention:write");
    assert!(r.body.ends_with("on \"web\""), "{}", r.body);
    let r = dev.curl(
        "POST",
        "/v1/connect/intentions",
        auth,
        Some(r#"{"SourceName":"x","DestinationName":"web","Action":"allow"}"#),
    );
    assert_denied(&r, "create to web", "intention:write");
    // It reads the intentions with db at either end, and is told others were hidden.
    assert_list(
        &dev,
        "/v1/connect/intentions",
        auth,
        &["api->db", "web->db"],
        true,
    );

    // One service's reader: the catalog, health, intentions and config entries of web only.
    let web = token(
        &dev,
        &root,
        "web-reader",
        "service \"web\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\n",
    );
    let auth = Auth::Header(&web);
    assert_list(&dev, "/v1/catalog/services", auth, &["web"], true);
    assert_list(&dev, "/v1/health/service/web", auth, &["web"], false);
    assert_list(&dev, "/v1/health/service/db", auth, &[], true);
    assert_list(&dev, "/v1/catalog/service/db", auth, &[], true);
    // The sidecar is another service name the token may not read.
    assert_list(&dev, "/v1/catalog/connect/web", auth, &[], true);
    assert_list(
        &dev,
        "/v1/connect/intentions",
        auth,
        &["api->web", "web->db"],
        true,
    );
    assert_list(&dev, "/v1/config/service-defaults", auth, &["web"], true);
    dev.curl(
        "GET",
        "/v1/connect/intentions/check?source=db&destination=web",
        auth,
        None,
    )
    .assert_status(200);
    let r = dev.curl(
        "GET",
        "/v1/connect/intentions/check?source=web&destination=db",
        auth,
        None,
    );
    assert_denied(&r, "check to db", "service:read");

    // A registrar for one node and one service.
    let registrar = token(
        &dev,
        &root,
        "n-web-registrar",
        "node \"n-web\" {\n  policy = \"write\"\n}\nservice \"web\" {\n  policy = \"write\"\n}\n",
    );
    let auth = Auth::Header(&registrar);
    let on_web = |service: &str| {
        json!({"Node": "n-web", "Address": "10.0.0.1",
            "Service": {"ID": format!("{service}-2"), "Service": service, "Port": 81}})
        .to_string()
    };
    dev.put("/v1/catalog/register", auth, &on_web("web"));
    let r = dev.curl("PUT", "/v1/catalog/register", auth, Some(&on_web("db")));
    assert_denied(&r, "register db", "service:write");
    let elsewhere = json!({"Node": "n-db", "Address": "10.0.0.2",
        "Service": {"Service": "web", "Port": 82}});
    let r = dev.curl(
        "PUT",
        "/v1/catalog/register",
        auth,
        Some(&elsewhere.to_string()),
    );
    assert_denied(&r, "register on n-db", "node:write");
    let r = dev.curl(
        "PUT",
        "/v1/catalog/deregister",
        auth,
        Some(r#"{"Node":"n-db","ServiceID":"db"}"#),
    );
    assert_denied(&r, "deregister db", "service:write");
    dev.put(
        "/v1/catalog/deregister",
        auth,
        r#"{"Node":"n-web","ServiceID":"web-2"}"#,
    );

    // An operator: the CA and the Raft configuration, not the catalog.
    let operator = token(&dev, &root, "operator", "operator = \"write\"\n");
    let auth = Auth::Header(&operator);
    dev.ok("PUT", "/v1/connect/ca/rotate", auth, None);
    dev.ok("GET", "/v1/operator/raft/configuration", auth, None);
    let r = dev.curl("PUT", "/v1/catalog/register", auth, Some(&on_web("web")));
    assert_denied(&r, "operator registers", "node:write");
    dev.stop();
}

#[test]
fn without_acls_every_route_answers_every_caller() {
    let dev = Dev::start(false);
    seed(&dev, Auth::None);
    let ca_config = dev.ok("GET", "/v1/connect/ca/configuration", Auth::None, None);
    for r in routes(&ca_config) {
        let what = format!("{} {}", r.method, r.path);
        // Reads answer whatever token is sent, even an unknown one; writes without one.
        let auth = match r.method {
            "GET" => Auth::Header(UNKNOWN),
            _ => Auth::None,
        };
        let reply = dev.curl(r.method, r.path, auth, r.body.as_deref());
        assert_eq!(reply.status, r.ok, "{what}: {}", reply.body);
        assert_eq!(reply.header(FILTERED), None, "{what}");
        if let Need::List = r.need {
            assert!(entries(&reply) > 0, "{what}: nothing filtered, yet empty");
        }
    }
    dev.stop();
}
