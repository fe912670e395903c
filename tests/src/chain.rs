//! The proxy tests' shared scene and byte-stream helpers, as a library so the proxy,
//! proxy_l7 and proxy_static targets (and the benches) link one copy instead of compiling a
//! harness file into each: the web → db [`Chain`] of two sidecars around an echo app, a client
//! [`Agent`] process, deterministic payloads ([`Pattern`]) and stream hashes ([`StreamHash`]).
//! The control plane, sidecar and echo helpers they use are re-exported, so a test imports
//! one module.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use crate::dev::{call, meshd_dev, ok, set_intention, wait_ca};
use crate::process::{Meshd, eventually, free_port, spawn_agent};
pub use crate::sidecar::{Echo, Proxy, proxy_bin, register, roundtrip};

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

/// Waits (up to 30 s) until `web`'s proxy sees a healthy instance of its first upstream: the
/// moment a chain is usable (db's sidecar check has passed). A timeout panics with web's log.
pub fn wait_upstream_healthy(web: &Proxy) {
    eventually(
        "web sees a healthy db instance",
        Duration::from_secs(30),
        || {
            let n = web.config()["Upstreams"][0]["Instances"]
                .as_array()
                .map_or(0, Vec::len);
            (n > 0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n--- web log ---\n{}", web.log()));
}

/// The web → db chain of the tests: echo server as db's application, both proxies running,
/// web's upstream listener for db on `upstream`; `http` is the agent both proxies use.
pub struct Chain {
    pub echo: Echo,
    pub db: Proxy,
    pub web: Proxy,
    pub upstream: SocketAddr,
    pub http: SocketAddr,
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
        wait_upstream_healthy(&web);
        Self {
            echo,
            db,
            web,
            upstream: format!("127.0.0.1:{up}").parse().unwrap(),
            http: http_addr,
        }
    }

    /// Allows web → db and waits (up to `within`) until a connection through web's upstream
    /// echoes.
    pub fn allow(&self, within: Duration) {
        set_intention(self.http, "web", "db", "allow");
        eventually("allowed connection echoes", within, || {
            roundtrip(self.upstream, b"x").ok().filter(|b| b == b"x")
        })
        .unwrap();
    }

    /// A connection through web's upstream that has echoed `first` once (read timeout
    /// `read_timeout`): a live connection for a test to act on.
    pub fn live_connection(&self, first: &[u8], read_timeout: Duration) -> TcpStream {
        let mut live = TcpStream::connect(self.upstream).unwrap();
        live.set_read_timeout(Some(read_timeout)).unwrap();
        live.write_all(first).unwrap();
        let mut buf = vec![0u8; first.len()];
        live.read_exact(&mut buf).unwrap();
        assert_eq!(buf, first);
        live
    }
}

/// A `meshd agent` process (client agent of a server) with its own data directory, killed by
/// PID on drop.
pub struct Agent {
    meshd: Meshd,
    pub http_addr: SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Agent {
    /// `meshd agent --server RPC --node NODE --http-addr <free port> --data-dir TMP <extra>`.
    pub fn spawn(server_rpc: SocketAddr, node: &str, extra: &[&str]) -> Self {
        let data_dir = crate::data_dir();
        let meshd = spawn_agent(node, &[server_rpc], data_dir.path(), extra);
        Self {
            http_addr: meshd.http_addr,
            meshd,
            _data_dir: data_dir,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.meshd.pid()
    }
}
