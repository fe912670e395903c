//! In-process clusters: N real `Server`s (openraft + redb + tonic + axum) in the test's own
//! runtime, talking real gRPC to each other over loopback, each with its own data directory.
//!
//! The only thing that is not real is the partition: `partition(i)` sets the servers' `Faults`
//! (the transport's test fault injection, in `control/src/raft/network.rs`), which makes every
//! Raft RPC and every forwarded request between the two sides fail as unreachable. That is the
//! one mock these tests use; everything above the transport runs unchanged.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mesh_control::fsm::{ApplyResult, Command};
use mesh_control::model::{Intention, IntentionAction};
use mesh_control::server::{Server, ServerConfig, ServerHandle};
use tempfile::TempDir;

use crate::eventually::eventually;

/// How long a cluster may take to form (leader, every voter, CA) on a loaded 2-core box.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an election or a catch-up may take.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Adjusts each server's configuration before it starts.
pub type Tune = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// One server of a [`TestCluster`], running or stopped.
pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    /// The configuration it last started with (addresses filled in once bound).
    pub config: ServerConfig,
    pub handle: Option<ServerHandle>,
}

/// N in-process servers forming one cluster.
pub struct TestCluster {
    pub members: Vec<Member>,
    partitioned: BTreeSet<usize>,
    tune: Tune,
    /// Holds every data directory; dropped only after the servers have shut down.
    root: TempDir,
}

/// Server settings for tests: elections fast enough for partition tests, with margin for a
/// loaded CI machine (a heartbeat is 100 ms; an election starts after 500–1000 ms of silence).
pub fn test_config(name: &str, dir: PathBuf) -> ServerConfig {
    let mut c = ServerConfig::new(name, dir);
    c.heartbeat = Duration::from_millis(100);
    c.election_timeout_min = Duration::from_millis(500);
    c.election_timeout_max = Duration::from_millis(1000);
    c.write_timeout = Duration::from_secs(5);
    c
}

/// One server alone (`name`, in a fresh temp dir), electing itself fast (150–300 ms election
/// timeout, 50 ms heartbeat); returned once it leads and its CA is initialized. Keep the temp
/// dir as long as the server.
pub async fn start_single(name: &str) -> (ServerHandle, TempDir) {
    let dir = crate::data_dir();
    let mut c = ServerConfig::new(name, dir.path());
    c.election_timeout_min = Duration::from_millis(150);
    c.election_timeout_max = Duration::from_millis(300);
    c.heartbeat = Duration::from_millis(50);
    let h = Server::start(c).await.expect("server starts");
    eventually(
        "a leader and an initialized CA",
        Duration::from_secs(20),
        || {
            let server = h.server.clone();
            async move {
                let leader = server.raft.metrics().borrow().current_leader;
                let ca = server.state.read(|s| !s.ca.roots.is_empty());
                if leader.is_some() && ca {
                    Ok(())
                } else {
                    Err(format!("leader {leader:?}, CA initialized: {ca}"))
                }
            }
        },
    )
    .await;
    (h, dir)
}

/// An L4 intention `source → destination` with `action`, in the default namespaces, as the
/// HTTP API would store it (no ID or indexes yet: the state machine assigns them).
pub fn intention(source: &str, destination: &str, action: IntentionAction) -> Intention {
    Intention {
        action: Some(action),
        ..mesh_control::intentions::intention_between(source, destination)
    }
}

/// An intention `source → destination` (allow), as a Raft command.
pub fn intention_cmd(source: &str, destination: &str) -> Command {
    Command::IntentionUpsert {
        intention: intention(source, destination, IntentionAction::Allow),
        replace: true,
    }
}

/// Whether `server`'s state holds an intention from `source` (any destination).
pub fn has_intention(server: &Server, source: &str) -> bool {
    server
        .state
        .read(|s| s.intentions.values().any(|i| i.source_name == source))
}

/// What a partitioned server held when it was cut off ([`TestCluster::partition_frozen`]).
pub struct Frozen {
    pub server: usize,
    pub digest: String,
    pub applied: u64,
}

impl Frozen {
    /// Asserts the server still holds exactly that: nothing was committed on it behind the
    /// partition. `who` names it in a failure.
    pub fn assert_unchanged(&self, cluster: &TestCluster, who: &str) {
        let s = cluster.server(self.server);
        assert_eq!(
            s.state.read(|st| st.digest()),
            self.digest,
            "{who} state moved"
        );
        assert_eq!(
            s.state.applied_index(),
            self.applied,
            "{who} applied index moved"
        );
    }
}

