//! Cluster formation, as Consul's `-bootstrap-expect` and `-retry-join` do it.
//!
//! A server that is not yet part of a cluster greets the `--join` addresses (and learns whom
//! they know). If one of them already belongs to a cluster it asks to be added (the leader adds
//! it as a learner, lets it catch up, then promotes it). Otherwise, once `bootstrap_expect`
//! servers know of each other, the one with the lowest node ID initializes Raft with all of
//! them; the others wait to be contacted by the new leader.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{HelloRequest, ServerInfo};
use crate::raft::MeshNode;

const RETRY: Duration = Duration::from_millis(200);

pub(super) async fn run(server: Arc<Server>) {
    let mut shutdown = std::pin::pin!(server.shutdown_signal());
    loop {
        match step(&server).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "bootstrap: will retry"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
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
async fn step(server: &Arc<Server>) -> Result<bool, String> {
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
        let Ok(reply) = client.hello(req).await else {
            continue;
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
            .map_err(|e| e.message().to_string())?;
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
