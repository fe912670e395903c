//! Anti-entropy and liveness: the agent makes the catalog's view of its node match its local
//! state (on every local change, when a server becomes reachable again, and periodically), and
//! sends the heartbeat that keeps its node's `serfHealth` check passing.
//!
//! Every write here acts as the agent itself (`ServerConn::call`): the servers' internal
//! secret in the agent a server embeds, else the agent token, which must therefore cover the
//! node (`node:write`) and every service registered on it (`service:write`), e.g. a policy
//! with `node_prefix`/`service_prefix` rules. Consul instead syncs each service with the
//! token that registered it; remembering that token per service (persisted with it, mode
//! 0600) is not done yet.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::Agent;
use crate::model::SERF_CHECK;
use crate::model::{HealthCheck, HealthStatus, Node, ServiceInstance};
use crate::proto::{HeartbeatRequest, JsonRequest, NodeStateRequest};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Remote {
    node: Option<Node>,
    services: Vec<ServiceInstance>,
    checks: Vec<HealthCheck>,
}

fn req(v: serde_json::Value) -> JsonRequest {
    JsonRequest {
        json: serde_json::to_vec(&v).expect("JSON value serializes"),
    }
}

/// The catalog writes of one anti-entropy pass, each tagged with its `Op`, sent as one
/// `SyncNode` RPC (one Raft entry: a blocking query wakes once per pass, not once per write).
#[derive(Default)]
struct Ops(Vec<serde_json::Value>);

impl Ops {
    fn push(&mut self, op: &str, mut body: serde_json::Value) {
        if let Some(o) = body.as_object_mut() {
            o.insert("Op".into(), op.into());
        }
        self.0.push(body);
    }

    fn register(&mut self, body: serde_json::Value) {
        self.push("Register", body);
    }

    fn deregister(&mut self, body: serde_json::Value) {
        self.push("Deregister", body);
    }

    /// Sends the pass's writes to a server (failing over between servers); none: no RPC.
    async fn send(self, agent: &Agent, node: &str) -> Result<usize, tonic::Status> {
        let n = self.0.len();
        if n == 0 {
            return Ok(0);
        }
        let r = req(json!({"Node": node, "Ops": self.0}));
        agent
            .conn
            .call(|mut c| {
                let r = r.clone();
                async move { c.sync_node(r).await }
            })
            .await?;
        Ok(n)
    }
}

/// Output-only changes are not pushed on their own (as Consul defers them with
/// `check_update_interval`): they would wake every blocking health query for nothing. They ride
/// along with the next status change or registration.
fn same_check(a: &HealthCheck, b: &HealthCheck) -> bool {
    a.name == b.name
        && a.status == b.status
        && a.service_id == b.service_id
        && a.service_name == b.service_name
}

