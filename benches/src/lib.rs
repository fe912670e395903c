//! Shared pieces of the benchmark harness binaries (`src/bin/*`): the common command-line
//! flags, bounded timing loops, rates and percentiles, the machine load average and the aligned
//! table every harness prints; for the agent harnesses also a single fast-electing in-process
//! server, a client agent, a keep-alive loopback HTTP connection and the process RSS.
//!
//! Why a harness and not a timed test: speed targets are reported as ratios against a baseline
//! measured in the same run on the same machine (see `benches/README.md`), which stays meaningful
//! on a shared, noisy machine where absolute figures do not.

pub mod apt;
pub mod pki;
pub mod proxy_chain;
pub mod release;
pub mod transparent_pods;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_control::agent::{Agent, AgentConfig, AgentHandle};
use mesh_control::server::{Server, ServerConfig, ServerHandle};

/// Longest measurement any harness accepts, so a typo cannot tie up a shared machine.
pub const MAX_SECONDS: f64 = 300.0;

/// Flags every harness takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Length of each timed phase, in seconds (at most 300).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Print the figures as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Directory to create the temporary data directories in (default: the system temp dir).
    /// Pass a directory on the disk you want to measure.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Checks that the value of flag `--flag` is in `range` (every count flag of the harnesses has
/// such bounds); the error names the flag, the range and the value.
pub fn ensure_in<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        range.contains(&value),
        "--{flag} must be in {}..={}, got {value}",
        range.start(),
        range.end()
    );
    Ok(())
}

impl CommonArgs {
    /// The phase length, checked to be positive and at most [`MAX_SECONDS`].
    pub fn duration(&self) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= MAX_SECONDS,
            "--seconds must be in (0, {MAX_SECONDS}], got {}",
            self.seconds
        );
        Ok(Duration::from_secs_f64(self.seconds))
    }

    /// A fresh private (0700) temporary directory (removed when dropped) under `--dir` or the
    /// system default: servers and agents refuse a data directory others can read.
    pub fn tempdir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        Ok(mesh_control::data_dir::tempdir(
            prefix,
            self.dir.as_deref(),
        )?)
    }
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg` (`None` where it is unavailable).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `uptime`-style rendering of [`load_average`].
pub fn load_average_text(l: Option<[f64; 3]>) -> String {
    match l {
        Some([a, b, c]) => format!("load average: {a:.2}, {b:.2}, {c:.2}"),
        None => "load average: unavailable".to_string(),
    }
}

/// [`load_average`] as JSON (`null` where unavailable).
pub fn load_average_json(l: Option<[f64; 3]>) -> serde_json::Value {
    match l {
        Some(v) => serde_json::json!(v),
        None => serde_json::Value::Null,
    }
}

/// Number of CPUs this process may use (1 if unknown).
pub fn parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// How many operations completed in how long.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count {
    pub ops: u64,
    pub elapsed: Duration,
}

impl Count {
    /// Operations per second (0 for an empty measurement).
    pub fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ops as f64 / s } else { 0.0 }
    }
}

/// Runs `op` repeatedly on this thread until `duration` has passed or `max_ops` calls were made,
/// whichever comes first. Stops at the first error.
pub fn run_for<E>(
    duration: Duration,
    max_ops: u64,
    mut op: impl FnMut(u64) -> Result<(), E>,
) -> Result<Count, E> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut ops = 0;
    while ops < max_ops && Instant::now() < deadline {
        op(ops)?;
        ops += 1;
    }
    Ok(Count {
        ops,
        elapsed: start.elapsed(),
    })
}

/// The `p`-th percentile (0..=100) of already sorted samples, nearest-rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b`, or 0 when `b` is 0 (no baseline measured).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Milliseconds with three decimals, for latency columns.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A rate with thousands separators and no decimals, e.g. `12,345/s`.
pub fn rate(per_sec: f64) -> String {
    let n = per_sec.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out.push_str("/s");
    out
}

