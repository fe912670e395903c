//! Multi-process cluster tests: real `meshd server` processes on loopback, driven through the
//! HTTP API and `meshctl`, killed with SIGKILL or stopped with SIGTERM by PID.

mod t10_readme_cluster;
mod t20_leader_kill;
mod t30_restart;
mod t35_kill_mid_snapshot;
mod t40_meshctl;
mod t50_dev_ready;
mod t60_empty_store;
mod t70_plaintext_rpc;
mod t80_config_file;
mod t80_encrypt_key;
mod t90_ca_supplied_root;
mod t90_data_dir_mode;

use std::time::Duration;

use mesh_tests::process::{Meshd, eventually, free_port, http, server_args};

/// A cluster of `meshd server` processes on free loopback ports.
pub struct ProcCluster {
    pub servers: Vec<Meshd>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl ProcCluster {
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let rpc: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let web: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = mesh_tests::data_dir();
            let join: Vec<u16> = rpc.iter().copied().filter(|p| *p != rpc[i]).collect();
            let args = server_args(&format!("s{}", i + 1), dir.path(), rpc[i], web[i], n, &join);
            servers.push(Meshd::spawn(&format!("s{}", i + 1), &args)?);
            dirs.push(dir);
        }
        let c = Self { servers, dirs };
        c.wait_leader(None)?;
        // The leader initializes the CA in its own Raft write after it wins; tests that rotate
        // or sign must not race it.
        wait_active_root(c.servers[0].http_addr)?;
        Ok(c)
    }

    /// `GET path` on server `i`: its JSON answer when it answers 200, else `None`.
    fn get_json(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let r = http("GET", self.servers[i].http_addr, path, None).ok()?;
        (r.status == 200).then(|| r.json().ok()).flatten()
    }

    /// The trust domain server `i` reports once its CA is initialized.
    pub fn trust_domain(&self, i: usize) -> anyhow::Result<String> {
        eventually("the CA's trust domain", Duration::from_secs(30), || {
            self.get_json(i, "/v1/connect/ca/roots")?["TrustDomain"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
    }

    /// Stops server `i` (SIGTERM), asserting a clean exit.
    pub fn stop(&mut self, i: usize) {
        assert!(
            self.servers[i].stop(),
            "{} did not exit cleanly",
            self.servers[i].name
        );
    }

    /// Starts stopped server `i` again with the same arguments.
    pub fn restart(&mut self, i: usize) {
        let s = &self.servers[i];
        self.servers[i] = Meshd::spawn(&s.name, &s.args).expect("the server starts again");
    }

    /// Raft configuration as seen by server `i` (stale: its own view).
    pub fn configuration(&self, i: usize) -> Option<serde_json::Value> {
        self.get_json(i, "/v1/operator/raft/configuration?stale")
    }

    /// Waits until every live server agrees on one leader (other than `not`), returning its
    /// node name.
    pub fn wait_leader(&self, not: Option<&str>) -> anyhow::Result<String> {
        eventually(
            "a leader all live servers agree on",
            Duration::from_secs(30),
            || {
                let mut leader = None;
                for (i, s) in self.servers.iter().enumerate() {
                    if s.child.is_none() {
                        continue;
                    }
                    let conf = self.configuration(i)?;
                    let leaders: Vec<String> = conf["Servers"]
                        .as_array()?
                        .iter()
                        .filter(|s| s["Leader"].as_bool() == Some(true))
                        .map(|s| s["Node"].as_str().unwrap_or_default().to_string())
                        .collect();
                    if leaders.len() != 1 || Some(leaders[0].as_str()) == not {
                        return None;
                    }
                    match &leader {
                        None => leader = Some(leaders[0].clone()),
                        Some(l) if *l != leaders[0] => return None,
                        _ => {}
                    }
                }
                leader
            },
        )
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.servers
            .iter()
            .position(|s| s.name == name)
            .expect("known server")
    }

    /// State digest reported by server `i` from its local state.
    pub fn digest(&self, i: usize) -> Option<String> {
        self.get_json(i, "/v1/internal/state-hash?stale")?["Hash"]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until all live servers report the same digest, and returns it.
    pub fn wait_converged(&self) -> anyhow::Result<String> {
        eventually("all servers to converge", Duration::from_secs(30), || {
            let digests: Vec<String> = (0..self.servers.len())
                .filter(|i| self.servers[*i].child.is_some())
                .map(|i| self.digest(i))
                .collect::<Option<_>>()?;
            digests
                .windows(2)
                .all(|w| w[0] == w[1])
                .then(|| digests[0].clone())
        })
    }
}

/// Waits until the server at `addr` answers an active CA root; its ID.
pub fn wait_active_root(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    eventually("an active CA root", Duration::from_secs(30), || {
        let r = http("GET", addr, "/v1/connect/ca/roots", None).ok()?;
        let roots: serde_json::Value = r.json().ok()?;
        roots["ActiveRootID"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    })
}

/// Upserts the intention `source -> destination` through server `addr`.
pub fn put_intention(
    addr: std::net::SocketAddr,
    source: &str,
    destination: &str,
    action: &str,
) -> anyhow::Result<u16> {
    let r = http(
        "PUT",
        addr,
        &format!("/v1/connect/intentions/exact?source={source}&destination={destination}"),
        Some(&format!("{{\"Action\":\"{action}\"}}")),
    )?;
    Ok(r.status)
}
