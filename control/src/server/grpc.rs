//! The server's gRPC services: Raft transport, cluster membership/forwarding, and the agent API
//! (registration, intentions, CSR signing and watches), all on the `--bind` address so one
//! HTTP/2 connection per agent carries everything.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde::Serialize;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{Server, ServerError, topics};
use crate::fsm::{ApplyResult, Command};
use crate::model::{CaConfig, HealthStatus};
use crate::proto::catalog_server::{Catalog, CatalogServer};
use crate::proto::cluster_server::{Cluster, ClusterServer};
use crate::proto::raft_server::RaftServer;
use crate::proto::*;
use crate::raft::{MAX_MESSAGE, MeshNode, RaftGrpc};
use tokio_stream::StreamExt;

/// Serves every gRPC service until shutdown.
pub(super) async fn serve(server: Arc<Server>, incoming: TcpListenerStream) {
    let raft = RaftServer::new(RaftGrpc {
        raft: server.raft.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let cluster = ClusterServer::new(ClusterApi(server.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let catalog = CatalogServer::new(CatalogApi(server.clone()));
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(raft)
        .add_service(cluster)
        .add_service(catalog)
        .serve_with_incoming_shutdown(incoming, server.shutdown_signal())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

fn info(n: &MeshNode, id: u64) -> ServerInfo {
    ServerInfo {
        id,
        name: n.name.clone(),
        rpc_addr: n.rpc_addr.clone(),
        http_addr: n.http_addr.clone(),
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
}

/// A write's reply: apply errors travel inside the result so the caller sees the exact kind.
fn write_reply(r: Result<ApplyResult, ServerError>) -> Result<Response<CommandReply>, Status> {
    let result = match r {
        Ok(r) => r,
        Err(ServerError::Apply(e)) => ApplyResult {
            index: 0,
            error: Some(e),
        },
        Err(e) => return Err(e.to_status()),
    };
    Ok(Response::new(CommandReply {
        index: result.index,
        json: json(&result)?,
    }))
}

struct ClusterApi(Arc<Server>);

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let s = &self.0;
        if let Some(from) = req.into_inner().from {
            let node = MeshNode {
                name: from.name,
                rpc_addr: from.rpc_addr,
                http_addr: from.http_addr,
            };
            s.known.lock().insert(from.id, node);
        }
        let initialized = s
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let known = s.known.lock().iter().map(|(id, n)| info(n, *id)).collect();
        Ok(Response::new(HelloReply {
            me: Some(info(&s.me, s.id)),
            known,
            initialized,
        }))
    }

    async fn join(&self, req: Request<ServerInfo>) -> Result<Response<JoinReply>, Status> {
        let index = self
            .0
            .join(req.into_inner(), 1)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(JoinReply { index }))
    }

    async fn write(&self, req: Request<CommandRequest>) -> Result<Response<CommandReply>, Status> {
        let req = req.into_inner();
        let cmd: Command = parse(&req.json)?;
        write_reply(self.0.write_hops(cmd, req.hops).await)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.0.read_index(1).await.map_err(|e| e.to_status())?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn configuration(
        &self,
        _req: Request<ConfigurationRequest>,
    ) -> Result<Response<ConfigurationReply>, Status> {
        let (peers, index) = self.0.peers();
        Ok(Response::new(ConfigurationReply {
            servers: peers
                .into_iter()
                .map(|p| PeerInfo {
                    server: Some(info(&p.node, p.id)),
                    leader: p.leader,
                    voter: p.voter,
                })
                .collect(),
            index,
        }))
    }

    async fn remove_peer(
        &self,
        req: Request<RemovePeerRequest>,
    ) -> Result<Response<RemovePeerReply>, Status> {
        let r = req.into_inner();
        let index = self
            .0
            .remove_peer(&r.id, &r.address, 1)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(RemovePeerReply { index }))
    }

    async fn rotate_ca(
        &self,
        req: Request<RotateCaRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        let r = req.into_inner();
        let config: Option<CaConfig> = if r.config_json.is_empty() {
            None
        } else {
            Some(parse(&r.config_json)?)
        };
        write_reply(self.0.rotate_ca(config, r.hops).await)
    }
}

struct CatalogApi(Arc<Server>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchReply, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

impl CatalogApi {
    /// Applies `cmd`; a rejected command is a gRPC error with the reason (InvalidArgument,
    /// NotFound, AlreadyExists), so agents need not look inside the reply.
    async fn apply(&self, cmd: Command) -> Result<Response<WriteReply>, Status> {
        let result = self.0.write(cmd).await.map_err(|e| e.to_status())?;
        Ok(Response::new(WriteReply {
            index: result.index,
            json: json(&result)?,
        }))
    }

    /// Parses the JSON body of a write RPC as `B` and applies the command it stands for.
    async fn write<B>(&self, req: Request<JsonRequest>) -> Result<Response<WriteReply>, Status>
    where
        B: serde::de::DeserializeOwned + Into<Command>,
    {
        let body: B = parse(&req.into_inner().json)?;
        self.apply(body.into()).await
    }

    /// Streams an event for each topic whenever its index passes the last one sent and its
    /// rendering differs from the last one sent (so unrelated writes wake nobody), until the
    /// client goes away or the server stops. A topic that is not [`topics::ready`] yet is
    /// skipped until it is.
    fn watch_topics(&self, topics: Vec<Topic>) -> EventStream {
        let shared = self.0.state.clone();
        let mut applied = shared.subscribe();
        let shutdown = self.0.shutdown_signal();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut last_index: Vec<u64> = topics.iter().map(|t| t.min_index).collect();
            let mut last_hash: Vec<Option<u64>> = vec![None; topics.len()];
            loop {
                let mut events = Vec::new();
                shared.read(|s| {
                    for (i, t) in topics.iter().enumerate() {
                        let idx = topics::index(s, t);
                        if idx <= last_index[i] || !topics::ready(s, t) {
                            continue;
                        }
                        last_index[i] = idx;
                        let msg = match topics::render(s, t) {
                            Ok(json) => {
                                let h = crate::hash::fnv1a64(&json);
                                if last_hash[i] == Some(h) {
                                    continue;
                                }
                                last_hash[i] = Some(h);
                                Ok(WatchEvent {
                                    topic: i as u32,
                                    index: idx,
                                    json,
                                })
                            }
                            Err(e) => Err(Status::internal(e.to_string())),
                        };
                        events.push(msg);
                    }
                });
                for e in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = &mut shutdown => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// One topic, as the single-topic watch RPCs answer it.
    fn watch_one(
        &self,
        kind: TopicKind,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let r = req.into_inner();
        let topic = Topic {
            kind: kind as i32,
            name: r.name,
            passing_only: r.passing_only,
            min_index: r.min_index,
        };
        let replies = self.watch_topics(vec![topic]).map(|e| {
            e.map(|e| WatchReply {
                index: e.index,
                json: e.json,
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Registration body: a node with optional service and checks (Consul's catalog register).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody {
    node: crate::model::Node,
    service: Option<crate::model::ServiceInstance>,
    #[serde(default)]
    checks: Vec<crate::model::HealthCheck>,
}

impl From<RegisterBody> for Command {
    fn from(b: RegisterBody) -> Self {
        Command::Register {
            node: b.node,
            service: b.service,
            checks: b.checks,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeregisterBody {
    node: String,
    #[serde(rename = "ServiceID", default)]
    service_id: Option<String>,
    #[serde(rename = "CheckID", default)]
    check_id: Option<String>,
}

impl From<DeregisterBody> for Command {
    fn from(b: DeregisterBody) -> Self {
        Command::Deregister {
            node: b.node,
            service_id: b.service_id,
            check_id: b.check_id,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckUpdateBody {
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    status: HealthStatus,
    #[serde(default)]
    output: String,
}

impl From<CheckUpdateBody> for Command {
    fn from(b: CheckUpdateBody) -> Self {
        Command::UpdateCheck {
            node: b.node,
            check_id: b.check_id,
            status: b.status,
            output: b.output,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IntentionUpsertBody {
    intention: crate::model::Intention,
    #[serde(default)]
    replace: bool,
}

impl From<IntentionUpsertBody> for Command {
    fn from(b: IntentionUpsertBody) -> Self {
        Command::IntentionUpsert {
            intention: b.intention,
            replace: b.replace,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IntentionDeleteBody {
    #[serde(rename = "SourceNS", default = "default_ns")]
    source_ns: String,
    source_name: String,
    #[serde(rename = "DestinationNS", default = "default_ns")]
    destination_ns: String,
    destination_name: String,
}

impl From<IntentionDeleteBody> for Command {
    fn from(b: IntentionDeleteBody) -> Self {
        Command::IntentionDelete {
            source_ns: b.source_ns,
            source: b.source_name,
            destination_ns: b.destination_ns,
            destination: b.destination_name,
        }
    }
}

fn default_ns() -> String {
    "default".into()
}

#[tonic::async_trait]
impl Catalog for CatalogApi {
    async fn register(&self, req: Request<JsonRequest>) -> Result<Response<WriteReply>, Status> {
        self.write::<RegisterBody>(req).await
    }

    async fn deregister(&self, req: Request<JsonRequest>) -> Result<Response<WriteReply>, Status> {
        self.write::<DeregisterBody>(req).await
    }

    async fn update_check(
        &self,
        req: Request<JsonRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.write::<CheckUpdateBody>(req).await
    }

    async fn upsert_intention(
        &self,
        req: Request<JsonRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.write::<IntentionUpsertBody>(req).await
    }

    async fn delete_intention(
        &self,
        req: Request<JsonRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.write::<IntentionDeleteBody>(req).await
    }

    async fn sign_csr(
        &self,
        req: Request<SignCsrRequest>,
    ) -> Result<Response<SignCsrReply>, Status> {
        let r = req.into_inner();
        let leaf = self
            .0
            .sign_csr(&r.service, &r.datacenter, &r.csr_pem)
            .map_err(|e| e.to_status())?;
        Ok(Response::new(SignCsrReply { json: json(&leaf)? }))
    }

    type WatchRootsStream = WatchStream;
    async fn watch_roots(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchRootsStream>, Status> {
        self.watch_one(TopicKind::TopicRoots, req)
    }

    type WatchIntentionsStream = WatchStream;
    async fn watch_intentions(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchIntentionsStream>, Status> {
        self.watch_one(TopicKind::TopicIntentions, req)
    }

    type WatchHealthStream = WatchStream;
    async fn watch_health(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchHealthStream>, Status> {
        self.watch_one(TopicKind::TopicHealth, req)
    }

    type WatchStream = EventStream;
    async fn watch(&self, req: Request<WatchSet>) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(self.watch_topics(req.into_inner().topics)))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = req.into_inner();
        self.0
            .heartbeat(&r.node, r.hops)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn node_state(
        &self,
        req: Request<NodeStateRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        let node = req.into_inner().node;
        let (index, body) = self.0.state.read(|s| {
            let services: Vec<_> = s
                .services
                .get(&node)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let checks: Vec<_> = s
                .checks
                .get(&node)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            (
                s.last_index,
                serde_json::json!({
                    "Node": s.nodes.get(&node),
                    "Services": services,
                    "Checks": checks,
                }),
            )
        });
        Ok(Response::new(WriteReply {
            index,
            json: json(&body)?,
        }))
    }

    async fn resolve_token(
        &self,
        _req: Request<ResolveTokenRequest>,
    ) -> Result<Response<ResolveTokenReply>, Status> {
        Err(Status::unimplemented("ResolveToken is being built"))
    }

    async fn http(&self, req: Request<HttpRequest>) -> Result<Response<HttpReply>, Status> {
        Ok(Response::new(
            super::api::forwarded::handle(&self.0, req.into_inner()).await,
        ))
    }
}
