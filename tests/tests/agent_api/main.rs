//! The server API agents use (gRPC `Catalog` service): registration, intention CRUD, CSR
//! signing and the watch streams "from index N", all over ONE HTTP/2 connection, against a real
//! in-process server on loopback; and, one module per family, the HTTP read endpoints clients
//! use through an agent (`meshd dev`).

mod agent_health;
mod catalog_reads;
mod dev_http;
mod health_reads;
mod out_of_scope;

use std::time::Duration;

use mesh_control::ca::generate_csr;
use mesh_control::proto::catalog_client::CatalogClient;
use mesh_control::proto::{JsonRequest, SignCsrRequest, WatchReply, WatchRequest};
use mesh_control::server::ServerHandle;
use mesh_control::spiffe::SpiffeId;
use serde_json::{Value, json};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

async fn start() -> (ServerHandle, tempfile::TempDir) {
    mesh_tests::inproc::start_single("agent-api").await
}

/// Which watch stream of the `Catalog` service.
enum Watch {
    Intentions,
    Health,
    Roots,
}

/// Opens watch `what` on `name` from `min_index` (only passing instances if `passing_only`).
async fn watch(
    channel: &Channel,
    what: Watch,
    name: &str,
    min_index: u64,
    passing_only: bool,
) -> Streaming<WatchReply> {
    let mut client = CatalogClient::new(channel.clone());
    let req = WatchRequest {
        min_index,
        name: name.into(),
        passing_only,
    };
    match what {
        Watch::Intentions => client.watch_intentions(req).await,
        Watch::Health => client.watch_health(req).await,
        Watch::Roots => client.watch_roots(req).await,
    }
    .unwrap()
    .into_inner()
}

/// The next message of a watch, failing after 10 s.
async fn next(stream: &mut Streaming<WatchReply>) -> (u64, Value) {
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("watch update within 10s")
        .expect("stream ok")
        .expect("stream open");
    (msg.index, serde_json::from_slice(&msg.json).unwrap())
}

/// Asserts the watch sends nothing within `d` (the result did not change).
async fn quiet(stream: &mut Streaming<WatchReply>, d: Duration) {
    assert!(
        tokio::time::timeout(d, stream.message()).await.is_err(),
        "watch sent an update although nothing it watches changed"
    );
}

fn req(v: Value) -> JsonRequest {
    JsonRequest {
        json: serde_json::to_vec(&v).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_api_over_one_connection() {
    let (h, _dir) = start().await;
    // One HTTP/2 connection; every client below is a clone of the same channel.
    let channel: Channel = Endpoint::from_shared(format!("http://{}", h.rpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = CatalogClient::new(channel.clone());

    // Intentions for "db": the first message comes at once, later ones on change.
    let mut intentions = watch(&channel, Watch::Intentions, "db", 0, false).await;
    let (i0, v0) = next(&mut intentions).await;
    assert_eq!(v0["Intentions"], json!([]));
    assert_eq!(v0["DefaultPolicy"], "deny");
    let w = api
        .upsert_intention(req(json!({
            "Intention": {"SourceName": "web", "DestinationName": "db", "Action": "allow"},
            "Replace": false
        })))
        .await
        .unwrap()
        .into_inner();
    assert!(w.index > i0);
    let (i1, v1) = next(&mut intentions).await;
    assert_eq!(i1, w.index, "watch index is the write's Raft index");
    assert_eq!(v1["Intentions"][0]["SourceName"], "web");
    // An intention for another destination does not wake the "db" watch's content, but a
    // same-pair create without Replace is refused with AlreadyExists.
    // An empty source is invalid.
    for (source, code) in [
        ("web", tonic::Code::AlreadyExists),
        ("", tonic::Code::InvalidArgument),
    ] {
        let err = api
            .upsert_intention(req(json!({
                "Intention": {"SourceName": source, "DestinationName": "db", "Action": "deny"}
            })))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "source {source:?}: {err}");
    }

    // A watch "from index N" sends nothing until something after N changes.
    let mut from_now = watch(&channel, Watch::Intentions, "db", i1, false).await;
    quiet(&mut from_now, Duration::from_millis(300)).await;
    let d = api
        .delete_intention(req(json!({"SourceName": "web", "DestinationName": "db"})))
        .await
        .unwrap()
        .into_inner();
    let (i2, v2) = next(&mut from_now).await;
    assert_eq!(i2, d.index);
    assert_eq!(v2["Intentions"], json!([]));

    // Healthy connect instances of "web": a sidecar with a passing check appears, and drops
    // out when the check goes critical.
    let mut health = watch(&channel, Watch::Health, "web", 0, true).await;
    assert_eq!(next(&mut health).await.1, json!([]));
    api.register(req(json!({
        "Node": {"Node": "n1", "Address": "127.0.0.1"},
        "Service": {"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Node": "n1",
                    "Kind": "connect-proxy", "Port": 21000,
                    "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 8080}},
        "Checks": [{"Node": "n1", "CheckID": "sidecar-alive", "Status": "passing",
                    "ServiceID": "web-sidecar-proxy"}]
    })))
    .await
    .unwrap();
    let (_, v) = next(&mut health).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Service"]["Port"], 21000);
    api.update_check(req(
        json!({"Node": "n1", "CheckID": "sidecar-alive", "Status": "critical"}),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut health).await.1, json!([]));
    let bad = api.register(req(json!({"Node": 5}))).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = api
        .update_check(req(
            json!({"Node": "n1", "CheckID": "nope", "Status": "passing"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Roots and CSR signing.
    let mut roots = watch(&channel, Watch::Roots, "", 0, false).await;
    let (_, r0) = next(&mut roots).await;
    assert_eq!(r0["Roots"].as_array().unwrap().len(), 1);
    let td = r0["TrustDomain"].as_str().unwrap().to_string();
    let (csr, _key) = generate_csr(&SpiffeId::service(&td, "dc1", "web")).unwrap();
    let leaf = api
        .sign_csr(SignCsrRequest {
            service: "web".into(),
            datacenter: "dc1".into(),
            csr_pem: csr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let leaf: Value = serde_json::from_slice(&leaf.json).unwrap();
    assert_eq!(
        leaf["ServiceURI"],
        format!("spiffe://{td}/ns/default/dc/dc1/svc/web")
    );
    assert!(
        leaf["CertPEM"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let wrong = api
        .sign_csr(SignCsrRequest {
            service: "db".into(),
            datacenter: "dc1".into(),
            csr_pem: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong}");
    assert!(wrong.message().contains("db"), "{wrong}");
    let garbage = api
        .sign_csr(SignCsrRequest {
            service: "web".into(),
            datacenter: "dc1".into(),
            csr_pem: "junk".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    h.server.rotate_ca(None, 0).await.unwrap();
    let (_, r1) = next(&mut roots).await;
    let list = r1["Roots"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|r| r["Active"] == true).count(), 1);
    assert_ne!(r1["ActiveRootID"], r0["ActiveRootID"]);
    assert!(
        !r1.to_string().contains("PRIVATE KEY"),
        "root keys must never leave the servers"
    );

    drop((intentions, from_now, health, roots));
    h.shutdown().await;
}
