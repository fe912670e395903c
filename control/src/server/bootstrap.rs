//! Cluster formation, as Consul's `-bootstrap-expect` and `-retry-join` do it.
//!
//! A server that is not yet part of a cluster greets the `--join` addresses (and learns whom
//! they know). If one of them already belongs to a cluster it asks to be added (the leader adds
//! it as a learner, lets it catch up, then promotes it). Otherwise, once `bootstrap_expect`
//! servers know of each other, the one with the lowest node ID initializes Raft with all of
//! them; the others wait to be contacted by the new leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{HelloRequest, ServerInfo};
use crate::raft::MeshNode;

const RETRY: Duration = Duration::from_millis(200);

pub(super) async fn run(server: Arc<Server>) {
    let mut shutdown = std::pin::pin!(server.shutdown_signal());
    let mut refusals = Refusals::default();
    loop {
        match step(&server, &mut refusals).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => refusals.note("join", &e),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// The last failure seen per peer, so each new reason is logged once (a refused TLS handshake
/// says why: no server certificate, another CA) instead of every retry.
#[derive(Default)]
struct Refusals(HashMap<String, String>);

impl Refusals {
    fn note(&mut self, peer: &str, reason: &str) {
        if self.0.get(peer).map(String::as_str) != Some(reason) {
            tracing::warn!(%peer, %reason, "bootstrap: could not reach or join a server; retrying");
            self.0.insert(peer.to_string(), reason.to_string());
        }
    }
}

/// A failed call's reason, with the transport's cause (a TLS refusal) when there is one.
fn reason(status: &tonic::Status) -> String {
    use std::error::Error;
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(s) = source {
        // Transport errors repeat their cause in their own text: add each reason once.
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

fn me(server: &Server) -> ServerInfo {
    ServerInfo {
        id: server.id,
        name: server.me.name.clone(),
        rpc_addr: server.me.rpc_addr.clone(),
        http_addr: server.me.http_addr.clone(),
    }
}

/// One round of discovery; `Ok(true)` once this server belongs to a cluster.
async fn step(server: &Arc<Server>, refusals: &mut Refusals) -> Result<bool, String> {
    let initialized = server
        .raft
        .is_initialized()
        .await
        .map_err(|e| e.to_string())?;
    if initialized {
        return Ok(true);
    }
    let mut peer_in_cluster = None;
    for addr in &server.config.join {
        if *addr == server.me.rpc_addr {
            continue;
        }
        let Ok(ch) = server.channels.get(addr) else {
            continue;
        };
        let mut client = ClusterClient::new(ch);
        let mut req = tonic::Request::new(HelloRequest {
            from: Some(me(server)),
            seal_check: server.seal_check.clone(),
        });
        req.set_timeout(Duration::from_secs(2));
        let reply = match client.hello(req).await {
            Ok(r) => r,
            Err(status) => {
                refusals.note(addr, &reason(&status));
                continue;
            }
        };
        let reply = reply.into_inner();
        if let Err(e) = crate::seal::check_peer(&server.seal_check, &reply.seal_check) {
            server.fail(format!(
                "refusing to form a cluster with server {addr}: {e}"
            ));
            return Ok(true);
        }
        let mut known = server.known.lock();
        for s in reply.known.into_iter().chain(reply.me.clone()) {
            known.insert(
                s.id,
                MeshNode {
                    name: s.name,
                    rpc_addr: s.rpc_addr,
                    http_addr: s.http_addr,
                },
            );
        }
        if reply.initialized {
            peer_in_cluster = Some(addr.clone());
        }
    }
    if let Some(addr) = peer_in_cluster {
        tracing::info!(via = %addr, "joining existing cluster");
        let ch = server.channels.get(&addr).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(me(server));
        req.set_timeout(Duration::from_secs(120));
        ClusterClient::new(ch)
            .join(req)
            .await
            .map_err(|e| reason(&e))?;
        return Ok(true);
    }
    let known = server.known.lock().clone();
    if known.len() < server.config.bootstrap_expect.max(1) {
        return Ok(false);
    }
    let lowest = *known.keys().next().expect("known includes this server");
    if lowest != server.id {
        // The lowest-ID server bootstraps; we are added when it replicates to us.
        return Ok(false);
    }
    tracing::info!(servers = known.len(), "bootstrapping cluster");
    match server.raft.initialize(known).await {
        Ok(()) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}
