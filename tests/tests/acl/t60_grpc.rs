//! Every gRPC method of a real `meshd dev --acl`, driven with the generated tonic clients (a
//! client that knows nothing of the server's internals): a table of the code each method answers
//! with no token, an unknown token, a read-only token and a sufficient token; then the security
//! findings of issue 12, each refused now:
//!
//! * an unauthenticated `Cluster.Write` of `SetDefaultPolicy` (the intention default stays);
//! * `Cluster.Write` with a management token but without the servers' internal secret;
//! * `SignCsr` for another service with a token whose service identity is `web`;
//! * `SignCsr` for another datacenter, even with a management token.

use std::future::Future;
use std::time::Duration;

use mesh_control::proto::catalog_client::CatalogClient;
use mesh_control::proto::cluster_client::ClusterClient;
use mesh_control::proto::raft_client::RaftClient;
use mesh_control::proto::{
    CommandRequest, ConfigurationRequest, HeartbeatRequest, HelloRequest, HttpHeader, HttpRequest,
    JsonRequest, NodeStateRequest, RaftPayload, ReadIndexRequest, RemovePeerRequest,
    ResolveTokenRequest, RotateCaRequest, SignCsrRequest, Topic, TopicKind, WatchRequest, WatchSet,
};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::*;

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Who {
    NoToken,
    Unknown,
    Reader,
    Sufficient,
}

const UNKNOWN: &str = "6a1b7a2c-0000-4000-8000-000000000000";

/// Reads everything (services, intentions, nodes), writes nothing.
const READER_RULES: &str = "service_prefix \"\" {\n policy = \"read\"\n intentions = \"read\"\n}\nnode_prefix \"\" {\n policy = \"read\"\n}\n";

/// What every row's sufficient call needs: service `web` (with its intentions), node `n1`,
/// `acl:read` for the HTTP row.
const WRITER_RULES: &str = "service \"web\" {\n policy = \"write\"\n intentions = \"write\"\n}\nnode \"n1\" {\n policy = \"write\"\n}\nacl = \"read\"\n";

/// The dev server, its gRPC channel and the tokens of the table.
struct Grpc {
    dev: Dev,
    root: String,
    channel: Channel,
    reader: String,
    writer: String,
    trust_domain: String,
}

impl Grpc {
    async fn start() -> Self {
        let (dev, root) = tokio::task::spawn_blocking(Dev::bootstrapped)
            .await
            .unwrap();
        let reader = token_with_rules(&dev, &root, "reader", READER_RULES);
        let writer = token_with_rules(&dev, &root, "writer", WRITER_RULES);
        let channel = Endpoint::from_shared(format!("http://{}", dev.rpc_addr()))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let mut roots = CatalogClient::new(channel.clone())
            .watch_roots(with(WatchRequest::default(), Some(&root)))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(20), roots.message())
            .await
            .expect("roots within 20s")
            .unwrap()
            .expect("a roots message");
        let v: Value = serde_json::from_slice(&first.json).unwrap();
        let trust_domain = v["TrustDomain"].as_str().unwrap().to_string();
        Self {
            dev,
            root,
            channel,
            reader,
            writer,
            trust_domain,
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::NoToken => None,
            Who::Unknown => Some(UNKNOWN),
            Who::Reader => Some(&self.reader),
            Who::Sufficient => Some(&self.writer),
        }
    }

    fn catalog(&self) -> CatalogClient<Channel> {
        CatalogClient::new(self.channel.clone())
    }

    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    /// A CSR (made with rcgen alone) for `service` in `dc` of this cluster's trust domain.
    fn csr(&self, dc: &str, service: &str) -> String {
        let uri = format!(
            "spiffe://{}/ns/default/dc/{dc}/svc/{service}",
            self.trust_domain
        );
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn sign_request(&self, service: &str, dc: &str, csr_for: &str) -> SignCsrRequest {
        SignCsrRequest {
            service: service.into(),
            datacenter: dc.into(),
            csr_pem: self.csr(dc, csr_for),
        }
    }
}

/// A token with a new policy of `rules`; its SecretID.
fn token_with_rules(dev: &Dev, root: &str, name: &str, rules: &str) -> String {
    let policy = json!({ "Name": name, "Rules": rules }).to_string();
    dev.put("/v1/acl/policy", Auth::Header(root), &policy);
    let token = json!({ "Policies": [{ "Name": name }] }).to_string();
    let t = dev.put("/v1/acl/token", Auth::Header(root), &token);
    t["SecretID"].as_str().unwrap().to_string()
}

/// `msg` with `token` in `x-consul-token`.
fn with<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-consul-token", t.parse().unwrap());
    }
    req
}