/// A small table printed with every column padded to its widest cell; the first column is left
/// aligned, the others right aligned (they hold numbers).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text, one line per row, with a rule under the header.
    pub fn render(&self) -> String {
        let cols = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |row: &[String]| {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let cell = row.get(i).map(String::as_str).unwrap_or("");
                    if i == 0 {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        let total = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// In-process servers and agents, loopback HTTP, process memory (the agent_* harnesses).

/// Raft heartbeat of the single-node harnesses (the default is 100 ms).
pub const FAST_HEARTBEAT: Duration = Duration::from_millis(50);
/// Election timeout range of the single-node harnesses (the default is 800–1600 ms), so a lone
/// server elects itself in well under a second.
pub const FAST_ELECTION: (Duration, Duration) =
    (Duration::from_millis(150), Duration::from_millis(300));

/// Settings of a server that bootstraps alone with [`FAST_HEARTBEAT`] and [`FAST_ELECTION`], on
/// 127.0.0.1 with OS-chosen ports.
pub fn single_server_config(name: &str, data_dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(name, data_dir);
    config.bootstrap_expect = 1;
    config.heartbeat = FAST_HEARTBEAT;
    config.election_timeout_min = FAST_ELECTION.0;
    config.election_timeout_max = FAST_ELECTION.1;
    config
}

/// Starts one server from [`single_server_config`] and waits (at most `timeout`) until it leads
/// and its CA is initialized. On failure the server is shut down again.
pub async fn start_single_server(
    name: &str,
    data_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<ServerHandle> {
    start_server(single_server_config(name, data_dir), timeout).await
}

/// Starts one single-node server from `config` and waits (at most `timeout`) until it leads
/// and its CA is initialized. On failure the server is shut down again.
pub async fn start_server(config: ServerConfig, timeout: Duration) -> anyhow::Result<ServerHandle> {
    let name = config.node.clone();
    let handle = Server::start(config)
        .await
        .with_context(|| format!("starting server {name}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let s = &handle.server;
        let leads = s.raft.metrics().borrow().current_leader == Some(s.id);
        if leads && s.state.read(|st| !st.ca.roots.is_empty()) {
            return Ok(handle);
        }
        if Instant::now() >= deadline {
            shutdown_server(handle, SHUTDOWN_TIMEOUT).await;
            anyhow::bail!("server {name} not leader with a CA after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a client agent (HTTP API on 127.0.0.1, OS-chosen port) talking to the server at
/// `server_rpc`, and waits (at most `timeout`) until a server answered its heartbeat and its
/// node is in the catalog. On failure the agent is shut down again.
pub async fn start_client_agent(
    node: &str,
    server_rpc: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<AgentHandle> {
    start_agent(client_agent_config(node, server_rpc), timeout).await
}

/// Settings of a client agent of [`start_client_agent`]: HTTP API on 127.0.0.1, OS-chosen port.
pub fn client_agent_config(node: &str, server_rpc: SocketAddr) -> AgentConfig {
    let mut config = AgentConfig::new(node, vec![server_rpc.to_string()]);
    config.http_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}

/// Starts an agent from `config` and waits (at most `timeout`) until a server answered its
/// heartbeat and its node is in the catalog. On failure the agent is shut down again.
pub async fn start_agent(config: AgentConfig, timeout: Duration) -> anyhow::Result<AgentHandle> {
    let node = config.node.clone();
    let handle = Agent::start(config)
        .await
        .with_context(|| format!("starting agent {node}"))?;
    let agent = handle.agent.clone();
    let ready = async {
        let mut connected = agent.connected.subscribe();
        connected.wait_for(|c| *c).await.is_ok() && agent.wait_synced(timeout).await
    };
    match tokio::time::timeout(timeout, ready).await {
        Ok(true) if handle.http_addr.is_some() => Ok(handle),
        _ => {
            shutdown_agent(handle, SHUTDOWN_TIMEOUT).await;
            anyhow::bail!("agent {node} not connected and synced after {timeout:?}")
        }
    }
}

/// Starts [`start_single_server`] and [`start_client_agent`] on it (data in a temporary
/// directory named `prefix…`), runs `measure` with the server's and the agent's HTTP
/// addresses, then shuts both down (also when `measure` failed) and removes the directory.
pub async fn with_server_and_agent<T, F, Fut>(
    common: &CommonArgs,
    prefix: &str,
    timeout: Duration,
    measure: F,
) -> anyhow::Result<T>
where
    F: FnOnce(SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dir = common.tempdir(prefix)?;
    let server = start_single_server("s1", &dir.path().join("s1"), timeout).await?;
    let agent = match start_client_agent("bench-agent", server.rpc_addr, timeout).await {
        Ok(a) => a,
        Err(e) => {
            shutdown_server(server, SHUTDOWN_TIMEOUT).await;
            return Err(e);
        }
    };
    let measured = match agent.http_addr {
        Some(agent_http) => measure(server.http_addr, agent_http).await,
        None => Err(anyhow::anyhow!("agent has no HTTP address")),
    };
    shutdown_agent(agent, SHUTDOWN_TIMEOUT).await;
    shutdown_server(server, SHUTDOWN_TIMEOUT).await;
    drop(dir);
    measured
}

/// How long shutting down one server or agent may take before the harness gives up on it.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Shuts a server down, giving up (with a message on stderr) after `timeout`.
pub async fn shutdown_server(handle: ServerHandle, timeout: Duration) {
    if tokio::time::timeout(timeout, handle.shutdown())
        .await
        .is_err()
    {
        eprintln!("warning: server shutdown did not finish within {timeout:?}");
    }
}

/// Shuts an agent down, giving up (with a message on stderr) after `timeout`.
pub async fn shutdown_agent(handle: AgentHandle, timeout: Duration) {
    if tokio::time::timeout(timeout, handle.shutdown())
        .await
        .is_err()
    {
        eprintln!("warning: agent shutdown did not finish within {timeout:?}");
    }
}

/// One HTTP/1.1 keep-alive connection to a loopback API (one request at a time, as one client).
pub struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
    /// Sent as `X-Consul-Token` on every request when set ([`HttpConn::with_token`]).
    token: Option<http::HeaderValue>,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// `X-Consul-Index`, when present and numeric.
    pub index: Option<u64>,
    pub body: Bytes,
}

impl HttpConn {
    /// Connects to `addr` (no request is sent yet).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
            driver,
            token: None,
        })
    }

    /// Sends `token` as `X-Consul-Token` on every request from now on.
    pub fn with_token(mut self, token: &str) -> anyhow::Result<Self> {
        self.token = Some(http::HeaderValue::from_str(token)?);
        Ok(self)
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<HttpReply> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(HttpReply {
            status,
            index,
            body,
        })
    }

    /// Sends one request that must answer 200 (anything else is an error with the answer);
    /// its body as JSON, `null` when empty.
    pub async fn expect_ok(
        &mut self,
        method: http::Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<serde_json::Value> {
        let r = self
            .request(method.clone(), path, Bytes::from(body))
            .await?;
        if r.status != 200 {
            anyhow::bail!(
                "{method} {path}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        if r.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&r.body).with_context(|| format!("{method} {path}: not JSON"))
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<HttpReply> {
        self.request(http::Method::GET, path, Bytes::new()).await
    }
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`, kB
/// resolution); `None` where unavailable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Signed milliseconds with three decimals (`b - a` for two instants, negative when `b` came
/// first).
pub fn signed_ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a {
        (b - a).as_secs_f64() * 1e3
    } else {
        -((a - b).as_secs_f64() * 1e3)
    }
}

/// The `p`-th percentile (0..=100) of already sorted `f64` samples, nearest-rank; zero when
/// empty (the signed counterpart of [`percentile`]).
pub fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A byte count with thousands separators, e.g. `12,345 B`.
pub fn bytes_text(n: f64) -> String {
    let mut s = rate(n.abs());
    s.truncate(s.len() - 2);
    s.push_str(" B");
    if n < 0.0 {
        s.insert(0, '-');
    }
    s
}

/// Signed millisecond samples and their summary.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        percentile_f64(&self.sorted(), 50.0)
    }

    pub fn json(&self) -> serde_json::Value {
        let v = self.sorted();
        serde_json::json!({
            "n": v.len(),
            "median_ms": percentile_f64(&v, 50.0),
            "p90_ms": percentile_f64(&v, 90.0),
            "p99_ms": percentile_f64(&v, 99.0),
            "max_ms": v.last().copied().unwrap_or(0.0),
            "min_ms": v.first().copied().unwrap_or(0.0),
        })
    }

    pub fn row(&self, name: &str) -> Vec<String> {
        let v = self.sorted();
        let f = |x: f64| format!("{x:.3} ms");
        vec![
            name.to_string(),
            v.len().to_string(),
            f(v.first().copied().unwrap_or(0.0)),
            f(percentile_f64(&v, 50.0)),
            f(percentile_f64(&v, 90.0)),
            f(percentile_f64(&v, 99.0)),
            f(v.last().copied().unwrap_or(0.0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        let f: Vec<f64> = (-50..50).map(f64::from).collect();
        assert_eq!(percentile_f64(&f, 50.0), -1.0);
        assert_eq!(percentile_f64(&[], 50.0), 0.0);
    }

    #[test]
    fn bytes_text_groups_thousands() {
        assert_eq!(bytes_text(4096.0), "4,096 B");
        assert_eq!(bytes_text(12.4), "12 B");
    }

    #[test]
    fn rate_groups_thousands() {
        assert_eq!(rate(1234567.4), "1,234,567/s");
        assert_eq!(rate(999.0), "999/s");
    }

    #[test]
    fn run_for_is_bounded_by_count() {
        let c = run_for(Duration::from_secs(60), 10, |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(c.ops, 10);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["a", "value"]);
        t.row(["long name", "1"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a          value");
        assert_eq!(lines[2], "long name      1");
    }
}
