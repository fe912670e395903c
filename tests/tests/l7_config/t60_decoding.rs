//! Bodies decoded as Consul decodes them (issue 15, point 3), through the agent with curl as
//! the client: keys match fields ignoring case and underscores at every level (config entries,
//! intentions, catalog and agent registrations), user map keys stay as sent, and an unknown
//! field is still refused with its path and the names expected there.

use std::net::SocketAddr;

use super::{Env, get};

/// `curl -X PUT --data body http://addr/path`: (status, body).
async fn curl_put(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            "PUT",
            "--data-binary",
            body,
        ])
        .args(["-w", "\n%{http_code}", &format!("http://{addr}{path}")])
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_and_snake_case_keys_decode_as_consul_decodes_them() {
    let env = Env::start().await;
    let a = env.agent_http;

    // A config entry with lower-case keys at the top and inside Sources/Permissions.
    let (code, body) = curl_put(
        a,
        "/v1/config",
        r#"{"kind":"service-defaults","name":"api","protocol":"http","meta":{"Owner_Team":"x"}}"#,
    )
    .await;
    assert_eq!((code, body.trim()), (200, "true"));
    let r = get(a, "/v1/config/service-defaults/api").await;
    let e = r.json();
    assert_eq!(e["Protocol"], "http", "{e}");
    assert_eq!(
        e["Meta"]["Owner_Team"], "x",
        "user map keys are kept as sent: {e}"
    );
    let (code, body) = curl_put(
        a,
        "/v1/config",
        r#"{"kind":"service-intentions","name":"api","sources":[{"name":"web",
            "permissions":[{"action":"allow","http":{"path_prefix":"/v1","methods":["GET"]}}]}]}"#,
    )
    .await;
    assert_eq!((code, body.trim()), (200, "true"));
    let e = get(a, "/v1/config/service-intentions/api").await.json();
    assert_eq!(
        e["Sources"][0]["Permissions"][0]["HTTP"]["PathPrefix"], "/v1",
        "{e}"
    );

    // An intention, and a catalog registration with a lower-case nested service.
    let (code, body) = curl_put(
        a,
        "/v1/connect/intentions/exact?source=ops&destination=db",
        r#"{"sourcename":"ops","destinationname":"db","action":"allow"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl_put(
        a,
        "/v1/catalog/register",
        r#"{"node":"ext","address":"127.0.0.1","service":{"service":"legacy","port":7070,"tags":["v1"]}}"#,
    )
    .await;
    assert_eq!((code, body.trim()), (200, "true"));
    let rows = get(a, "/v1/catalog/service/legacy").await.json();
    assert_eq!(rows[0]["ServicePort"], 7070, "{rows}");
    assert_eq!(rows[0]["ServiceTags"][0], "v1", "{rows}");

    // An agent registration in snake_case, as Consul's HCL-minded clients send it.
    let (code, body) = curl_put(
        a,
        "/v1/agent/service/register",
        r#"{"name":"cart","port":8080,"connect":{"sidecar_service":{"proxy":{
            "upstreams":[{"destination_name":"db","local_bind_port":9191}]}}}}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let s = get(a, "/v1/agent/service/cart-sidecar-proxy").await.json();
    assert_eq!(s["Proxy"]["Upstreams"][0]["LocalBindPort"], 9191, "{s}");

    // Unknown fields: 400, the path and the expected names; nothing stored.
    for (path, body, want) in [
        (
            "/v1/config",
            r#"{"kind":"service-defaults","name":"web","protocl":"http"}"#,
            "unknown field `protocl`",
        ),
        (
            "/v1/config",
            r#"{"Kind":"service-intentions","Name":"ghost","Sources":[{"Name":"web","Actoin":"allow"}]}"#,
            "Sources[0]",
        ),
        (
            "/v1/catalog/register",
            r#"{"Node":"ext2","Address":"127.0.0.1","Servce":{"Service":"x"}}"#,
            "unknown field `Servce`, expected one of",
        ),
    ] {
        let (code, text) = curl_put(a, path, body).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    assert_eq!(get(a, "/v1/config/service-defaults/web").await.status, 404);
    assert_eq!(
        get(a, "/v1/config/service-intentions/ghost").await.status,
        404
    );
    let nodes = get(a, "/v1/catalog/nodes").await.text();
    assert!(!nodes.contains("ext2"), "{nodes}");
    env.shutdown().await;
}
