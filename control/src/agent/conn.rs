//! The agent's one connection to the servers: a single HTTP/2 channel to one server at a time,
//! failing over to the next `--server` address when the current one is unavailable. Every RPC,
//! watch stream and forwarded HTTP request shares it.

use parking_lot::Mutex;
use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::proto::catalog_client::CatalogClient;
use crate::raft::MAX_MESSAGE;

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
    current: Mutex<Current>,
}

impl ServerConn {
    pub fn new(servers: &[String]) -> Result<Self, ConnError> {
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
        let channel = endpoints[0].connect_lazy();
        Ok(Self {
            endpoints,
            current: Mutex::new(Current { index: 0, channel }),
        })
    }

    /// A client on the current channel.
    pub fn client(&self) -> CatalogClient<Channel> {
        let channel = self.current.lock().channel.clone();
        CatalogClient::new(channel)
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
            cur.channel = self.endpoints[next].connect_lazy();
        }
    }

    /// Runs `f` against the current server, failing over to the next one on `Unavailable`,
    /// trying each server at most once.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(CatalogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut last = Status::unavailable("no server reachable");
        for _ in 0..self.endpoints.len() {
            match f(self.client()).await {
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
