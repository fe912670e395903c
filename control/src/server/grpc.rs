//! The server's gRPC services: Raft transport, cluster membership/forwarding, and the agent API
//! (registration, intentions, CSR signing and watches), all on the `--bind` address so one
//! HTTP/2 connection per agent carries everything.
//!
//! Who may call what, first by transport (`tls::peer`, when the RPC port has TLS: checked per
//! service before anything here runs), then by credential:
//! * `Raft.*`: server certificates only; then the internal secret once the receiver holds one
//!   (`raft::secret`).
//! * `Cluster.Write`, `ReadIndex`, `Configuration`, `RemovePeer`, `RotateCa`: server
//!   certificates only; then always (ACLs on or off) the internal secret in
//!   `x-mesh-server-secret`. A client token, even a management one, is not enough: these apply
//!   any command, unchecked (except the CA and secret commands only a leader builds, which
//!   `Cluster.Write` refuses from anyone).
//! * `Cluster.Hello` and `Cluster.Join`: server certificates only. That is what authenticates a
//!   joining server: a server that has not joined holds no secret yet. Without TLS (a
//!   loopback-only setup; `meshd` refuses a non-loopback plaintext `--bind` unless told) they
//!   are open to whoever reaches the port.
//! * `AutoEncrypt.Sign` (only where auto-encrypt is allowed): any TLS connection, with or
//!   without a certificate; the token decides (`server::auto_encrypt`).
//! * `Catalog.*` (the agents' API): server, client or auto-encrypt agent certificates; with
//!   ACLs on, the token in `x-consul-token` (none: the anonymous token), checked against `server::grpc_authz`'s table before anything runs or a
//!   stream starts; when no token is presented, a valid internal secret (the agent a server
//!   embeds) stands for management rights. A presented secret that is not this server's is
//!   refused. With ACLs off nothing is checked there, except that `SignCsr` signs only for this
//!   server's datacenter (`Server::sign_csr`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::acl::{Caller, acl_status, presented_token};
use super::grpc_authz::{self, Call, Requirement};
use super::{Server, ServerError};
use crate::fsm::State;
use crate::fsm::{ApplyResult, Command};
use crate::model::{CaConfig, HealthStatus};
use crate::proto::auto_encrypt_server::AutoEncryptServer;
use crate::proto::catalog_server::{Catalog, CatalogServer};
use crate::proto::cluster_server::{Cluster, ClusterServer};
use crate::proto::raft_server::RaftServer;
use crate::proto::*;
use crate::raft::secret::{self, SecretCheck};
use crate::raft::{MAX_MESSAGE, MeshNode, RaftGrpc};
use crate::tls::{Admit, Admits};

type RpcIncoming =
    tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls::transport::RpcStream>>;
use tokio_stream::StreamExt;

