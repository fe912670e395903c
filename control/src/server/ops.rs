//! The server's operations: writes (proposed on the leader or forwarded to it), linearizable
//! read barriers, membership changes and the CA operations.
//!
//! A call forwarded to the leader presents this server's internal secret (the leader's cluster
//! methods require it, see `raft::secret`); a server that holds none yet does not forward but
//! answers `ServerError::SecretNotReplicated` (retry later). `Join` is open and goes without.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::error::{ForwardError, Refused};
use super::{Server, ServerError};
use crate::ca::{AgentCertRequest, LeafRequest};
use crate::fsm::{self, ApplyResult, Command, Conflict, ServerSecret};
use crate::model::{CaConfig, IssuedLeaf};
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{
    CommandRequest, ConfigurationRequest, ReadIndexRequest, RemovePeerRequest, RotateCaRequest,
    ServerInfo,
};
use crate::raft::{MAX_MESSAGE, MeshNode, NodeId, node_id, secret};
use crate::seal;

/// Most forwarding hops a request may take (a leader change during forwarding adds one).
const MAX_HOPS: u32 = 3;

/// One server in the Raft configuration, as `list-peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub id: NodeId,
    pub node: MeshNode,
    pub leader: bool,
    pub voter: bool,
}

enum Leader {
    Me,
    Other(NodeId, MeshNode),
}

/// A connection to the leader for one forwarded operation, with the leader's address that
/// errors name.
struct ToLeader {
    client: ClusterClient<tonic::transport::Channel>,
    addr: String,
    /// This server's internal secret, when it holds one.
    secret: Option<ServerSecret>,
}

impl ToLeader {
    /// `msg` as a call to one of the leader's servers-only methods, with this server's secret.
    fn internal<T>(&self, msg: T) -> Result<tonic::Request<T>, ServerError> {
        let held = self
            .secret
            .as_ref()
            .ok_or(ServerError::SecretNotReplicated)?;
        let mut req = tonic::Request::new(msg);
        secret::attach(&mut req, held);
        Ok(req)
    }

