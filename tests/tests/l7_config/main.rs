//! Config entries (`/v1/config`, `meshctl config`) and the L7 intention tooling, against a real
//! in-process server and a real client agent on loopback (issue #6, control-plane half):
//!
//! * write/read/list/delete round trip in Consul's JSON shape, through the agent (which the
//!   proxy talks to) and the server;
//! * a blocking query on `service-defaults` wakes on change (the proxy's protocol watch);
//! * bad input is rejected at write time with the reason, and nothing is stored;
//! * a `service-intentions` entry with `Permissions` reaches the proxies' intentions feed, and
//!   the L4 authorize endpoint denies it (as Consul does);
//! * `meshctl intention check --http-*` decides with the proxy's matcher, and the real
//!   `meshctl config` verbs work end to end.

mod t10_round_trip;
mod t20_blocking;
mod t30_bad_input;
mod t40_intentions;
mod t50_cli;
mod t60_decoding;

use std::net::SocketAddr;

use mesh_control::agent::{Agent, AgentConfig, AgentHandle};
use mesh_tests::http_raw::{self, Reply};
use mesh_tests::inproc::TestCluster;

/// One server and one client agent pointed at it.
pub struct Env {
    pub cluster: TestCluster,
    pub agent: AgentHandle,
    /// The agent's HTTP API (what proxies and `meshctl` use).
    pub agent_http: SocketAddr,
    /// The server's HTTP API.
    pub server_http: SocketAddr,
}

impl Env {
    pub async fn start() -> Self {
        let cluster = TestCluster::start(1).await.expect("cluster starts");
        cluster.wait_ca().await;
        let mut config = AgentConfig::new("l7-agent", cluster.rpc_addrs());
        config.http_addr = Some("127.0.0.1:0".parse().expect("address"));
        let agent = Agent::start(config).await.expect("agent starts");
        let agent_http = agent.http_addr.expect("agent HTTP address");
        let server_http = cluster.handle(0).http_addr;
        Self {
            cluster,
            agent,
            agent_http,
            server_http,
        }
    }

    pub async fn shutdown(self) {
        self.agent.shutdown().await;
        self.cluster.shutdown().await;
    }
}

pub async fn put(addr: SocketAddr, path: &str, body: &str) -> Reply {
    http_raw::send(
        addr,
        http::Method::PUT,
        path,
        Some(body.as_bytes().to_vec()),
    )
    .await
    .expect("PUT answered")
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    http_raw::get(addr, path).await.expect("GET answered")
}

pub async fn delete(addr: SocketAddr, path: &str) -> Reply {
    http_raw::send(addr, http::Method::DELETE, path, None)
        .await
        .expect("DELETE answered")
}

/// A `service-intentions` entry for `api`: `web` has L7 permissions, `ops` an L4 allow.
pub const API_INTENTIONS: &str = r#"{
  "Kind": "service-intentions",
  "Name": "api",
  "Sources": [
    {
      "Name": "web",
      "Permissions": [
        { "Action": "deny",  "HTTP": { "PathPrefix": "/admin" } },
        { "Action": "allow", "HTTP": { "PathRegex": "/v[0-9]+/.*", "Methods": ["GET", "HEAD"] } },
        { "Action": "allow", "HTTP": { "PathExact": "/upload", "Methods": ["POST"],
            "Header": [ { "Name": "X-Tenant", "Suffix": ".corp" },
                        { "Name": "X-Debug", "Present": true, "Invert": true } ] } }
      ]
    },
    { "Name": "ops", "Action": "allow", "Description": "on-call" }
  ]
}"#;
