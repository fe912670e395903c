//! The multi-host scene: seven hosts on one bridge (three servers, two client hosts, two rogue
//! hosts), the agent CA and another CA, the servers (TLS, ACLs, auto-encrypt for agents), and
//! on each client host an agent with its sidecar and echo app. Every process runs inside its
//! host's network namespace and is reached from there: HTTP APIs on the host's loopback
//! through [`api`], apps through [`Pod::in_netns`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_tests::pod::{Lan, Pod};
use mesh_tests::process::{HttpResponse, Meshd, bin, eventually, http, meshd_command_from};
use mesh_tests::sidecar::{Echo, Proxy, proxy_bin, roundtrip, sidecar_registration};
use serde_json::{Value, json};

/// The servers' RPC port, on each server host's address.
pub const RPC: u16 = 8300;
/// Every server's and agent's HTTP API, on its own host's loopback.
pub const HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8500);
/// Each sidecar's public port and the upstream port of the other host's service.
pub const PUBLIC: u16 = 21000;
pub const UPSTREAM: u16 = 9191;

pub const SERVERS: [&str; 3] = ["s1", "s2", "s3"];

/// An HTTP request from inside `host` to its loopback API, with `token` if given.
pub fn api(
    host: &Pod,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    api_at(host, HTTP, method, path, body, token)
}

/// [`api`] to `addr` (e.g. a sidecar's admin port on the host's loopback).
pub fn api_at(
    host: &Pod,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let path = match token {
        Some(t) if path.contains('?') => format!("{path}&token={t}"),
        Some(t) => format!("{path}?token={t}"),
        None => path.to_string(),
    };
    let (method, body) = (method.to_string(), body.map(Value::to_string));
    host.in_netns(move || http(&method, addr, &path, body.as_deref()))?
}

/// [`api`] that must answer 200; its JSON body (`null` when empty).
pub fn api_ok(host: &Pod, method: &str, path: &str, body: Option<&Value>, token: &str) -> Value {
    let r = api(host, method, path, body, Some(token))
        .unwrap_or_else(|e| panic!("{method} {path} in {}: {e:#}", host.name));
    assert_eq!(
        r.status, 200,
        "{method} {path} in {}: {}",
        host.name, r.body
    );
    r.json().unwrap_or(Value::Null)
}

/// One server host's `meshd server`, restartable with the same arguments.
pub struct Server {
    pub host: Pod,
    pub name: String,
    pub data: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    starts: usize,
    pub meshd: Option<Meshd>,
}

impl Server {
    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.log_path();
        let cmd = meshd_command_from(in_host(&self.host, &bin("meshd")), &self.args);
        let m = Meshd::spawn_logged_with(&self.name, &self.args, &log, cmd)
            .unwrap_or_else(|e| panic!("meshd server {}: {e:#}", self.name));
        self.meshd = Some(m);
    }

    /// The log of the current (last) start.
    pub fn log_path(&self) -> PathBuf {
        self.logs.join(format!("{}-{}.log", self.name, self.starts))
    }

    /// Every log it wrote, all starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let p = self.logs.join(format!("{}-{n}.log", self.name));
                std::fs::read_to_string(p).unwrap_or_default()
            })
            .collect()
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.host.addr(RPC)
    }

    /// The leader this server knows, as its RPC address (`None`: none, or unreachable).
    pub fn leader(&self) -> Option<String> {
        let r = api(&self.host, "GET", "/v1/status/leader", None, None).ok()?;
        let v: String = serde_json::from_str(&r.body).ok()?;
        (r.status == 200 && !v.is_empty()).then_some(v)
    }
}

/// A command for `program` inside `host` (its netns and cgroup).
pub fn in_host(host: &Pod, program: &Path) -> Command {
    host.command(&program.display().to_string())
        .unwrap_or_else(|e| panic!("a command in {}: {e:#}", host.name))
}

/// The cluster: hosts, certificates, servers and the ACL root token.
pub struct Site {
    pub servers: Vec<Server>,
    pub root: String,
    /// Certificates and keys (`mesh-agent-ca.pem`, ...; another CA in `other/`), logs and
    /// data directories.
    pub dir: tempfile::TempDir,
    pub lan: Lan,
}