    /// The leader's answer, or its status turned back into the error it stood for.
    fn answer<T>(
        &self,
        reply: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, ServerError> {
        reply
            .map(tonic::Response::into_inner)
            .map_err(|s| ServerError::from_status(&self.addr, s))
    }

    /// A forwarded write's or rotation's `ApplyResult`, carried as JSON.
    fn apply_result(&self, json: &[u8]) -> Result<ApplyResult, ServerError> {
        let result: ApplyResult =
            serde_json::from_slice(json).map_err(|e| ServerError::Forward {
                leader: self.addr.clone(),
                reason: e.into(),
            })?;
        into_result(result)
    }
}

impl Server {
    fn client(&self, addr: &str) -> Result<ClusterClient<tonic::transport::Channel>, ServerError> {
        let ch = self.channels.get(addr).map_err(|e| ServerError::Forward {
            leader: addr.to_string(),
            reason: e.into(),
        })?;
        Ok(ClusterClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The current leader, waiting up to the write timeout for one to be elected.
    async fn leader(&self) -> Result<Leader, ServerError> {
        let deadline = Instant::now() + self.config.write_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(l) = m.current_leader {
                    if l == self.id {
                        return Ok(Leader::Me);
                    }
                    if let Some(node) = m.membership_config.membership().get_node(&l) {
                        return Ok(Leader::Other(l, node.clone()));
                    }
                }
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
                || self.is_shutting_down()
            {
                return Err(ServerError::NoLeader);
            }
        }
    }

    /// Where an operation only the leader runs goes: `None` when this server leads (run it
    /// here), else a connection to the leader, once the hop budget and the fault injection
    /// allow the hop. Every leader-only operation starts here.
    async fn leader_or_forward(&self, hops: u32) -> Result<Option<ToLeader>, ServerError> {
        let (id, node) = match self.leader().await? {
            Leader::Me => return Ok(None),
            Leader::Other(id, node) => (id, node),
        };
        if hops >= MAX_HOPS {
            return Err(ServerError::NoLeader);
        }
        if self.faults.is_blocked(id) {
            return Err(ServerError::Forward {
                leader: node.rpc_addr,
                reason: ForwardError::FaultInjected,
            });
        }
        Ok(Some(ToLeader {
            client: self.client(&node.rpc_addr)?,
            addr: node.rpc_addr,
            secret: secret::held(&self.state),
        }))
    }

    /// Applies `cmd` through Raft, forwarding to the leader when this server is not it.
    pub async fn write(&self, cmd: Command) -> Result<ApplyResult, ServerError> {
        self.write_hops(cmd, 0).await
    }

    pub(crate) async fn write_hops(
        &self,
        cmd: Command,
        hops: u32,
    ) -> Result<ApplyResult, ServerError> {
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            match self.leader_or_forward(hops).await? {
                // Bounded: a leader cut off from its majority cannot commit, and the caller
                // must hear so instead of waiting for the partition to heal.
                None => {
                    match tokio::time::timeout_at(deadline, self.raft.client_write(cmd.clone()))
                        .await
                        .map_err(|_| ServerError::NoLeader)?
                    {
                        Ok(resp) => return into_result(resp.data),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                            // Leadership moved before the entry was proposed; find the new leader.
                        }
                        Err(e) => return Err(ServerError::Write(Box::new(e))),
                    }
                }
                // Leadership moved before a command only the leader may build was proposed:
                // the new leader decides afresh (the leader refuses it in a forwarded write).
                Some(_) if cmd.leader_only() => return Err(ServerError::NoLeader),
                Some(mut leader) => {
                    let json = serde_json::to_vec(&cmd).map_err(ServerError::Encode)?;
                    let mut req = leader.internal(CommandRequest {
                        json,
                        hops: hops + 1,
                    })?;
                    req.set_timeout(self.config.write_timeout);
                    let reply = leader.client.write(req).await;
                    return leader.apply_result(&leader.answer(reply)?.json);
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index a linearizable read must observe: confirmed by the leader (ReadIndex).
    pub async fn read_index(&self, hops: u32) -> Result<u64, ServerError> {
        match self.leader_or_forward(hops).await? {
            None => match self.raft.ensure_linearizable().await {
                Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                    Err(ServerError::NoLeader)
                }
                Err(e) => Err(ServerError::ReadIndex(Box::new(e))),
            },
            Some(mut leader) => {
                let mut req = leader.internal(ReadIndexRequest {})?;
                req.set_timeout(self.config.write_timeout);
                let reply = leader.client.read_index(req).await;
                Ok(leader.answer(reply)?.index)
            }
        }
    }

    /// Waits until this server's state reflects every write acknowledged before the call.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        let index = self.read_index(0).await?;
        let deadline = Instant::now() + self.config.write_timeout;
        if self.state.wait_applied(index, deadline).await {
            Ok(())
        } else {
            Err(ServerError::ApplyTimeout { index })
        }
    }

    /// The Raft configuration as this server sees it.
    pub fn peers(&self) -> (Vec<PeerEntry>, u64) {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let peers = membership
            .nodes()
            .map(|(id, node)| PeerEntry {
                id: *id,
                node: node.clone(),
                leader: m.current_leader == Some(*id),
                voter: voters.contains(id),
            })
            .collect();
        let index = m.membership_config.log_id().map(|l| l.index).unwrap_or(0);
        (peers, index)
    }

    /// The configuration as the leader sees it (linearizable), or this server's view if `stale`.
    pub async fn configuration(&self, stale: bool) -> Result<(Vec<PeerEntry>, u64), ServerError> {
        if stale {
            return Ok(self.peers());
        }
        // The leader answers from its own view, never forwarding: no hops to count.
        match self.leader_or_forward(0).await? {
            None => Ok(self.peers()),
            Some(mut leader) => {
                let req = leader.internal(ConfigurationRequest {})?;
                let reply = leader.client.configuration(req).await;
                let reply = leader.answer(reply)?;
                let peers = reply
                    .servers
                    .into_iter()
                    .filter_map(|p| {
                        let s = p.server?;
                        Some(PeerEntry {
                            id: s.id,
                            node: MeshNode {
                                name: s.name,
                                rpc_addr: s.rpc_addr,
                                http_addr: s.http_addr,
                            },
                            leader: p.leader,
                            voter: p.voter,
                        })
                    })
                    .collect();
                Ok((peers, reply.index))
            }
        }
    }

    /// Adds a server as a voter: learner first (it catches up, from a snapshot if the log was
    /// compacted), then promoted. Runs on the leader; forwarded otherwise.
    pub async fn join(&self, info: ServerInfo, hops: u32) -> Result<u64, ServerError> {
        match self.leader_or_forward(hops).await? {
            None => {
                let id = info.id;
                let node = MeshNode {
                    name: info.name,
                    rpc_addr: info.rpc_addr,
                    http_addr: info.http_addr,
                };
                let (peers, _) = self.peers();
                if peers
                    .iter()
                    .any(|p| p.id == id && p.voter && p.node == node)
                {
                    return Ok(0);
                }
                tracing::info!(%node, id, "adding server as learner");
                self.raft
                    .add_learner(id, node.clone(), true)
                    .await
                    .map_err(|e| ServerError::Write(Box::new(e)))?;
                let mut voters: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                voters.insert(id);
                tracing::info!(%node, id, "promoting server to voter");
                self.set_voters(voters).await
            }
            Some(mut leader) => {
                let mut req = tonic::Request::new(info);
                req.set_timeout(Duration::from_secs(120));
                let reply = leader.client.join(req).await;
                Ok(leader.answer(reply)?.index)
            }
        }
    }

    /// Makes `voters` the Raft voter set (the leader only); the index of the change.
    async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<u64, ServerError> {
        let resp = self
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| ServerError::Write(Box::new(e)))?;
        Ok(resp.log_id.index)
    }

