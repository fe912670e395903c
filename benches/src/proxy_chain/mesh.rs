//! The meshproxy chain: a `meshd dev` process, services `db` (the bench's app) and `web` (whose
//! upstream `db` listens on a loopback port) registered with sidecars through the agent API, an
//! allow intention web → db, and the two `meshproxy run` processes, exactly as an operator
//! would set them up (and as `tests/tests/proxy/harness.rs` does for the e2e tests).
//!
//! Load generator → web's upstream listener (plain TCP) → web's proxy ⇒ mutual TLS ⇒ db's
//! proxy (public port) → app.
//!
//! A third sidecar, for service `web-full` (upstream `db` too, allowed in as well), runs with
//! `--no-tls-resumption`: every connection through it is a full mutual-TLS handshake with db's
//! proxy, the way the peers' no-resumption listeners work (the client never offers a session;
//! the server side is the same process for both). Its upstream listener is
//! [`MeshChain::entry_full`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::HttpConn;
use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::procs::{Child, free_port, local};

/// How long meshd and each proxy may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The running chain. Dropping it stops the proxies, then meshd.
pub struct MeshChain {
    /// Client side (web's sidecar) and server side (db's sidecar).
    pub client: Child,
    pub server: Child,
    /// Client side that never resumes TLS sessions (web-full's sidecar).
    pub client_full: Child,
    pub meshd: Child,
    /// Where the load generator connects: web's upstream listener for db.
    pub entry: SocketAddr,
    /// web-full's upstream listener for db (a full handshake per connection).
    pub entry_full: SocketAddr,
    /// db's public (mutual TLS) port, for the negotiation probe.
    pub server_public: SocketAddr,
    /// The agent's HTTP address.
    pub http: SocketAddr,
}

/// `PUT path` with a JSON `body` on `http`; anything but 200 is an error with the answer.
pub async fn put(http: &mut HttpConn, path: &str, body: &Value) -> anyhow::Result<()> {
    http.expect_ok(http::Method::PUT, path, body.to_string())
        .await
        .map(drop)
}