/// Serves every gRPC service until shutdown, each behind the transport check of who may call
/// it (`tls::peer`: servers only for Raft and Cluster).
pub(super) async fn serve(server: Arc<Server>, incoming: RpcIncoming) {
    let admit = |admits, service| Admit {
        admits,
        service,
        datacenter: server.config.datacenter.as_str().into(),
    };
    let raft = RaftServer::new(RaftGrpc {
        raft: server.raft.clone(),
        state: server.state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let raft = InterceptedService::new(raft, admit(Admits::Servers, "Raft"));
    let cluster = ClusterServer::new(ClusterApi(server.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let cluster = InterceptedService::new(cluster, admit(Admits::Servers, "Cluster"));
    let catalog = InterceptedService::new(
        CatalogServer::new(CatalogApi(server.clone())),
        admit(Admits::ServersAndAgents, "Catalog"),
    );
    // Only where auto-encrypt is allowed; elsewhere the method does not exist (Unimplemented).
    let auto_encrypt = server.config.auto_encrypt_allow_tls.then(|| {
        InterceptedService::new(
            AutoEncryptServer::new(super::auto_encrypt::AutoEncryptApi(server.clone())),
            admit(Admits::Anyone, "AutoEncrypt"),
        )
    });
    let result = tonic::transport::Server::builder()
        .add_optional_service(auto_encrypt)
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
        let req = req.into_inner();
        let from = req.from.filter(|f| s.same_key_as(f, &req.seal_check));
        if let Some(from) = from {
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
            seal_check: s.seal_check.clone(),
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
        secret::require(&self.0.state, &req)?;
        let req = req.into_inner();
        let cmd: Command = parse(&req.json)?;
        if cmd.leader_only() {
            return Err(Status::permission_denied(format!(
                "{} is built by the leader only and is not accepted from another server; \
                 forward the request (e.g. Cluster.RotateCa) instead",
                cmd.op()
            )));
        }
        write_reply(self.0.write_hops(cmd, req.hops).await)
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        secret::require(&self.0.state, &req)?;
        let index = self.0.read_index(1).await.map_err(|e| e.to_status())?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn configuration(
        &self,
        req: Request<ConfigurationRequest>,
    ) -> Result<Response<ConfigurationReply>, Status> {
        secret::require(&self.0.state, &req)?;
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
        secret::require(&self.0.state, &req)?;
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
        secret::require(&self.0.state, &req)?;
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

/// Who a `Catalog` call comes from, as far as ACLs go.
enum Authority {
    /// ACLs are off, or the caller presented the servers' internal secret and no token.
    Unrestricted,
    /// The caller's token (the anonymous one when none was presented).
    Token(Box<Caller>),
}

impl CatalogApi {
    /// Resolves who `req` comes from: refuses a wrong internal secret and a token that names
    /// nothing (`ACL not found`).
    fn authority<T>(&self, req: &Request<T>) -> Result<Authority, Status> {
        let s = &self.0;
        if !s.config.acl.enabled {
            return Ok(Authority::Unrestricted);
        }
        let internal = match secret::presented(req) {
            None => false,
            Some(p) => match secret::check(secret::held(&s.state).as_ref(), Some(p)) {
                SecretCheck::Valid => true,
                _ => return Err(Status::permission_denied("invalid server secret")),
            },
        };
        match presented_token(req)? {
            None if internal => Ok(Authority::Unrestricted),
            token => s
                .acl_resolve(token)
                .map(|c| Authority::Token(Box::new(c)))
                .map_err(acl_status),
        }
    }

    /// Refuses `call` unless `authority` meets what the table asks for it.
    fn check(authority: &Authority, call: &Call<'_>) -> Result<(), Status> {
        match authority {
            Authority::Unrestricted => Ok(()),
            Authority::Token(caller) => {
                grpc_authz::authorize(&grpc_authz::requirement(call), &caller.authorizer)
                    .map_err(|e| acl_status(e.into()))
            }
        }
    }

    /// [`Self::authority`] and [`Self::check`] of a call whose names are in the request.
    fn authorize<T>(&self, req: &Request<T>, call: &Call<'_>) -> Result<(), Status> {
        if grpc_authz::requirement(call) == Requirement::Router {
            return Ok(());
        }
        Self::check(&self.authority(req)?, call)
    }

    /// Applies `cmd`; a rejected command is a gRPC error with the reason (InvalidArgument,
    /// NotFound, AlreadyExists), so agents need not look inside the reply.
    async fn apply(&self, cmd: Command) -> Result<Response<WriteReply>, Status> {
        let result = self.0.write(cmd).await.map_err(|e| e.to_status())?;
        Ok(Response::new(WriteReply {
            index: result.index,
            json: json(&result)?,
        }))
    }

    /// Parses the JSON body of a write RPC as `B`, authorizes it against the state it would
    /// change, and applies the command it stands for.
    async fn write<B>(&self, req: Request<JsonRequest>) -> Result<Response<WriteReply>, Status>
    where
        B: serde::de::DeserializeOwned + Into<Command> + Authorized,
    {
        let authority = self.authority(&req)?;
        let body: B = parse(&req.into_inner().json)?;
        self.0
            .state
            .read(|s| Self::check(&authority, &body.call(s)))?;
        self.apply(body.into()).await
    }

    /// Streams an event for each topic whenever its index passes the last one sent and its
    /// rendering differs from the last one sent, until the client goes away or the server
    /// stops. The values come from the server's `topic_hub` (rendered once per write that
    /// moved the topic, shared by every stream), so a write this stream's topics do not depend
    /// on does not wake it. A topic that is not [`super::topics::ready`] yet is skipped until it is.
    fn watch_topics(&self, topics: Vec<Topic>) -> EventStream {
        let subs: Vec<_> = topics.iter().map(|t| self.0.topics.subscribe(t)).collect();
        let shutdown = self.0.shutdown_signal();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut last_index: Vec<u64> = topics.iter().map(|t| t.min_index).collect();
            let mut last_hash: Vec<Option<u64>> = vec![None; topics.len()];
            let mut changes =
                futures::stream::select_all(subs.iter().enumerate().map(|(i, sub)| {
                    tokio_stream::wrappers::WatchStream::new(sub.rx.clone()).map(move |v| (i, v))
                }));
            loop {
                let next = tokio::select! {
                    next = changes.next() => next,
                    _ = &mut shutdown => return,
                    _ = tx.closed() => return,
                };
                let (i, value) = match next {
                    // Every subscription ended: the hub is gone.
                    None => return,
                    // Not rendered yet (not `ready`): nothing to send.
                    Some((_, None)) => continue,
                    Some((i, Some(value))) => (i, value),
                };
                let event = match value {
                    Ok(r) if r.index > last_index[i] => {
                        last_index[i] = r.index;
                        if last_hash[i] == Some(r.hash) {
                            continue;
                        }
                        last_hash[i] = Some(r.hash);
                        Ok(WatchEvent {
                            topic: i as u32,
                            index: r.index,
                            json: r.json.to_vec(),
                        })
                    }
                    Ok(_) => continue,
                    Err(e) => Err(Status::internal(e)),
                };
                if tx.send(event).await.is_err() {
                    return;
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
        self.authorize(
            &req,
            &Call::Watch {
                kind,
                name: &req.get_ref().name,
            },
        )?;
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

/// A write body, reduced to what `grpc_authz` decides on; `state` is what it would change
/// (a registration taking over a service ID, a deregistration naming one).
trait Authorized {
    fn call<'a>(&'a self, state: &'a State) -> Call<'a>;
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

impl Authorized for RegisterBody {
    /// The node, the service and a proxy's destination, and the services already registered
    /// under an ID this body takes over or attaches a check to.
    fn call<'a>(&'a self, state: &'a State) -> Call<'a> {
        let node = self.node.node.as_str();
        let on_node = state.services.get(node);
        let existing = |id: &str| on_node.and_then(|m| m.get(id)).map(|s| s.service.as_str());
        let mut services = Vec::new();
        if let Some(svc) = &self.service {
            services.push(svc.service.as_str());
            services.extend(svc.connect_target());
            let id = if svc.id.is_empty() {
                &svc.service
            } else {
                &svc.id
            };
            services.extend(existing(id));
        }
        for c in self.checks.iter().filter(|c| !c.service_id.is_empty()) {
            services.extend(existing(&c.service_id));
        }
        services.dedup();
        Call::Register { node, services }
    }
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

/// `SyncNode` body: the catalog writes of one anti-entropy pass, all to `node`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SyncBody {
    node: String,
    ops: Vec<SyncOp>,
}

/// One write of a [`SyncBody`], tagged `Op` as the command it becomes.
#[derive(serde::Deserialize)]
#[serde(tag = "Op")]
enum SyncOp {
    Register(Box<RegisterBody>),
    Deregister(DeregisterBody),
    UpdateCheck(CheckUpdateBody),
}

impl SyncOp {
    fn node(&self) -> &str {
        match self {
            SyncOp::Register(b) => &b.node.node,
            SyncOp::Deregister(b) => &b.node,
            SyncOp::UpdateCheck(b) => &b.node,
        }
    }

    fn call<'a>(&'a self, state: &'a State) -> Call<'a> {
        match self {
            SyncOp::Register(b) => b.call(state),
            SyncOp::Deregister(b) => b.call(state),
            SyncOp::UpdateCheck(b) => b.call(state),
        }
    }

    fn into_command(self) -> Command {
        match self {
            SyncOp::Register(b) => (*b).into(),
            SyncOp::Deregister(b) => b.into(),
            SyncOp::UpdateCheck(b) => b.into(),
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

impl Authorized for DeregisterBody {
    /// A service by the name its ID has now; the node (for the node, a check, or an ID the
    /// node does not have).
    fn call<'a>(&'a self, state: &'a State) -> Call<'a> {
        let service = self.service_id.as_deref().and_then(|id| {
            state
                .services
                .get(&self.node)
                .and_then(|m| m.get(id))
                .map(|s| s.service.as_str())
        });
        match service {
            Some(service) => Call::DeregisterService { service },
            None => Call::DeregisterNode { node: &self.node },
        }
    }
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

impl Authorized for CheckUpdateBody {
    fn call<'a>(&'a self, _: &'a State) -> Call<'a> {
        Call::UpdateCheck { node: &self.node }
    }
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

impl Authorized for IntentionUpsertBody {
    fn call<'a>(&'a self, _: &'a State) -> Call<'a> {
        Call::UpsertIntention {
            destination: &self.intention.destination_name,
        }
    }
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

impl Authorized for IntentionDeleteBody {
    fn call<'a>(&'a self, _: &'a State) -> Call<'a> {
        Call::DeleteIntention {
            destination: &self.destination_name,
        }
    }
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

    /// One anti-entropy pass as one entry: each op is authorized as its own RPC would be, and
    /// every op must name the batch's node.
    async fn sync_node(&self, req: Request<JsonRequest>) -> Result<Response<WriteReply>, Status> {
        let authority = self.authority(&req)?;
        let body: SyncBody = parse(&req.into_inner().json)?;
        if let Some(other) = body.ops.iter().map(SyncOp::node).find(|n| *n != body.node) {
            return Err(Status::invalid_argument(format!(
                "a node sync holds only writes to its node {:?} (got one for {other:?})",
                body.node
            )));
        }
        self.0.state.read(|s| {
            body.ops
                .iter()
                .try_for_each(|op| Self::check(&authority, &op.call(s)))
        })?;
        self.apply(Command::SyncNode {
            node: body.node,
            ops: body.ops.into_iter().map(SyncOp::into_command).collect(),
        })
        .await
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
        // The name checked is the name signed: `Server::sign_csr` signs `service` only for a
        // CSR whose SPIFFE ID names exactly it (and this server's datacenter).
        self.authorize(
            &req,
            &Call::SignCsr {
                service: &req.get_ref().service,
            },
        )?;
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
        let authority = self.authority(&req)?;
        for t in &req.get_ref().topics {
            Self::check(
                &authority,
                &Call::Watch {
                    kind: t.kind(),
                    name: &t.name,
                },
            )?;
        }
        Ok(Response::new(self.watch_topics(req.into_inner().topics)))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        self.authorize(
            &req,
            &Call::Heartbeat {
                node: &req.get_ref().node,
            },
        )?;
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
        self.authorize(
            &req,
            &Call::NodeState {
                node: &req.get_ref().node,
            },
        )?;
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

    /// The token in `x-consul-token` (none: the anonymous token; none but the internal secret:
    /// management rights) resolved for the agent. Unknown: `ACL not found`.
    async fn resolve_token(
        &self,
        req: Request<ResolveTokenRequest>,
    ) -> Result<Response<ResolveTokenReply>, Status> {
        let s = &self.0;
        let authority = self.authority(&req)?;
        Self::check(&authority, &Call::ResolveToken)?;
        let resolved = match authority {
            Authority::Unrestricted if s.config.acl.enabled => s.acl_resolved_internal(),
            _ => s
                .acl_resolve_for_agent(presented_token(&req)?)
                .map_err(acl_status)?,
        };
        Ok(Response::new(ResolveTokenReply {
            json: json(&resolved)?,
        }))
    }

    async fn http(&self, req: Request<HttpRequest>) -> Result<Response<HttpReply>, Status> {
        self.authorize(&req, &Call::Http)?;
        Ok(Response::new(
            super::api::forwarded::handle(&self.0, req.into_inner()).await,
        ))
    }
}