    /// Removes a server (by node ID, name or RPC address) from the Raft configuration.
    pub async fn remove_peer(
        &self,
        id: &str,
        address: &str,
        hops: u32,
    ) -> Result<u64, ServerError> {
        match self.leader_or_forward(hops).await? {
            None => {
                let (peers, _) = self.peers();
                let target = peers
                    .iter()
                    .find(|p| {
                        (!id.is_empty()
                            && (p.id.to_string() == id || p.node.name == id || node_id(id) == p.id))
                            || (!address.is_empty() && p.node.rpc_addr == address)
                    })
                    .ok_or_else(|| ServerError::PeerNotFound {
                        id: id.to_string(),
                        address: address.to_string(),
                    })?;
                let voters: BTreeSet<NodeId> = peers
                    .iter()
                    .filter(|p| p.voter && p.id != target.id)
                    .map(|p| p.id)
                    .collect();
                if voters.is_empty() {
                    return Err(Refused::LastVoter.into());
                }
                self.set_voters(voters).await
            }
            Some(mut leader) => {
                let req = leader.internal(RemovePeerRequest {
                    id: id.to_string(),
                    address: address.to_string(),
                })?;
                let reply = leader.client.remove_peer(req).await;
                Ok(leader.answer(reply)?.index)
            }
        }
    }

