//! Real components for the proxy tests: a control plane (`meshd dev` process, or an in-process
//! server when a test needs the CA's root key), `meshproxy run` processes, a counting TCP echo
//! server as the application, and helpers for the agent API. The processes and the echo server
//! live in `mesh_tests::sidecar` (the agent tests use them too) and are re-exported here.

use std::hash::Hasher;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// This file is included by several test targets (`#[path]`); not each uses every helper.
#[allow(unused_imports)]
pub use mesh_tests::dev::{call, meshd_dev, ok, set_intention, wait_ca};
use mesh_tests::process::{eventually, free_port};
#[allow(unused_imports)]
pub use mesh_tests::sidecar::{Echo, Proxy, proxy_bin, register, roundtrip};

pub fn delete_intention(http_addr: SocketAddr, src: &str, dst: &str) {
    ok(
        "DELETE",
        http_addr,
        &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
        None,
    );
}

/// Deterministic pseudo-random bytes (xorshift), chunk by chunk.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Hash of a byte stream fed in pieces (SipHash with fixed keys: equal streams, equal hashes).
#[derive(Default)]
pub struct StreamHash(std::hash::DefaultHasher, u64);

impl StreamHash {
    pub fn update(&mut self, b: &[u8]) {
        self.0.write(b);
        self.1 += b.len() as u64;
    }

    /// (hash, length)
    pub fn finish(&self) -> (u64, u64) {
        (self.0.finish(), self.1)
    }
}

/// The web → db chain of the tests: echo server as db's application, both proxies running,
/// web's upstream listener for db on `upstream`.
pub struct Chain {
    pub echo: Echo,
    pub db: Proxy,
    pub web: Proxy,
    pub upstream: SocketAddr,
}

impl Chain {
    pub fn start(http_addr: SocketAddr) -> Self {
        Self::start_with(http_addr, &[])
    }

    pub fn start_with(http_addr: SocketAddr, db_flags: &[&str]) -> Self {
        wait_ca(http_addr);
        let echo = Echo::start();
        let db_public = free_port();
        let web_public = free_port();
        let up = free_port();
        register(http_addr, "db", echo.port(), db_public, &[]);
        register(http_addr, "web", free_port(), web_public, &[("db", up)]);
        let db = Proxy::start(http_addr, "db", db_flags);
        let web = Proxy::start(http_addr, "web", &[]);
        // web learns db's instance once db's sidecar check passes.
        eventually(
            "web sees a healthy db instance",
            Duration::from_secs(30),
            || {
                let c = web.config();
                let n = c["Upstreams"][0]["Instances"]
                    .as_array()
                    .map_or(0, Vec::len);
                (n > 0).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n--- web log ---\n{}", web.log()));
        Self {
            echo,
            db,
            web,
            upstream: format!("127.0.0.1:{up}").parse().unwrap(),
        }
    }
}

/// A `meshd agent` process (client agent of a server), killed by PID on drop.
pub struct Agent {
    child: Option<Child>,
    pub http_addr: SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Agent {
    /// `meshd agent --server RPC --node NODE --http-addr 127.0.0.1:0 --data-dir TMP <extra>`.
    pub fn spawn(server_rpc: SocketAddr, node: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let data_dir = tempfile::tempdir().expect("agent data dir");
        let mut child = Command::new(mesh_tests::process::bin("meshd"))
            .args(["agent", "--server", &server_rpc.to_string(), "--node", node])
            .args(["--http-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .env("MESH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meshd agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("agent reports its address");
        let http_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no http= in {line:?}"));
        Self {
            child: Some(child),
            http_addr,
            _data_dir: data_dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