async fn get_json(http: SocketAddr, path: &str) -> anyhow::Result<(u16, Value)> {
    let mut c = HttpConn::connect(http).await?;
    let r = c.get(path).await?;
    Ok((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    ))
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Registers `name` (app on `app_port`) with a sidecar on `public_port` whose health is a 1 s
/// TCP check of that port; `upstreams` are (service, local port). The same body as the tests'.
pub use mesh_tests::sidecar::sidecar_registration as registration;

/// Starts `meshproxy run --sidecar-for` and waits for its ready line; returns it and its admin
/// address.
pub fn spawn_proxy(
    proxy_bin: &Path,
    dir: &Path,
    http: SocketAddr,
    sidecar_for: &str,
    extra: &[&str],
) -> anyhow::Result<(Child, SocketAddr)> {
    let admin = local(free_port()?);
    let mut cmd = Command::new(proxy_bin);
    cmd.args(["run", "--sidecar-for", sidecar_for])
        .args(["--agent-addr", &http.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(extra)
        .env("MESH_LOG", "warn")
        .env("NO_COLOR", "1");
    let mut child = Child::spawn(
        &format!("meshproxy ({sidecar_for})"),
        cmd,
        &dir.join(format!("meshproxy-{sidecar_for}.log")),
    )?;
    child.wait_line("meshproxy: ready", START_TIMEOUT)?;
    Ok((child, admin))
}

/// Starts `meshd dev` (from `bin_dir`, data in `dir`) and waits until its CA has a root;
/// returns it and its HTTP address.
pub async fn start_meshd(bin_dir: &Path, dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let mut cmd = Command::new(bin_dir.join("meshd"));
    cmd.args(["dev", "--http-addr", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("meshd-data"))
        .env("MESH_LOG", "warn,openraft=off")
        .env("NO_COLOR", "1");
    let mut meshd = Child::spawn("meshd dev", cmd, &dir.join("meshd.log"))?;
    let line = meshd.wait_line("listening", START_TIMEOUT)?;
    let http: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no http= address in {line:?}"))?;

    wait_until("CA roots", START_TIMEOUT, || async {
        get_json(http, "/v1/connect/ca/roots")
            .await
            .is_ok_and(|(s, v)| s == 200 && v["Roots"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await?;
    Ok((meshd, http))
}

/// Starts meshd dev (from `bin_dir`), registers web → db and starts the sidecars (`proxy_bin`),
/// with their files in `dir`; `app` is db's application.
pub async fn start(
    bin_dir: &Path,
    proxy_bin: &Path,
    dir: &Path,
    app: SocketAddr,
) -> anyhow::Result<MeshChain> {
    std::fs::create_dir_all(dir)?;
    let (meshd, http) = start_meshd(bin_dir, dir).await?;

    let (db_public, web_public, upstream, web_app) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let (full_public, upstream_full, full_app) = (free_port()?, free_port()?, free_port()?);
    let mut api = HttpConn::connect(http).await?;
    put(
        &mut api,
        "/v1/agent/service/register",
        &registration("db", app.port(), db_public, &[]),
    )
    .await?;
    put(
        &mut api,
        "/v1/agent/service/register",
        &registration("web", web_app, web_public, &[("db", upstream)]),
    )
    .await?;
    put(
        &mut api,
        "/v1/agent/service/register",
        &registration("web-full", full_app, full_public, &[("db", upstream_full)]),
    )
    .await?;
    for source in ["web", "web-full"] {
        put(
            &mut api,
            &format!("/v1/connect/intentions/exact?source={source}&destination=db"),
            &json!({"Action": "allow"}),
        )
        .await?;
    }

    let (server, _) = spawn_proxy(proxy_bin, dir, http, "db", &[])?;
    let (client, _) = spawn_proxy(proxy_bin, dir, http, "web", &[])?;
    let (client_full, _) = spawn_proxy(proxy_bin, dir, http, "web-full", &["--no-tls-resumption"])?;
    // web learns db's instance once db's sidecar check passes (1 s interval).
    wait_until(
        "web's proxy sees a healthy db instance",
        START_TIMEOUT,
        || async {
            get_json(http, "/v1/health/connect/db?passing")
                .await
                .is_ok_and(|(s, v)| s == 200 && v.as_array().is_some_and(|a| !a.is_empty()))
        },
    )
    .await?;
    let chain = MeshChain {
        client,
        server,
        client_full,
        meshd,
        entry: local(upstream),
        entry_full: local(upstream_full),
        server_public: local(db_public),
        http,
    };
    // The proxy's own view lags the catalog by one blocking-query round: wait for a first
    // connection to go through end to end.
    for (entry, client) in [
        (chain.entry, &chain.client),
        (chain.entry_full, &chain.client_full),
    ] {
        wait_until(
            "a first connection through the meshproxy chain",
            START_TIMEOUT,
            || async move {
                tokio::task::spawn_blocking(move || super::load::verify(entry, 1024).is_ok())
                    .await
                    .unwrap_or(false)
            },
        )
        .await
        .map_err(|e| client.failure(e))?;
    }
    Ok(chain)
}

/// A leaf certificate and key for `service` from the agent (for the negotiation probe):
/// (cert PEM, key PEM, CA roots PEM).
pub async fn leaf_for(http: SocketAddr, service: &str) -> anyhow::Result<(String, String, String)> {
    let (s, leaf) = get_json(http, &format!("/v1/agent/connect/ca/leaf/{service}")).await?;
    if s != 200 {
        bail!("leaf for {service}: status {s}");
    }
    let (_, roots) = get_json(http, "/v1/agent/connect/ca/roots").await?;
    let ca: Vec<&str> = roots["Roots"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["RootCert"].as_str()).collect())
        .unwrap_or_default();
    Ok((
        leaf["CertPEM"].as_str().unwrap_or_default().to_string(),
        leaf["PrivateKeyPEM"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ca.join("\n"),
    ))
}

impl MeshChain {
    /// PIDs of the two proxies (client side, server side).
    pub fn pids(&self) -> Vec<u32> {
        vec![self.client.pid(), self.server.pid()]
    }

    /// PIDs of the proxies on the no-resumption path (client side, server side).
    pub fn pids_full(&self) -> Vec<u32> {
        vec![self.client_full.pid(), self.server.pid()]
    }

    /// Stops the proxies, then meshd.
    pub fn stop(mut self) {
        self.client.stop();
        self.client_full.stop();
        self.server.stop();
        self.meshd.stop();
    }
}