    /// Rotates the CA: a new root, cross-signed by the current one, becomes active atomically.
    /// The new root is generated, or taken from `config`'s `RootCert`/`PrivateKey` once it
    /// passes `CaProvider::import_root`. Runs on the leader, which builds the command itself
    /// (root generation is not part of the deterministic apply, and a root is never taken from
    /// a remote caller); a follower forwards the request.
    pub async fn rotate_ca(
        &self,
        config: Option<CaConfig>,
        hops: u32,
    ) -> Result<ApplyResult, ServerError> {
        match self.leader_or_forward(hops).await? {
            None => {
                self.read_barrier().await?;
                let (active, serial, td) = self.state.read(|s| {
                    (
                        s.ca.active().cloned(),
                        s.ca.next_serial,
                        s.ca.trust_domain.clone(),
                    )
                });
                let active = active.ok_or_else(|| ServerError::from(Refused::CaNotInitialized))?;
                let key = self.config.encrypt_key.as_ref();
                let signer = seal::root::open(key, &active)?;
                let now = OffsetDateTime::now_utc();
                let supplied = config
                    .as_ref()
                    .map(fsm::supplied_root)
                    .transpose()
                    .map_err(Refused::from)?
                    .flatten();
                let was_supplied = supplied.is_some();
                let new_root = match supplied {
                    Some(r) => self
                        .ca
                        .import_root(r.cert_pem, r.key_pem, &td, serial, now)?,
                    None => self.ca.generate_root(&td, serial, now)?,
                };
                let config = config.map(fsm::without_root_material);
                if new_root.root.id == active.root.id {
                    // The active root supplied again: only the rest of the configuration.
                    return match config {
                        Some(config) => self.write(Command::CaSetConfig { config }).await,
                        None => Err(ServerError::Apply(Conflict::RootPresent.into())),
                    };
                }
                let cross = self.ca.cross_sign(&signer, &new_root, now)?;
                drop(signer);
                let new_root = seal::root::seal(key, new_root)?;
                tracing::info!(old = %active.root.id, new = %new_root.root.id, supplied = was_supplied, "rotating CA root");
                self.write(Command::CaRotate {
                    expected_active: active.root.id.clone(),
                    new_root: Box::new(new_root),
                    cross_signed_pem: cross,
                    config,
                    now_unix: now.unix_timestamp(),
                })
                .await
            }
            Some(mut leader) => {
                let config_json = match &config {
                    Some(c) => serde_json::to_vec(c).map_err(ServerError::Encode)?,
                    None => Vec::new(),
                };
                let req = leader.internal(RotateCaRequest {
                    config_json,
                    hops: hops + 1,
                })?;
                let reply = leader.client.rotate_ca(req).await;
                leader.apply_result(&leader.answer(reply)?.json)
            }
        }
    }

    /// Updates the CA configuration; a change to the root's key settings or provider rotates
    /// the root (as Consul does), anything else (e.g. `LeafCertTTL`) is stored as is.
    pub async fn set_ca_config(&self, config: CaConfig) -> Result<ApplyResult, ServerError> {
        let current = self.state.read(|s| s.ca.config.clone());
        let root_keys = [
            "PrivateKeyType",
            "PrivateKeyBits",
            "RootCertTTL",
            "PrivateKey",
            "RootCert",
        ];
        // A supplied root always goes through rotation (validated and cross-signed by the
        // leader), never into a stored configuration.
        let needs_rotation = match &current {
            _ if fsm::has_root_material(&config) => true,
            None => false,
            Some(cur) => {
                cur.provider != config.provider
                    || root_keys.iter().any(|k| {
                        cur.config.get(*k) != config.config.get(*k)
                            && config.config.contains_key(*k)
                    })
            }
        };
        let key_type = config.config.get("PrivateKeyType").and_then(|v| v.as_str());
        let key_bits = config.config.get("PrivateKeyBits").and_then(|v| v.as_u64());
        if key_type.is_some_and(|t| t != "ec") || key_bits.is_some_and(|b| b != 256) {
            return Err(Refused::UnsupportedRootKey {
                key_type: key_type.unwrap_or("ec").to_string(),
                key_bits: key_bits.unwrap_or(256),
            }
            .into());
        }
        if config.provider != self.ca.name() {
            return Err(Refused::UnknownCaProvider {
                provider: config.provider.clone(),
                available: self.ca.name(),
            }
            .into());
        }
        // The root that will sign the leaves: a new one (its RootCertTTL) or the active one.
        let root_left = if needs_rotation {
            fsm::root_ttl(&config)
        } else {
            self.state
                .read(|s| s.ca.active().map(|r| r.root.not_after.clone()))
                .and_then(|t| time_left(&t))
        };
        fsm::check_leaf_ttl(&config, root_left).map_err(Refused::LeafTtl)?;
        if needs_rotation {
            self.rotate_ca(Some(config), 0).await
        } else {
            self.write(Command::CaSetConfig { config }).await
        }
    }