impl TestCluster {
    /// Starts `n` servers with [`test_config`].
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` servers: `s1` with `bootstrap_expect = n` and no join, the others joining
    /// `s1`; waits for one leader, `n` voters and an initialized CA on every server.
    pub async fn start_with(
        n: usize,
        tune: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "a cluster needs at least one server");
        let mut cluster = TestCluster {
            members: Vec::new(),
            partitioned: BTreeSet::new(),
            tune: Arc::new(tune),
            root: crate::data_dir(),
        };
        let mut s1_addr = None;
        for i in 1..=n {
            let name = format!("s{i}");
            let dir = cluster.root.path().join(&name);
            let mut config = test_config(&name, dir.clone());
            config.bootstrap_expect = n;
            if let Some(addr) = &s1_addr {
                config.join = vec![format!("{addr}")];
            }
            (cluster.tune)(&mut config);
            let handle = start_server(config.clone()).await?;
            config.bind = handle.rpc_addr;
            config.http_addr = handle.http_addr;
            s1_addr.get_or_insert(handle.rpc_addr);
            cluster.members.push(Member {
                name,
                dir,
                config,
                handle: Some(handle),
            });
        }
        cluster.wait_voters(n).await;
        cluster.wait_ca().await;
        Ok(cluster)
    }

    /// The running server at position `i` (panics if it is stopped).
    pub fn server(&self, i: usize) -> &Arc<Server> {
        &self.handle(i).server
    }

    pub fn handle(&self, i: usize) -> &ServerHandle {
        self.members[i]
            .handle
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.members[i].name))
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Positions of the running servers.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].handle.is_some())
            .collect()
    }

    /// Running servers that are not cut off by [`partition`](Self::partition).
    fn connected(&self) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|i| !self.partitioned.contains(i))
            .collect()
    }

    /// The leader among the running, connected servers: one that is leader by its own metrics
    /// and that every other connected server follows. Waits for an election if need be.
    pub async fn leader(&self) -> usize {
        eventually(
            "a leader that every connected server follows",
            CONVERGE_TIMEOUT,
            || {
                let r = self.current_leader();
                async move { r }
            },
        )
        .await
    }

    fn current_leader(&self) -> Result<usize, String> {
        let connected = self.connected();
        let views: Vec<(usize, bool, Option<u64>)> = connected
            .iter()
            .map(|i| {
                let m = self.server(*i).raft.metrics().borrow().clone();
                (*i, m.state.is_leader(), m.current_leader)
            })
            .collect();
        for (i, is_leader, _) in &views {
            let id = self.server(*i).id;
            if *is_leader && views.iter().all(|(_, _, l)| *l == Some(id)) {
                return Ok(*i);
            }
        }
        Err(format!(
            "(server, is leader, follows) = {:?}",
            views
                .iter()
                .map(|(i, l, f)| (self.name(*i), *l, f.map(|id| self.name_of(id))))
                .collect::<Vec<_>>()
        ))
    }

    fn name_of(&self, id: u64) -> String {
        self.members
            .iter()
            .find(|m| mesh_control::raft::node_id(&m.name) == id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Every running, connected server other than the leader.
    pub async fn followers(&self) -> Vec<usize> {
        let leader = self.leader().await;
        self.connected()
            .into_iter()
            .filter(|i| *i != leader)
            .collect()
    }

    /// Cuts server `i` off from every other server, in both directions (see the module doc).
    pub fn partition(&mut self, i: usize) {
        let me = self.server(i).id;
        let others: Vec<usize> = self.running().into_iter().filter(|j| *j != i).collect();
        self.server(i)
            .faults
            .block(others.iter().map(|j| self.server(*j).id));
        for j in others {
            self.server(j).faults.block([me]);
        }
        self.partitioned.insert(i);
    }

    /// Lifts every partition.
    pub fn heal(&mut self) {
        for i in self.running() {
            self.server(i).faults.heal();
        }
        self.partitioned.clear();
    }

    /// RPC addresses of the running servers.
    pub fn rpc_addrs(&self) -> Vec<String> {
        self.running()
            .into_iter()
            .map(|i| self.handle(i).rpc_addr.to_string())
            .collect()
    }

    /// Starts a new server with a fresh data directory that joins through every running
    /// server; returns its position (it is not yet a voter when this returns).
    pub async fn add_server(&mut self, name: &str) -> anyhow::Result<usize> {
        let dir = self.root.path().join(name);
        let mut config = test_config(name, dir.clone());
        config.join = self.rpc_addrs();
        // Never enough to bootstrap alone: it must join the existing cluster.
        config.bootstrap_expect = self.members.len() + 1;
        (self.tune)(&mut config);
        let handle = start_server(config.clone()).await?;
        config.bind = handle.rpc_addr;
        config.http_addr = handle.http_addr;
        self.members.push(Member {
            name: name.to_string(),
            dir,
            config,
            handle: Some(handle),
        });
        Ok(self.members.len() - 1)
    }

    /// Shuts server `i` down, keeping its data directory.
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.members[i].handle.take() {
            h.shutdown().await;
        }
        self.partitioned.remove(&i);
    }

    /// Starts a stopped server again under the same name and addresses, joining through the
    /// running servers; with `wipe` its data directory is deleted first (a replaced disk).
    pub async fn restart(&mut self, i: usize, wipe: bool) -> anyhow::Result<()> {
        anyhow::ensure!(self.members[i].handle.is_none(), "stop it first");
        if wipe {
            std::fs::remove_dir_all(&self.members[i].dir)
                .with_context(|| format!("wiping {}", self.members[i].dir.display()))?;
        }
        let mut config = self.members[i].config.clone();
        config.join = self.rpc_addrs();
        let handle = start_server(config.clone()).await?;
        self.members[i].config = config;
        self.members[i].handle = Some(handle);
        Ok(())
    }

    /// (name, state digest, applied index) of every running server.
    pub fn digests(&self) -> Vec<(String, String, u64)> {
        self.running()
            .into_iter()
            .map(|i| {
                let s = self.server(i);
                (
                    self.name(i).to_string(),
                    s.state.read(|st| st.digest()),
                    s.state.applied_index(),
                )
            })
            .collect()
    }

    /// The current leader and one of its followers.
    pub async fn leader_and_follower(&self) -> (usize, usize) {
        (self.leader().await, self.followers().await[0])
    }

    /// Writes the intention `source → db` through server `i` (the leader commits it, a
    /// follower forwards it); a failed write panics with `what`.
    pub async fn write_intention(&self, i: usize, source: &str, what: &str) -> ApplyResult {
        self.server(i)
            .write(intention_cmd(source, "db"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Partitions server `i` off and returns what it holds at that moment, to show later
    /// that it stayed frozen.
    pub fn partition_frozen(&mut self, i: usize) -> Frozen {
        self.partition(i);
        let s = self.server(i);
        Frozen {
            server: i,
            digest: s.state.read(|s| s.digest()),
            applied: s.state.applied_index(),
        }
    }

    /// Waits until every running server has applied the same index and holds the same state;
    /// returns the common digest.
    pub async fn wait_converged(&self) -> String {
        eventually(
            "every running server to reach the same digest and applied index",
            CONVERGE_TIMEOUT,
            || {
                let d = self.digests();
                let same = d.windows(2).all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2);
                let r = if same && !d.is_empty() {
                    Ok(d[0].1.clone())
                } else {
                    Err(format!("{d:?}"))
                };
                async move { r }
            },
        )
        .await
    }

    /// Waits until the leader's configuration has exactly `n` voters, all running servers
    /// agreeing on who leads.
    pub async fn wait_voters(&self, n: usize) {
        eventually(&format!("a leader with {n} voters"), FORM_TIMEOUT, || {
            let r = self.current_leader().and_then(|l| {
                let (peers, _) = self.server(l).peers();
                let voters: Vec<&str> = peers
                    .iter()
                    .filter(|p| p.voter)
                    .map(|p| p.node.name.as_str())
                    .collect();
                if voters.len() == n {
                    Ok(())
                } else {
                    Err(format!("leader {} sees voters {voters:?}", self.name(l)))
                }
            });
            async move { r }
        })
        .await
    }

    /// Waits until every running server has a CA root.
    pub async fn wait_ca(&self) {
        eventually(
            "the CA to be initialized on every server",
            FORM_TIMEOUT,
            || {
                let missing: Vec<&str> = self
                    .running()
                    .into_iter()
                    .filter(|i| self.server(*i).state.read(|s| s.ca.roots.is_empty()))
                    .map(|i| self.name(i))
                    .collect();
                let r = if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("no CA root yet on {missing:?}"))
                };
                async move { r }
            },
        )
        .await
    }

    /// Shuts every server down, then removes the data directories.
    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
        drop(self.root);
    }
}

async fn start_server(config: ServerConfig) -> anyhow::Result<ServerHandle> {
    let name = config.node.clone();
    Server::start(config)
        .await
        .with_context(|| format!("starting server {name}"))
}