/// One anti-entropy pass: compares the local state with the catalog's view of this node and
/// sends every difference as one batch; returns how many writes it made and the local index it
/// synced.
pub async fn sync_once(agent: &Agent) -> Result<(usize, u64), tonic::Status> {
    let node_name = agent.config.node.clone();
    let (services, checks, local_index) = {
        let local = agent.local.lock();
        (
            local.services.values().cloned().collect::<Vec<_>>(),
            local.effective_checks(),
            local.index,
        )
    };
    let reply = agent
        .conn
        .call(|mut c| {
            let node = node_name.clone();
            async move { c.node_state(NodeStateRequest { node }).await }
        })
        .await?
        .into_inner();
    let remote: Remote = serde_json::from_slice(&reply.json)
        .map_err(|e| tonic::Status::internal(format!("malformed node state: {e}")))?;
    let node = agent.node();
    let mut ops = Ops::default();
    let node_ok = remote.node.as_ref().is_some_and(|n| {
        n.id == node.id && n.address == node.address && n.datacenter == node.datacenter
    });
    let has_serf = remote.checks.iter().any(|c| c.check_id == SERF_CHECK);
    if !node_ok || !has_serf {
        let serf = (!has_serf).then(|| HealthCheck {
            node: node_name.clone(),
            check_id: SERF_CHECK.into(),
            name: "Serf Health Status".into(),
            status: HealthStatus::Passing,
            notes: String::new(),
            output: "Agent alive and reachable".into(),
            service_id: String::new(),
            service_name: String::new(),
            create_index: 0,
            modify_index: 0,
        });
        ops.register(
            json!({"Node": node, "Service": null, "Checks": serf.into_iter().collect::<Vec<_>>()}),
        );
    }
    for s in &services {
        let remote_s = remote.services.iter().find(|r| r.id == s.id);
        let mine: Vec<&HealthCheck> = checks.iter().filter(|c| c.service_id == s.id).collect();
        let checks_known = mine
            .iter()
            .all(|c| remote.checks.iter().any(|r| r.check_id == c.check_id));
        if remote_s.is_none_or(|r| !r.same_registration(s)) || !checks_known {
            ops.register(json!({"Node": node, "Service": s, "Checks": mine}));
        }
    }
    for r in &remote.services {
        if !services.iter().any(|s| s.id == r.id) {
            ops.deregister(json!({"Node": node_name, "ServiceID": r.id}));
        }
    }
    // The service registrations above carry their checks' current statuses. Now the remaining
    // differences, check by check.
    for c in &checks {
        match remote.checks.iter().find(|r| r.check_id == c.check_id) {
            None if c.service_id.is_empty() => {
                ops.register(json!({"Node": node, "Service": null, "Checks": [c]}));
            }
            Some(r) if !same_check(r, c) => {
                if r.name != c.name || r.service_id != c.service_id {
                    ops.register(json!({"Node": node, "Service": null, "Checks": [c]}));
                } else {
                    let body = json!({
                        "Node": node_name, "CheckID": c.check_id,
                        "Status": c.status, "Output": c.output,
                    });
                    ops.push("UpdateCheck", body);
                }
            }
            _ => {}
        }
    }
    for r in &remote.checks {
        let owned_by_removed_service =
            !r.service_id.is_empty() && !services.iter().any(|s| s.id == r.service_id);
        if r.check_id != SERF_CHECK
            && !owned_by_removed_service
            && !checks.iter().any(|c| c.check_id == r.check_id)
        {
            ops.deregister(json!({"Node": node_name, "CheckID": r.check_id}));
        }
    }
    Ok((ops.send(agent, &node_name).await?, local_index))
}

/// Keeps the catalog in sync until shutdown.
pub async fn run(agent: Arc<Agent>) {
    let mut shutdown = std::pin::pin!(agent.shutdown_signal());
    let mut connected = agent.connected.subscribe();
    let mut backoff = Duration::from_millis(200);
    loop {
        match sync_once(&agent).await {
            Ok((n, index)) => {
                if n > 0 {
                    tracing::debug!(writes = n, "anti-entropy synced the catalog");
                }
                agent.synced.send_replace(index);
                backoff = Duration::from_millis(200);
                let lost = tokio::select! {
                    _ = agent.sync_now.notified() => false,
                    _ = tokio::time::sleep(agent.config.sync_interval) => false,
                    _ = connected.wait_for(|c| !*c) => true,
                    _ = &mut shutdown => return,
                };
                if lost {
                    // Lost the servers: wait for them to come back, then resync.
                    tokio::select! {
                        _ = connected.wait_for(|c| *c) => {}
                        _ = &mut shutdown => return,
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "anti-entropy failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sends heartbeats until shutdown, recording whether a server answers.
pub async fn heartbeat(agent: Arc<Agent>) {
    let mut shutdown = std::pin::pin!(agent.shutdown_signal());
    loop {
        let node = agent.config.node.clone();
        let ok = agent
            .conn
            .call(|mut c| {
                let mut r = tonic::Request::new(HeartbeatRequest {
                    node: node.clone(),
                    hops: 0,
                });
                r.set_timeout(Duration::from_secs(2));
                async move { c.heartbeat(r).await }
            })
            .await;
        let up = match &ok {
            Ok(_) => true,
            // A server answered but has no leader right now: it is still reachable.
            Err(s) => s.code() != tonic::Code::Unavailable || s.message().contains("leader"),
        };
        let was = *agent.connected.borrow();
        if up != was {
            agent.connected.send_replace(up);
        }
        tokio::select! {
            _ = tokio::time::sleep(agent.config.heartbeat) => {}
            _ = &mut shutdown => return,
        }
    }
}