    /// Signs a CSR for `service` in this server's datacenter (`datacenter` must be it, or empty)
    /// with the active root. Any server can sign: the root key is in the replicated state. The
    /// CSR's SPIFFE ID must name exactly `service` in this datacenter (`CaProvider::sign_leaf`),
    /// so authorizing `service` authorizes the identity signed.
    pub fn sign_csr(
        &self,
        service: &str,
        datacenter: &str,
        csr_pem: &str,
    ) -> Result<IssuedLeaf, ServerError> {
        let (signer, td, ttl) = self.signer(datacenter)?;
        let leaf = self.ca.sign_leaf(
            &signer,
            &LeafRequest {
                csr_pem,
                trust_domain: &td,
                datacenter: &self.config.datacenter,
                service,
                ttl,
            },
            OffsetDateTime::now_utc(),
        )?;
        Ok(leaf)
    }

    /// Signs an auto-encrypt agent certificate for `node` (`server::auto_encrypt` checked the
    /// caller): the same root, trust domain and lifetime (`LeafCertTTL`) as leaves.
    pub fn sign_agent_csr(
        &self,
        node: &str,
        datacenter: &str,
        csr_pem: &str,
    ) -> Result<IssuedLeaf, ServerError> {
        let (signer, td, ttl) = self.signer(datacenter)?;
        let cert = self.ca.sign_agent(
            &signer,
            &AgentCertRequest {
                csr_pem,
                trust_domain: &td,
                datacenter: &self.config.datacenter,
                node,
                ttl,
            },
            OffsetDateTime::now_utc(),
        )?;
        Ok(cert)
    }

    /// The active root, opened (unsealed) in memory, with the trust domain and leaf lifetime,
    /// for a request naming `datacenter`. A server signs only for its own datacenter (whatever
    /// ACLs say): a certificate for another datacenter is that datacenter's servers' to sign.
    fn signer(
        &self,
        datacenter: &str,
    ) -> Result<(seal::root::OpenedRoot, String, Duration), ServerError> {
        let (active, td, ttl) = self.state.read(|s| {
            (
                s.ca.active().cloned(),
                s.ca.trust_domain.clone(),
                crate::fsm::leaf_ttl(s.ca.config.as_ref()),
            )
        });
        let dc = self.config.datacenter.as_str();
        if !datacenter.is_empty() && datacenter != dc {
            return Err(Refused::ForeignDatacenter {
                requested: datacenter.to_string(),
                local: dc.to_string(),
            }
            .into());
        }
        let active = active.ok_or_else(|| ServerError::from(Refused::CaNotInitialized))?;
        let signer = seal::root::open(self.config.encrypt_key.as_ref(), &active)?;
        Ok((signer, td, ttl))
    }
}

/// The time from now until the RFC 3339 instant `t`, in whole seconds (`None` if unparsable).
fn time_left(t: &str) -> Option<Duration> {
    let end = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    let left = (end - OffsetDateTime::now_utc()).whole_seconds();
    Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

fn into_result(r: ApplyResult) -> Result<ApplyResult, ServerError> {
    match r.error {
        Some(e) => Err(ServerError::Apply(e)),
        None => Ok(r),
    }
}
