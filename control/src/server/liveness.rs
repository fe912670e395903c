//! Agent liveness, in place of Consul's gossip failure detector: agents send a heartbeat every
//! second; the leader remembers when it last heard from each node and turns the node's
//! `serfHealth` check critical once it has been silent for `FAIL_AFTER` (and passing again when
//! it comes back). Every instance on that node then fails `?passing` health queries.
//!
//! Bound: a node is marked critical at most `FAIL_AFTER + TICK` (plus one Raft commit) after its
//! last heartbeat, i.e. within 6 seconds. A new leader gives every node a full `FAIL_AFTER` of
//! grace before judging it, since it has heard nothing yet.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Server, ServerError};
use crate::fsm::Command;
use crate::model::{HealthStatus, SERF_CHECK};
use crate::proto::HeartbeatRequest;
use crate::proto::catalog_client::CatalogClient;

/// Silence after which a node is considered gone.
pub const FAIL_AFTER: Duration = Duration::from_secs(5);
/// How often the leader looks.
pub const TICK: Duration = Duration::from_millis(500);

/// Last heartbeat per node, kept by whichever server is leader.
#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<String, Instant>>,
    leader_since: Mutex<Option<Instant>>,
}

impl Liveness {
    fn seen(&self, node: &str) {
        self.last_seen
            .lock()
            .insert(node.to_string(), Instant::now());
    }
}

impl Server {
    /// Records a heartbeat from `node`, forwarding it to the leader.
    pub async fn heartbeat(&self, node: &str, hops: u32) -> Result<(), ServerError> {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(l) if l == self.id => {
                self.liveness.seen(node);
                Ok(())
            }
            Some(l) if hops < 2 => {
                let Some(leader) = m.membership_config.membership().get_node(&l).cloned() else {
                    return Err(ServerError::NoLeader);
                };
                if self.faults.is_blocked(l) {
                    return Err(ServerError::NoLeader);
                }
                let ch = self
                    .channels
                    .get(&leader.rpc_addr)
                    .map_err(|e| ServerError::Forward {
                        leader: leader.rpc_addr.clone(),
                        reason: e.into(),
                    })?;
                let mut req = tonic::Request::new(HeartbeatRequest {
                    node: node.to_string(),
                    hops: hops + 1,
                });
                req.set_timeout(Duration::from_secs(2));
                // This server authorized the agent's heartbeat; it speaks for it to the leader.
                crate::raft::secret::attach_held(&mut req, &self.state);
                CatalogClient::new(ch)
                    .heartbeat(req)
                    .await
                    .map_err(|s| ServerError::from_status(&leader.rpc_addr, s))?;
                Ok(())
            }
            _ => Err(ServerError::NoLeader),
        }
    }

    /// One look by the leader: proposes `serfHealth` changes for nodes that went silent or
    /// came back.
    pub(super) async fn check_liveness(&self, is_leader: bool) -> Result<(), ServerError> {
        let now = Instant::now();
        {
            let mut since = self.liveness.leader_since.lock();
            if !is_leader {
                *since = None;
                return Ok(());
            }
            let start = *since.get_or_insert(now);
            if now.duration_since(start) < FAIL_AFTER {
                return Ok(());
            }
        }
        let nodes: Vec<(String, HealthStatus)> = self.state.read(|s| {
            s.checks
                .iter()
                .filter_map(|(node, checks)| {
                    checks.get(SERF_CHECK).map(|c| (node.clone(), c.status))
                })
                .collect()
        });
        let last_seen = self.liveness.last_seen.lock().clone();
        for (node, status) in nodes {
            let alive = last_seen
                .get(&node)
                .is_some_and(|t| now.duration_since(*t) < FAIL_AFTER);
            let (want, output) = if alive {
                (HealthStatus::Passing, "Agent alive and reachable")
            } else {
                (HealthStatus::Critical, "Agent not live or unreachable")
            };
            if want != status {
                tracing::info!(%node, status = want.as_str(), "node liveness changed");
                self.write(Command::UpdateCheck {
                    node,
                    check_id: SERF_CHECK.to_string(),
                    status: want,
                    output: output.to_string(),
                })
                .await?;
            }
        }
        Ok(())
    }
}
