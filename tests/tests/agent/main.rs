//! Acceptance tests of the client agent (`meshd agent`, `control/src/agent/`), against real
//! servers on loopback: fail static when every server is gone and resync when they return, leaf
//! renewal and re-issue after a root rotation, liveness when an agent dies, failing health
//! checks, blocking queries on the agent, and refusal of bad input.
//!
//! Where killing matters (servers or the agent), they are `meshd` processes killed with SIGKILL
//! by PID; elsewhere an in-process `Agent::start` against an in-process [`TestCluster`]. Every
//! wait polls a condition with a deadline; measured timings are asserted against the bounds the
//! code documents.

mod t10_fail_static;
mod t20_leaf_renewal;
mod t30_root_rotation;
mod t40_agent_kill;
mod t50_failing_checks;
mod t60_blocking_queries;
mod t70_bad_input;
mod t75_bounded_http;
mod t80_restart;
mod t90_list_filters;

pub use mesh_tests::process::spawn_agent;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_control::agent::{Agent, AgentConfig, AgentHandle};
use mesh_tests::eventually::eventually;
use mesh_tests::http_raw::{self, Reply};
use mesh_tests::inproc::TestCluster;
use mesh_tests::process::{Meshd, free_port, server_args};
use serde_json::Value;

/// Ceiling of one HTTP exchange in these tests (blocking queries included).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a cluster of `meshd` processes may take to elect a leader and create its CA.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP request; `Err` when nothing answered (a dead server, a refused connection).
pub async fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Reply, String> {
    let method: http::Method = method.parse().expect("HTTP method");
    http_raw::request(
        addr,
        method,
        path,
        body.map(|b| b.as_bytes().to_vec()),
        HTTP_TIMEOUT,
    )
    .await
    .map_err(|e| format!("{e:#}"))
}

/// One HTTP request that must get an answer (any status).
pub async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    try_call(addr, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// A request that must answer 200; returns the reply.
pub async fn ok(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let r = call(addr, method, path, body).await;
    assert_eq!(r.status, 200, "{method} {path} on {addr}: {}", r.text());
    r
}

/// `POST /v1/agent/connect/authorize` for `source -> target`; returns the JSON answer.
pub async fn authorize(agent: SocketAddr, td: &str, source: &str, target: &str) -> Value {
    let body = format!(
        r#"{{"Target":"{target}","ClientCertURI":"spiffe://{td}/ns/default/dc/dc1/svc/{source}"}}"#
    );
    ok(agent, "POST", "/v1/agent/connect/authorize", Some(&body))
        .await
        .json()
}

/// Upserts the intention `source -> destination` with `action` through `addr` (a server or an
/// agent, which forwards it).
pub async fn put_intention(addr: SocketAddr, source: &str, destination: &str, action: &str) {
    ok(
        addr,
        "PUT",
        &format!("/v1/connect/intentions/exact?source={source}&destination={destination}"),
        Some(&format!(r#"{{"Action":"{action}"}}"#)),
    )
    .await;
}

/// Polls `GET path` on `addr` until `holds` accepts its JSON answer and returns that answer;
/// after `timeout` it panics with `what` and the last answer.
pub async fn wait_json(
    addr: SocketAddr,
    path: &str,
    what: &str,
    timeout: Duration,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    let holds = &holds;
    eventually(what, timeout, || async move {
        let v = try_call(addr, "GET", path, None).await?.json();
        if holds(&v) {
            Ok(v)
        } else {
            Err(format!("{v}"))
        }
    })
    .await
}

/// Waits until `node` is in the catalog of `server`: the agent's first anti-entropy pass is
/// done. (`Agent::wait_synced` cannot tell: it answers `true` before the first pass, since the
/// synced index and the local index both start at 0.)
pub async fn wait_node_in_catalog(server: SocketAddr, node: &str) {
    wait_json(
        server,
        "/v1/catalog/nodes",
        &format!("node {node} in the catalog"),
        Duration::from_secs(10),
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|n| n["Node"] == node))
        },
    )
    .await;
}