impl Site {
    /// The hosts and the certificates; nothing runs yet.
    pub fn new() -> Self {
        let lan = Lan::create(&[
            ("s1", 1),
            ("s2", 2),
            ("s3", 3),
            ("c1", 11),
            ("c2", 12),
            ("r1", 21),
            ("r2", 22),
        ])
        .expect("the hosts and their bridge");
        let dir = mesh_tests::data_dir();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        tls(dir.path(), &["ca", "create"]);
        tls(&other, &["ca", "create"]);
        tls(&other, &["cert", "create", "-client"]);
        for name in SERVERS {
            let ip = lan.host(name).ip.to_string();
            tls(
                dir.path(),
                &["cert", "create", "-server", "-additional-ipaddress", &ip],
            );
        }
        let ip = lan.host("r2").ip.to_string();
        tls(
            &other,
            &["cert", "create", "-server", "-additional-ipaddress", &ip],
        );
        let servers = SERVERS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let host = lan.host(name).clone();
                let data = dir.path().join(format!("data-{name}"));
                let mut args = server_args(name, &host, &data, 3);
                for peer in SERVERS.iter().filter(|p| *p != name) {
                    args.extend(["--join".into(), lan.host(peer).addr(RPC).to_string()]);
                }
                args.extend(tls_flags(dir.path(), &format!("dc1-server-mesh-{i}")));
                args.push("--auto-encrypt-allow-tls".into());
                Server {
                    host,
                    name: name.to_string(),
                    data,
                    args,
                    logs: dir.path().to_path_buf(),
                    starts: 0,
                    meshd: None,
                }
            })
            .collect();
        Self {
            servers,
            root: String::new(),
            dir,
            lan,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Starts the three servers, waits until each knows a leader, bootstraps ACLs.
    pub fn start_servers(&mut self) {
        for s in &mut self.servers {
            s.start();
        }
        for s in &self.servers {
            eventually(
                &format!("{} to know a leader", s.name),
                Duration::from_secs(30),
                || s.leader(),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
        }
        let s1 = &self.servers[0].host;
        let boot = eventually("the ACL bootstrap", Duration::from_secs(20), || {
            api(s1, "PUT", "/v1/acl/bootstrap", None, None)
                .ok()
                .filter(|r| r.status == 200)
        })
        .unwrap();
        self.root = boot.json().unwrap()["SecretID"]
            .as_str()
            .unwrap()
            .to_string();
    }

    /// The server that is the leader now, by index.
    pub fn leader(&self) -> usize {
        let addr = eventually("a leader", Duration::from_secs(10), || {
            self.servers
                .iter()
                .find_map(|s| s.meshd.as_ref().and(s.leader()))
        })
        .unwrap();
        self.servers
            .iter()
            .position(|s| s.rpc_addr().to_string() == addr)
            .unwrap_or_else(|| panic!("leader {addr} is not a server"))
    }

    /// Writes the intention `src` → `dst` on server `on` (acknowledged once this returns).
    pub fn intention(&self, on: usize, src: &str, dst: &str, action: &str, description: &str) {
        api_ok(
            &self.servers[on].host,
            "PUT",
            &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
            Some(&json!({"Action": action, "Description": description})),
            &self.root,
        );
    }

    /// Every intention as server `on` has it in its own state (`?stale`: not forwarded to the
    /// leader), as (source, destination, action, description), sorted.
    pub fn intentions(&self, on: usize) -> Option<Vec<[String; 4]>> {
        let r = api(
            &self.servers[on].host,
            "GET",
            "/v1/connect/intentions?stale",
            None,
            Some(&self.root),
        )
        .ok()?;
        let v = r.json().ok().filter(|_| r.status == 200)?;
        let field = |i: &Value, k: &str| i[k].as_str().unwrap_or_default().to_string();
        let mut all: Vec<[String; 4]> = v
            .as_array()?
            .iter()
            .map(|i| {
                ["SourceName", "DestinationName", "Action", "Description"].map(|k| field(i, k))
            })
            .collect();
        all.sort();
        Some(all)
    }

    /// Waits until server `on`'s own intentions are `want`; a timeout panics with what it has
    /// and its logs.
    pub fn wait_intentions(&self, on: usize, want: &[[String; 4]], what: &str, within: Duration) {
        eventually(what, within, || {
            (self.intentions(on).as_deref() == Some(want)).then_some(())
        })
        .unwrap_or_else(|e| {
            let s = &self.servers[on];
            panic!(
                "{e}: {} has {:?}\n{}",
                s.name,
                self.intentions(on),
                s.logs()
            )
        });
    }

    /// The RPC peers server `on` lists.
    pub fn peers(&self, on: usize) -> Vec<String> {
        let v = api_ok(
            &self.servers[on].host,
            "GET",
            "/v1/status/peers",
            None,
            &self.root,
        );
        serde_json::from_value(v).unwrap()
    }

    /// An ACL token for client host `node` running `service`: `node:write` on itself,
    /// `service:write` on its service and sidecar, `service:read` and `node:read` on
    /// everything (the upstream's instances and the nodes they run on).
    fn client_token(&self, node: &str, service: &str) -> String {
        let s1 = &self.servers[0].host;
        let rules = format!(
            "node \"{node}\" {{ policy = \"write\" }}\n\
             service \"{service}\" {{ policy = \"write\" }}\n\
             service \"{service}-sidecar-proxy\" {{ policy = \"write\" }}\n\
             service_prefix \"\" {{ policy = \"read\" }}\n\
             node_prefix \"\" {{ policy = \"read\" }}"
        );
        let policy = json!({"Name": node, "Rules": rules});
        api_ok(s1, "PUT", "/v1/acl/policy", Some(&policy), &self.root);
        let token = json!({"Policies": [{"Name": node}]});
        api_ok(s1, "PUT", "/v1/acl/token", Some(&token), &self.root)["SecretID"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Client host `node`: its agent (auto-encrypt, given only the CA file and its token),
    /// `service` registered with a sidecar whose upstream is `upstream` on [`UPSTREAM`], an
    /// echo app behind it, the sidecar running. `meta` goes in the service's metadata.
    pub fn client(&self, node: &str, service: &str, upstream: &str, meta: &str) -> Client {
        let host = self.lan.host(node).clone();
        let token = self.client_token(node, service);
        let data = self.path(&format!("data-{node}"));
        let mut args: Vec<String> = [
            "agent",
            "--node",
            node,
            "--http-addr",
            &HTTP.to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--address",
            &host.ip.to_string(),
            "--tls-ca-file",
            &self.path("mesh-agent-ca.pem").display().to_string(),
            "--auto-encrypt",
            "--token",
            &token,
        ]
        .map(String::from)
        .to_vec();
        for s in &self.servers {
            args.extend(["--server".into(), s.rpc_addr().to_string()]);
        }
        let log = self.path(&format!("{node}.log"));
        let cmd = meshd_command_from(in_host(&host, &bin("meshd")), &args);
        let agent = Meshd::spawn_logged_with(node, &args, &log, cmd)
            .unwrap_or_else(|e| panic!("meshd agent {node}: {e:#}"));
        let echo = host.in_netns(Echo::start).unwrap();
        let mut reg = sidecar_registration(service, echo.port(), PUBLIC, &[(upstream, UPSTREAM)]);
        reg["Meta"] = json!({ "note": meta });
        api_ok(
            &host,
            "PUT",
            "/v1/agent/service/register",
            Some(&reg),
            &token,
        );
        let proxy = Proxy::spawn_with(
            in_host(&host, &proxy_bin()),
            HTTP,
            service,
            &["--token", &token],
        );
        let admin = proxy.admin;
        eventually(
            &format!("{service}'s sidecar /ready"),
            Duration::from_secs(30),
            || {
                api_at(&host, admin, "GET", "/ready", None, None)
                    .ok()
                    .filter(|r| r.status == 200)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        Client {
            host,
            echo: Some(echo),
            proxy,
            _agent: agent,
            agent_log: log,
        }
    }
}

/// One client host's processes.
pub struct Client {
    pub host: Pod,
    /// Inside the host's namespace, where it is also dropped (its drop wakes its listener).
    echo: Option<Echo>,
    pub proxy: Proxy,
    /// Kept running for as long as the client is.
    _agent: Meshd,
    agent_log: PathBuf,
}

impl Client {
    /// Connections and bytes the echo app behind this host's sidecar has seen.
    pub fn app_seen(&self) -> (usize, u64) {
        self.echo.as_ref().map_or((0, 0), Echo::seen)
    }

    /// Sends `payload` from this host's app through its sidecar's upstream (the other host's
    /// service); what came back (empty: refused).
    pub fn call(&self, payload: &[u8]) -> Vec<u8> {
        let payload = payload.to_vec();
        self.host
            .in_netns(move || roundtrip(SocketAddr::from(([127, 0, 0, 1], UPSTREAM)), &payload))
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits until a call through the upstream is echoed (`true`) or refused (`false`).
    pub fn wait_call(&self, echoed: bool, what: &str) {
        let payload = b"through the mesh, across hosts";
        eventually(what, Duration::from_secs(20), || {
            let back = self.call(payload);
            ((back == payload) == echoed && (echoed || back.is_empty())).then_some(())
        })
        .unwrap_or_else(|e| {
            let agent = std::fs::read_to_string(&self.agent_log).unwrap_or_default();
            panic!(
                "{e}\n--- sidecar ---\n{}\n--- agent ---\n{agent}",
                self.proxy.log()
            )
        });
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(echo) = self.echo.take() {
            let _ = self.host.in_netns(move || drop(echo));
        }
    }
}

/// `meshctl tls <args>` in `dir`, which must succeed.
fn tls(dir: &Path, args: &[&str]) {
    let out = Command::new(bin("meshctl"))
        .arg("tls")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running meshctl");
    assert!(out.status.success(), "meshctl tls {args:?}: {out:?}");
}

/// `--tls-*` flags presenting `cert` (`dc1-server-mesh-0`, ...) from `dir`, trusting `dir`'s CA.
pub fn tls_flags(dir: &Path, cert: &str) -> Vec<String> {
    let p = |f: String| dir.join(f).display().to_string();
    vec![
        "--tls-ca-file".into(),
        p("mesh-agent-ca.pem".into()),
        "--tls-cert-file".into(),
        p(format!("{cert}.pem")),
        "--tls-key-file".into(),
        p(format!("{cert}-key.pem")),
    ]
}

/// `meshd server` arguments for `name` on `host`: RPC on the host's address, HTTP on its
/// loopback, ACLs on (the default).
pub fn server_args(name: &str, host: &Pod, data: &Path, expect: usize) -> Vec<String> {
    [
        "server",
        "--node",
        name,
        "--data-dir",
        &data.display().to_string(),
        "--bind",
        &host.addr(RPC).to_string(),
        "--http-addr",
        &HTTP.to_string(),
        "--bootstrap-expect",
        &expect.to_string(),
    ]
    .map(String::from)
    .to_vec()
}
