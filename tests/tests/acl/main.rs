//! The ACL API of a real `meshd dev --acl` (issue 12, server step), driven with `curl` as the
//! third-party client:
//!
//! * the bootstrap works once, the second answer is Consul's 403 with the reset index, and
//!   with ACLs off every `/v1/acl/*` route answers 401 `ACL support disabled`;
//! * tokens: the anonymous token may not create one, the bootstrap token may; `token/self`;
//!   the token list hides SecretIDs from a read-only token; a deleted token is `ACL not found`;
//!   the three places a token can travel in (header, bearer, `?token=`);
//! * policies with HCL and JSON rules, invalid rules refused with the field and line, the list
//!   without rules, lookups by name, roles linking policies;
//! * every other server route, table-driven with four callers each, lists filtered with
//!   `X-Consul-Results-Filtered-By-ACLs`, narrow tokens, and ACLs off (`t50_routes`);
//! * every gRPC method by token (tonic clients), and the gRPC security findings refused
//!   (`t60_grpc`);
//! * `meshproxy --token`: refused at start without `service:write`, and a revoked token stops
//!   renewal but not live traffic (`t80_proxy`);
//! * the agent's routes (`t70_agent`): leaves and registrations need `service:write`, lists
//!   are filtered, a deleted token fails within a second, `PUT /v1/agent/token/*`.

mod t10_bootstrap;
mod t20_tokens;
mod t30_policies;
mod t40_cli;
mod t50_routes;
mod t60_grpc;
mod t70_agent;
mod t80_proxy;
mod t90_reads;

use std::net::SocketAddr;

pub use mesh_tests::curl::{Auth, Reply, curl_at};
use mesh_tests::dev::{dev_args, wait_ca};
use mesh_tests::process::Meshd;
use serde_json::Value;

/// A `meshd dev` on loopback, with or without `--acl`.
pub struct Dev {
    meshd: Meshd,
    pub addr: SocketAddr,
}

impl Dev {
    pub fn start(acl: bool) -> Self {
        let mut args = dev_args();
        if acl {
            args.push("--acl".into());
        }
        let meshd = Meshd::spawn("dev", &args).expect("meshd dev starts");
        let addr = meshd.http_addr;
        wait_ca(addr);
        Self { meshd, addr }
    }

    /// The gRPC address (`--bind`).
    pub fn rpc_addr(&self) -> SocketAddr {
        self.meshd.rpc_addr
    }

    /// `curl -X method` on `path`, with `auth` and an optional JSON `body`.
    pub fn curl(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<&str>) -> Reply {
        curl_at(self.addr, method, path, auth, body)
    }

    /// [`Self::curl`], asserting a 200 and returning the JSON.
    pub fn ok(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<&str>) -> Value {
        let r = self.curl(method, path, auth, body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()
    }

    /// Bootstraps ACLs; the management token's SecretID.
    /// A `meshd dev --acl`, bootstrapped: it and the management token's SecretID.
    pub fn bootstrapped() -> (Self, String) {
        let dev = Self::start(true);
        let root = dev.bootstrap();
        (dev, root)
    }

    /// `GET path`: the status and the body, whatever they are.
    pub fn get(&self, path: &str, auth: Auth<'_>) -> (u16, String) {
        let r = self.curl("GET", path, auth, None);
        (r.status, r.body)
    }

    /// `PUT path` with a JSON `body`, which must answer 200; its JSON.
    pub fn put(&self, path: &str, auth: Auth<'_>, body: &str) -> Value {
        self.ok("PUT", path, auth, Some(body))
    }

    pub fn bootstrap(&self) -> String {
        let v = self.ok("PUT", "/v1/acl/bootstrap", Auth::None, None);
        v["SecretID"].as_str().expect("SecretID").to_string()
    }

    /// SIGTERM by PID, and a clean exit.
    pub fn stop(mut self) {
        assert!(self.meshd.stop(), "meshd dev exits cleanly");
    }
}
