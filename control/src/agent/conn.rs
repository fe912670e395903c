//! The agent's one connection to the servers: a single HTTP/2 channel to one server at a time,
//! failing over to the next `--server` address when the current one is unavailable. Every RPC,
//! watch stream and forwarded HTTP request shares it.
//!
//! It is also the one place an RPC gets its credentials ([`Credential`]): the agent's own work
//! ([`ServerConn::call`]: anti-entropy, heartbeats, watches) carries the agent's identity
//! ([`AgentIdentity`]: the servers' internal secret for the agent a server embeds, else the
//! agent token), and work done for an HTTP caller ([`ServerConn::call_as`]: leaf signing,
//! token resolution, forwarded requests) carries that caller's token.

use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::ServerSecretSource;
use crate::http::token::{GRPC_SERVER_SECRET_METADATA, GRPC_TOKEN_METADATA};
use crate::proto::catalog_client::CatalogClient;
use crate::raft::MAX_MESSAGE;

/// A client whose every request carries one [`Credential`].
pub type Client = CatalogClient<InterceptedService<Channel, Credential>>;

/// What one RPC presents: a token in `x-consul-token`, the servers' internal secret in
/// `x-mesh-server-secret`, or nothing (the anonymous token). `Debug` never shows the value.
#[derive(Clone, Default)]
pub struct Credential(Option<(&'static str, AsciiMetadataValue)>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((key, _)) => write!(f, "Credential({key}: <redacted>)"),
            None => f.write_str("Credential(anonymous)"),
        }
    }
}

/// A token that cannot travel in gRPC metadata (not visible ASCII) names no token.
#[derive(Debug, thiserror::Error)]
#[error("ACL not found")]
pub struct UnusableToken;

impl Credential {
    /// A caller's token (`None` or empty: anonymous).
    pub fn token(token: Option<&str>) -> Result<Self, UnusableToken> {
        Self::pair(GRPC_TOKEN_METADATA, token)
    }

    fn pair(key: &'static str, value: Option<&str>) -> Result<Self, UnusableToken> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(Self(None)),
            Some(v) => {
                let mut v = MetadataValue::try_from(v).map_err(|_| UnusableToken)?;
                v.set_sensitive(true);
                Ok(Self(Some((key, v))))
            }
        }
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some((key, value)) = &self.0 {
            req.metadata_mut().insert(*key, value.clone());
        }
        Ok(req)
    }
}

/// The agent's tokens. Who the agent is when it works for itself: the servers' internal
/// secret when it is embedded in a server and the cluster has one, else its agent token
/// (changed at runtime through `PUT /v1/agent/token/agent`), else anonymous. And the `default`
/// token, which HTTP requests carrying none act with (`PUT /v1/agent/token/default`, as
/// Consul's `acl.tokens.default`). No value is ever printed.
#[derive(Default)]
pub struct AgentIdentity {
    token: RwLock<String>,
    default_token: RwLock<String>,
    server_secret: Option<ServerSecretSource>,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("token_set", &!self.token.read().is_empty())
            .field("default_token_set", &!self.default_token.read().is_empty())
            .field("server_secret", &self.server_secret)
            .finish()
    }
}

impl AgentIdentity {
    pub fn new(token: String, server_secret: Option<ServerSecretSource>) -> Self {
        Self {
            token: RwLock::new(token),
            default_token: RwLock::new(String::new()),
            server_secret,
        }
    }

    /// Replaces the agent token (empty: anonymous).
    pub fn set_token(&self, token: String) {
        *self.token.write() = token;
    }

    /// Replaces the default token (empty: none, requests without a token are anonymous).
    pub fn set_default_token(&self, token: String) {
        *self.default_token.write() = token;
    }

    /// The token of requests that carry none, if one is set.
    pub fn default_token(&self) -> Option<String> {
        Some(self.default_token.read().clone()).filter(|t| !t.is_empty())
    }

    /// The credential of the agent's own RPCs. A value that cannot travel in metadata is
    /// dropped (anonymous) rather than failing every RPC; `meshd agent` refuses such a token
    /// at start and `PUT /v1/agent/token/*` refuses it too.
    pub fn credential(&self) -> Credential {
        let secret = self.server_secret.as_ref().and_then(|s| (s.0)());
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            return Credential::pair(GRPC_SERVER_SECRET_METADATA, Some(&secret))
                .unwrap_or_default();
        }
        Credential::token(Some(self.token.read().as_str())).unwrap_or_default()
    }
}

/// Errors setting up the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("no --server address given")]
    NoServers,
    #[error("invalid server address {addr:?}: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

struct Current {
    index: usize,
    channel: Channel,
}

/// A failover connection to the servers.
pub struct ServerConn {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<crate::tls::RpcTls>>,
    current: Mutex<Current>,
    identity: Arc<AgentIdentity>,
}

impl ServerConn {
    pub fn new(
        servers: &[String],
        identity: Arc<AgentIdentity>,
        tls: Option<Arc<crate::tls::RpcTls>>,
    ) -> Result<Self, ConnError> {
        if servers.is_empty() {
            return Err(ConnError::NoServers);
        }
        let endpoints = servers
            .iter()
            .map(|addr| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(2))
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(5))
                            .keep_alive_timeout(Duration::from_secs(3))
                            .keep_alive_while_idle(true)
                    })
                    .map_err(|source| ConnError::BadAddress {
                        addr: addr.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = crate::tls::transport::channel(&endpoints[0], tls.as_ref());
        Ok(Self {
            endpoints,
            tls,
            current: Mutex::new(Current { index: 0, channel }),
            identity,
        })
    }

    /// Who the agent's own RPCs act as.
    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    /// A client on the current channel presenting `credential`.
    fn client(&self, credential: Credential) -> Client {
        let channel = self.current.lock().channel.clone();
        CatalogClient::with_interceptor(channel, credential)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Address of the server currently used.
    pub fn current_server(&self) -> String {
        let i = self.current.lock().index;
        self.endpoints[i]
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Moves to the next server.
    pub fn failover(&self) {
        let mut cur = self.current.lock();
        let next = (cur.index + 1) % self.endpoints.len();
        if next != cur.index {
            tracing::info!(server = %self.endpoints[next].uri(), "switching to another server");
            cur.index = next;
            cur.channel = crate::tls::transport::channel(&self.endpoints[next], self.tls.as_ref());
        }
    }

    /// Runs `f` as the agent itself (its [`AgentIdentity`]) against the current server,
    /// failing over to the next one on `Unavailable`, trying each server at most once.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_as(self.identity.credential(), f).await
    }

    /// [`ServerConn::call`] for an HTTP caller: the RPC carries `credential` (the caller's
    /// token), never the agent's own.
    pub async fn call_as<T, F, Fut>(&self, credential: Credential, f: F) -> Result<T, Status>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut last = Status::unavailable("no server reachable");
        for _ in 0..self.endpoints.len() {
            match f(self.client(credential.clone())).await {
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    last = s;
                    self.failover();
                }
                other => return other,
            }
        }
        Err(last)
    }
}