/// Service IDs in a `/v1/health/...` answer, sorted.
pub fn health_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("health answer is not an array: {v}"))
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// `meshd server` processes on fixed loopback ports chosen up front, so a restart with the same
/// arguments comes back on the same addresses (agents keep their `--server` list).
pub struct ProcServers {
    pub servers: Vec<Meshd>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl ProcServers {
    /// Starts `n` servers that bootstrap together and waits for a leader and a CA root.
    pub async fn start(n: usize) -> Self {
        let rpc: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let web: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = mesh_tests::data_dir();
            let join: Vec<u16> = rpc.iter().copied().filter(|p| *p != rpc[i]).collect();
            let name = format!("s{}", i + 1);
            let args = server_args(&name, dir.path(), rpc[i], web[i], n, &join);
            servers.push(Meshd::spawn(&name, &args).expect("meshd server starts"));
            dirs.push(dir);
        }
        let s = Self { servers, dirs };
        s.wait_ready().await;
        s
    }

    /// gRPC addresses, for `meshd agent --server`.
    pub fn rpc_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.rpc_addr).collect()
    }

    pub fn http(&self, i: usize) -> SocketAddr {
        self.servers[i].http_addr
    }

    /// SIGKILL every server.
    pub fn kill_all(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }

    /// Starts every server again with the same arguments (same ports, same data directories)
    /// and waits for a leader.
    pub async fn restart_all(&mut self) {
        for s in &mut self.servers {
            assert!(s.child.is_none(), "{} is still running", s.name);
            *s = Meshd::spawn(&s.name, &s.args).expect("meshd server restarts");
        }
        self.wait_ready().await;
    }

    /// Waits until every server answers a linearizable read of the CA roots (so there is a
    /// leader every server follows) with an active root.
    pub async fn wait_ready(&self) {
        let addrs: Vec<SocketAddr> = (0..self.servers.len()).map(|i| self.http(i)).collect();
        eventually(
            "every server to have a leader and a CA root",
            FORM_TIMEOUT,
            || {
                let addrs = addrs.clone();
                async move {
                    for a in addrs {
                        let r = try_call(a, "GET", "/v1/connect/ca/roots", None).await?;
                        if r.status != 200 {
                            return Err(format!("{a}: {} {}", r.status, r.text()));
                        }
                        let v = r.json();
                        if v["ActiveRootID"].as_str().unwrap_or_default().is_empty() {
                            return Err(format!("{a}: no active root yet: {v}"));
                        }
                    }
                    Ok(())
                }
            },
        )
        .await;
    }
}

/// One in-process server and one in-process client agent with its own HTTP API.
pub struct InprocEnv {
    pub cluster: TestCluster,
    pub agent: AgentHandle,
    /// The agent's HTTP API.
    pub http: SocketAddr,
    /// The server's HTTP API.
    pub server_http: SocketAddr,
}

impl InprocEnv {
    /// Starts a one-server cluster and an agent named `node` pointed at it; `tune` adjusts the
    /// agent's configuration.
    pub async fn start(node: &str, tune: impl FnOnce(&mut AgentConfig)) -> Self {
        let cluster = TestCluster::start(1).await.expect("cluster starts");
        let mut config = AgentConfig::new(node, cluster.rpc_addrs());
        config.http_addr = Some("127.0.0.1:0".parse().expect("address"));
        tune(&mut config);
        let agent = Agent::start(config).await.expect("agent starts");
        let http = agent.http_addr.expect("agent HTTP address");
        let server_http = cluster.handle(0).http_addr;
        Self {
            cluster,
            agent,
            http,
            server_http,
        }
    }

    pub async fn shutdown(self) {
        self.agent.shutdown().await;
        self.cluster.shutdown().await;
    }
}