fn body(v: Value) -> JsonRequest {
    JsonRequest {
        json: v.to_string().into_bytes(),
    }
}

fn watch(name: &str) -> WatchRequest {
    WatchRequest {
        name: name.into(),
        ..WatchRequest::default()
    }
}

fn raft_payload() -> RaftPayload {
    RaftPayload {
        json: b"{}".to_vec(),
    }
}

/// A unary or streaming call reduced to its status (a stream: whether it started).
async fn code<T>(call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Code {
    match call.await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Every gRPC method, in an order where each sufficient call finds what it needs (the
/// registration before the check update, the intention before its deletion, ...).
const METHODS: &[&str] = &[
    "Catalog.Register",
    "Catalog.SyncNode",
    "Catalog.UpdateCheck",
    "Catalog.Heartbeat",
    "Catalog.NodeState",
    "Catalog.UpsertIntention",
    "Catalog.DeleteIntention",
    "Catalog.SignCsr",
    "Catalog.WatchRoots",
    "Catalog.WatchIntentions",
    "Catalog.WatchHealth",
    "Catalog.Watch",
    "Catalog.Watch(acl)",
    "Catalog.ResolveToken",
    "Catalog.Http",
    "Catalog.Deregister",
    "Cluster.Hello",
    "Cluster.Join",
    "Cluster.Write",
    "Cluster.ReadIndex",
    "Cluster.Configuration",
    "Cluster.RemovePeer",
    "Cluster.RotateCa",
    "Raft.AppendEntries",
    "Raft.Vote",
    "Raft.InstallSnapshot",
];

/// The code `method` answers `who` (for `Catalog.Http`, the gRPC call succeeds and the router
/// answers: its HTTP status is mapped 200 → Ok, 403 → PermissionDenied).
async fn call(g: &Grpc, method: &str, who: Who) -> Code {
    let t = g.token(who);
    let mut cat = g.catalog();
    let mut clu = g.cluster();
    let mut raft = RaftClient::new(g.channel.clone());
    match method {
        "Catalog.Register" => {
            let b = body(json!({
                "Node": {"Node": "n1", "Address": "127.0.0.1"},
                "Service": {"ID": "web", "Service": "web", "Node": "n1", "Port": 8080},
                "Checks": [{"Node": "n1", "CheckID": "c1", "Status": "passing", "ServiceID": "web"}]
            }));
            code(cat.register(with(b, t))).await
        }
        "Catalog.SyncNode" => {
            let b = body(json!({"Node": "n1", "Ops": [
                {"Op": "Register", "Node": {"Node": "n1", "Address": "127.0.0.1"},
                 "Service": {"ID": "web", "Service": "web", "Node": "n1", "Port": 8081}},
                {"Op": "UpdateCheck", "Node": "n1", "CheckID": "c1", "Status": "critical"},
            ]}));
            code(cat.sync_node(with(b, t))).await
        }
        "Catalog.UpdateCheck" => {
            let b = body(json!({"Node": "n1", "CheckID": "c1", "Status": "warning"}));
            code(cat.update_check(with(b, t))).await
        }
        "Catalog.Heartbeat" => {
            let r = HeartbeatRequest {
                node: "n1".into(),
                hops: 0,
            };
            code(cat.heartbeat(with(r, t))).await
        }
        "Catalog.NodeState" => {
            let r = NodeStateRequest { node: "n1".into() };
            code(cat.node_state(with(r, t))).await
        }
        "Catalog.UpsertIntention" => {
            let b = body(json!({
                "Intention": {"SourceName": "api", "DestinationName": "web", "Action": "allow"},
                "Replace": true
            }));
            code(cat.upsert_intention(with(b, t))).await
        }
        "Catalog.DeleteIntention" => {
            let b = body(json!({"SourceName": "api", "DestinationName": "web"}));
            code(cat.delete_intention(with(b, t))).await
        }
        "Catalog.SignCsr" => {
            let r = g.sign_request("web", "dc1", "web");
            code(cat.sign_csr(with(r, t))).await
        }
        "Catalog.WatchRoots" => code(cat.watch_roots(with(watch(""), t))).await,
        "Catalog.WatchIntentions" => code(cat.watch_intentions(with(watch("web"), t))).await,
        "Catalog.WatchHealth" => code(cat.watch_health(with(watch("web"), t))).await,
        "Catalog.Watch" | "Catalog.Watch(acl)" => {
            let topic = |kind: TopicKind, name: &str| Topic {
                kind: kind as i32,
                name: name.into(),
                ..Topic::default()
            };
            let topics = if method == "Catalog.Watch" {
                vec![
                    topic(TopicKind::TopicRoots, ""),
                    topic(TopicKind::TopicHealth, "web"),
                    topic(TopicKind::TopicIntentions, "web"),
                ]
            } else {
                vec![topic(TopicKind::TopicAcl, "")]
            };
            code(cat.watch(with(WatchSet { topics }, t))).await
        }
        "Catalog.ResolveToken" => code(cat.resolve_token(with(ResolveTokenRequest {}, t))).await,
        "Catalog.Http" => {
            let headers = t
                .map(|t| HttpHeader {
                    name: "X-Consul-Token".into(),
                    value: t.into(),
                })
                .into_iter()
                .collect();
            let r = HttpRequest {
                method: "GET".into(),
                path_and_query: "/v1/acl/tokens".into(),
                body: Default::default(),
                headers,
            };
            let reply = cat.http(with(r, t)).await.expect("Http passes through");
            match reply.into_inner().status {
                200 => Code::Ok,
                403 => Code::PermissionDenied,
                other => panic!("Http: unexpected status {other}"),
            }
        }
        "Catalog.Deregister" => {
            let b = body(json!({"Node": "n1", "ServiceID": "web"}));
            code(cat.deregister(with(b, t))).await
        }
        "Cluster.Hello" => code(clu.hello(with(HelloRequest::default(), t))).await,
        "Cluster.Join" => {
            // The server itself, already a voter: a no-op join that proves the method is open.
            let me = clu
                .hello(HelloRequest::default())
                .await
                .unwrap()
                .into_inner()
                .me
                .unwrap();
            code(clu.join(with(me, t))).await
        }
        "Cluster.Write" => {
            let r = CommandRequest {
                json: br#"{"Op":"SetDefaultPolicy","policy":"allow"}"#.to_vec(),
                hops: 0,
            };
            code(clu.write(with(r, t))).await
        }
        "Cluster.ReadIndex" => code(clu.read_index(with(ReadIndexRequest {}, t))).await,
        "Cluster.Configuration" => code(clu.configuration(with(ConfigurationRequest {}, t))).await,
        "Cluster.RemovePeer" => {
            let r = RemovePeerRequest {
                id: "no-such-server".into(),
                address: String::new(),
            };
            code(clu.remove_peer(with(r, t))).await
        }
        "Cluster.RotateCa" => {
            let r = RotateCaRequest {
                config_json: Vec::new(),
                hops: 0,
            };
            code(clu.rotate_ca(with(r, t))).await
        }
        "Raft.AppendEntries" => code(raft.append_entries(with(raft_payload(), t))).await,
        "Raft.Vote" => code(raft.vote(with(raft_payload(), t))).await,
        "Raft.InstallSnapshot" => code(raft.install_snapshot(with(raft_payload(), t))).await,
        other => panic!("no such method {other}"),
    }
}

/// The code each caller gets: (no token, unknown token, read-only token, sufficient token).
fn expected(method: &str) -> [Code; 4] {
    use Code::{Ok, PermissionDenied as Denied};
    match method {
        // Writes: only the token with the permission.
        "Catalog.Register"
        | "Catalog.SyncNode"
        | "Catalog.UpdateCheck"
        | "Catalog.Heartbeat"
        | "Catalog.UpsertIntention"
        | "Catalog.DeleteIntention"
        | "Catalog.SignCsr"
        | "Catalog.Deregister" => [Denied, Denied, Denied, Ok],
        // Reads: a read permission is enough; the anonymous token has none (default deny).
        "Catalog.NodeState"
        | "Catalog.WatchIntentions"
        | "Catalog.WatchHealth"
        | "Catalog.Watch" => [Denied, Denied, Ok, Ok],
        // Public (roots, the ACL index, one's own token): any token that resolves.
        "Catalog.WatchRoots" | "Catalog.Watch(acl)" | "Catalog.ResolveToken" => {
            [Ok, Denied, Ok, Ok]
        }
        // The router decides (`acl:read` for `/v1/acl/tokens`).
        "Catalog.Http" => [Denied, Denied, Denied, Ok],
        // Open until servers authenticate each other (issue 13).
        "Cluster.Hello" | "Cluster.Join" => [Ok, Ok, Ok, Ok],
        // Internal to the servers: no client token is enough (see the findings below for a
        // management token).
        _ => [Denied, Denied, Denied, Denied],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_method_by_token() {
    let g = Grpc::start().await;
    let mut failures = Vec::new();
    for method in METHODS {
        let want = expected(method);
        for (who, want) in [Who::NoToken, Who::Unknown, Who::Reader, Who::Sufficient]
            .into_iter()
            .zip(want)
        {
            let got = call(&g, method, who).await;
            if got != want {
                failures.push(format!("{method} as {who:?}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The refusals say why, in Consul's words, and never echo a secret.
    let denied = g
        .catalog()
        .register(with(
            body(json!({"Node": {"Node": "n1", "Address": "127.0.0.1"}})),
            Some(&g.reader),
        ))
        .await
        .unwrap_err();
    assert!(
        denied
            .message()
            .contains("lacks permission 'node:write' on \"n1\""),
        "{denied:?}"
    );
    let unknown = g
        .catalog()
        .node_state(with(NodeStateRequest { node: "n1".into() }, Some(UNKNOWN)))
        .await
        .unwrap_err();
    assert_eq!(unknown.message(), "ACL not found");
    g.dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_token_answers_the_token_without_its_secret() {
    let g = Grpc::start().await;
    let reply = g
        .catalog()
        .resolve_token(with(ResolveTokenRequest {}, Some(&g.writer)))
        .await
        .unwrap()
        .into_inner();
    let v: Value = serde_json::from_slice(&reply.json).unwrap();
    assert_eq!(v["Enabled"], true, "{v}");
    assert_eq!(v["Token"]["SecretID"], "", "{v}");
    assert!(!String::from_utf8_lossy(&reply.json).contains(&g.writer));
    assert_eq!(v["Policies"][0]["Name"], "writer", "{v}");
    assert_eq!(v["DefaultPolicy"], "deny", "{v}");
    assert!(v["AclIndex"].as_u64().unwrap() > 0, "{v}");
    // No token: the anonymous token.
    let anon = g
        .catalog()
        .resolve_token(ResolveTokenRequest {})
        .await
        .unwrap()
        .into_inner();
    let v: Value = serde_json::from_slice(&anon.json).unwrap();
    assert_eq!(
        v["Token"]["AccessorID"],
        "00000000-0000-0000-0000-000000000002"
    );
    g.dev.stop();
}

/// The intention default as the HTTP API applies it: may `x` call `y` with no intention?
fn intention_default_allows(g: &Grpc) -> bool {
    let v = g.dev.ok(
        "GET",
        "/v1/connect/intentions/check?source=x&destination=y",
        Auth::Header(&g.root),
        None,
    );
    v["Allowed"].as_bool().expect("Allowed")
}

/// The finding "an unauthenticated `Cluster.Write` flips the default policy to allow": refused
/// without any credential, and with a management token but not the servers' secret (a client
/// token never reaches the internal methods); a guessed secret is no better.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_default_policy_without_the_server_secret_is_refused() {
    let g = Grpc::start().await;
    assert!(!intention_default_allows(&g), "dev starts with deny");
    for token in [None, Some(g.root.as_str())] {
        let set_allow = CommandRequest {
            json: br#"{"Op":"SetDefaultPolicy","policy":"allow"}"#.to_vec(),
            hops: 0,
        };
        let err = g.cluster().write(with(set_allow, token)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token:?}: {err:?}");
        assert!(!err.message().contains(&g.root));
    }
    let mut req = with(ReadIndexRequest {}, Some(&g.root));
    req.metadata_mut()
        .insert("x-mesh-server-secret", "0".repeat(64).parse().unwrap());
    let err = g.cluster().read_index(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), "invalid server secret");
    assert!(!intention_default_allows(&g), "the default policy changed");
    g.dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_csr_for_another_service_is_refused() {
    let g = Grpc::start().await;
    let web = g.dev.put(
        "/v1/acl/token",
        Auth::Header(&g.root),
        r#"{"ServiceIdentities":[{"ServiceName":"web"}]}"#,
    );
    let web = web["SecretID"].as_str().unwrap().to_string();
    let mut cat = g.catalog();
    // Its own service: signed.
    let leaf = cat
        .sign_csr(with(g.sign_request("web", "dc1", "web"), Some(&web)))
        .await
        .unwrap()
        .into_inner();
    let leaf: Value = serde_json::from_slice(&leaf.json).unwrap();
    assert!(leaf["ServiceURI"].as_str().unwrap().ends_with("/svc/web"));
    // Another service: refused by ACL.
    let err = cat
        .sign_csr(with(g.sign_request("db", "dc1", "db"), Some(&web)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("lacks permission 'service:write' on \"db\""),
        "{err:?}"
    );
    // A db CSR presented as web: the name checked is the name signed, so it is refused too.
    let smuggled = g.sign_request("web", "dc1", "db");
    let err = cat.sign_csr(with(smuggled, Some(&web))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    g.dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_csr_for_another_datacenter_is_refused() {
    let g = Grpc::start().await;
    for token in [&g.root, &g.writer] {
        let err = g
            .catalog()
            .sign_csr(with(g.sign_request("web", "dc2", "web"), Some(token)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("datacenter \"dc2\"") && err.message().contains("\"dc1\""),
            "{err:?}"
        );
    }
    g.dev.stop();
}
