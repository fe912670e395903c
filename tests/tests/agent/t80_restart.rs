//! Agent restart (issue 10, point 3): an agent keeps the services and checks registered
//! through its HTTP API in its data directory and restores them before it serves or syncs, so
//! restarting it changes nothing in the catalog and nothing for the traffic.
//!
//! `restarts_under_load_drop_nothing` SIGKILLs a `meshd agent` and starts it again with the
//! same `--data-dir`, five times, while two `meshproxy` sidecars (talking to that agent) carry
//! about 100 new connections per second and a few long-lived ones to an echo app, and while
//! the server's catalog and `?passing` health answers are polled continuously. Nothing may
//! fail and nothing may disappear, not even for one poll.
//!
//! `persisted_state_follows_the_api` (in-process agent) checks the files themselves: mode
//! 0600 in a 0700 directory, removed on deregistration, an undecodable file set aside, and a
//! TTL check that keeps its wall-clock deadline across a restart.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mesh_control::agent::persist::{DIR_MODE, FILE_MODE, SERVICES_DIR, file_name};
use mesh_control::agent::{Agent, AgentConfig};
use mesh_tests::eventually::{eventually, try_eventually};
use mesh_tests::process::{Meshd, free_port, http};
use mesh_tests::sidecar::{Echo, Proxy, roundtrip};
use serde_json::json;

use crate::{InprocEnv, ProcServers, ok, put_intention, spawn_agent, try_call, wait_json};

const NODE: &str = "client-restart";
const RESTARTS: usize = 5;
/// Services on the restarted agent's node: two services and their sidecars.
const SERVICES: [&str; 4] = ["db", "db-sidecar-proxy", "web", "web-sidecar-proxy"];
/// New connections: this many workers, each opening one connection per `CONN_PERIOD`
/// (4 x 25/s = 100 connections per second).
const CONN_WORKERS: u64 = 4;
const CONN_PERIOD: Duration = Duration::from_millis(40);
/// Long-lived connections, each echoing a message every `LONG_PERIOD`.
const LONG_LIVED: usize = 4;
const LONG_PERIOD: Duration = Duration::from_millis(100);
/// Catalog and health polls of the server: one round per `POLL_PERIOD`.
const POLL_PERIOD: Duration = Duration::from_millis(50);
/// New connections that must succeed between two restarts (about 2 s of traffic), so each
/// restart happens under load with the proxies reconnected from the previous one.
const CONNS_BETWEEN_RESTARTS: u64 = 200;
/// Upper bound of any single loop of a load thread (they stop on the flag long before).
const MAX_ROUNDS: u64 = 1_000_000;

/// Counters and first errors shared by the load and monitor threads.
#[derive(Default)]
struct Stats {
    stop: AtomicBool,
    conns_ok: AtomicU64,
    conns_failed: AtomicU64,
    long_checks: AtomicU64,
    long_failed: AtomicU64,
    polls: AtomicU64,
    catalog_gaps: AtomicU64,
    health_gaps: AtomicU64,
    poll_errors: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Stats {
    /// Counts one failure in `counter` and keeps its description.
    fn failed(&self, counter: &AtomicU64, e: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.error(e);
    }

    fn error(&self, e: String) {
        let mut errs = self.errors.lock().unwrap();
        if errs.len() < 20 {
            errs.push(e);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Sleeps until `next` (pacing a load loop at a fixed rate, not waiting for anything).
fn pace(next: Instant) {
    let now = Instant::now();
    if next > now {
        std::thread::sleep(next - now);
    }
}

/// One worker of new connections: connect, send, half-close, read the echo, compare.
fn new_connections(worker: u64, upstream: SocketAddr, stats: Arc<Stats>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        for k in 0..MAX_ROUNDS {
            if stats.stopped() {
                return;
            }
            let payload = format!("worker {worker} connection {k} {}", "x".repeat(64));
            match roundtrip(upstream, payload.as_bytes()) {
                Ok(back) if back == payload.as_bytes() => {
                    stats.conns_ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(back) => {
                    stats.conns_failed.fetch_add(1, Ordering::SeqCst);
                    stats.error(format!(
                        "connection {worker}/{k}: echoed {} bytes, sent {}",
                        back.len(),
                        payload.len()
                    ));
                }
                Err(e) => {
                    stats.failed(&stats.conns_failed, format!("connection {worker}/{k}: {e}"));
                }
            }
            let k32 = u32::try_from(k + 1).unwrap_or(u32::MAX);
            pace(start + CONN_PERIOD * k32);
        }
    })
}

/// One long-lived connection: a numbered message every `LONG_PERIOD`, its echo checked.
fn long_lived(i: usize, upstream: SocketAddr, stats: Arc<Stats>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let fail = |what: String| {
            stats.failed(
                &stats.long_failed,
                format!("long-lived connection {i}: {what}"),
            );
        };
        let mut s = match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => return fail(format!("connect: {e}")),
        };
        let timeouts = s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(10))));
        if let Err(e) = timeouts {
            return fail(format!("socket options: {e}"));
        }
        let start = Instant::now();
        for k in 0..MAX_ROUNDS {
            if stats.stopped() {
                break;
            }
            let msg = format!("long {i} message {k:>12}\n");
            let mut back = vec![0u8; msg.len()];
            let r = s
                .write_all(msg.as_bytes())
                .and_then(|()| s.read_exact(&mut back));
            match r {
                Ok(()) if back == msg.as_bytes() => {
                    stats.long_checks.fetch_add(1, Ordering::SeqCst);
                }
                Ok(()) => return fail(format!("message {k}: echo differs")),
                Err(e) => return fail(format!("message {k}: {e}")),
            }
            let k32 = u32::try_from(k + 1).unwrap_or(u32::MAX);
            pace(start + LONG_PERIOD * k32);
        }
        // A clean end: our EOF is answered with the app's after everything was echoed.
        let mut rest = Vec::new();
        let end = s
            .shutdown(Shutdown::Write)
            .and_then(|()| s.read_to_end(&mut rest));
        match end {
            Ok(_) if rest.is_empty() => {}
            Ok(n) => fail(format!("{n} unexpected bytes at the end")),
            Err(e) => fail(format!("closing: {e}")),
        }
    })
}

/// Service IDs of `NODE` in the server's catalog (`/v1/catalog/service/:s` of each service).
fn catalog_ids(server: SocketAddr) -> Result<BTreeSet<String>, String> {
    let mut ids = BTreeSet::new();
    for svc in SERVICES {
        let r = http("GET", server, &format!("/v1/catalog/service/{svc}"), None)
            .map_err(|e| format!("{e:#}"))?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.body));
        }
        let v = r.json().map_err(|e| format!("{e:#}"))?;
        for e in v.as_array().into_iter().flatten() {
            if e["Node"] == NODE
                && let Some(id) = e["ServiceID"].as_str()
            {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids)
}

/// Whether `NODE`'s instance of `service` is in the server's `?passing` health answer.
fn passing_on_node(server: SocketAddr, service: &str) -> Result<bool, String> {
    let r = http(
        "GET",
        server,
        &format!("/v1/health/service/{service}?passing"),
        None,
    )
    .map_err(|e| format!("{e:#}"))?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.body));
    }
    let v = r.json().map_err(|e| format!("{e:#}"))?;
    Ok(v.as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["Node"]["Node"] == NODE && e["Service"]["ID"] == service)
    }))
}

/// Polls the server's catalog and health answers until stopped, counting every poll where a
/// service of the node is missing from the catalog or not passing.
fn monitor(server: SocketAddr, stats: Arc<Stats>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let want: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
        let start = Instant::now();
        for k in 0..MAX_ROUNDS {
            if stats.stopped() {
                return;
            }
            stats.polls.fetch_add(1, Ordering::SeqCst);
            match catalog_ids(server) {
                Ok(ids) if ids == want => {}
                Ok(ids) => {
                    stats.failed(
                        &stats.catalog_gaps,
                        format!("poll {k}: catalog of {NODE} is {ids:?}"),
                    );
                }
                Err(e) => {
                    stats.failed(
                        &stats.poll_errors,
                        format!("poll {k}: catalog read failed: {e}"),
                    );
                }
            }
            for svc in SERVICES {
                match passing_on_node(server, svc) {
                    Ok(true) => {}
                    Ok(false) => {
                        stats.failed(
                            &stats.health_gaps,
                            format!("poll {k}: {svc} not in ?passing"),
                        );
                    }
                    Err(e) => {
                        stats.failed(
                            &stats.poll_errors,
                            format!("poll {k}: health read of {svc} failed: {e}"),
                        );
                    }
                }
            }
            let k32 = u32::try_from(k + 1).unwrap_or(u32::MAX);
            pace(start + POLL_PERIOD * k32);
        }
    })
}

/// Waits until `stats` counts `n` more successful new connections than `from`.
async fn wait_for_traffic(stats: &Stats, from: u64, n: u64) {
    eventually(
        &format!("{n} more successful connections"),
        Duration::from_secs(60),
        || {
            let now = stats.conns_ok.load(Ordering::SeqCst);
            let failed = stats.conns_failed.load(Ordering::SeqCst);
            async move {
                if now >= from + n {
                    Ok(())
                } else {
                    Err(format!("{} since, {failed} failed", now - from))
                }
            }
        },
    )
    .await;
}

/// The agent's local services, from its own API.
async fn agent_services(agent: SocketAddr) -> BTreeSet<String> {
    let v = ok(agent, "GET", "/v1/agent/services", None).await.json();
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The agent's checks as (check ID, status).
async fn agent_checks(agent: SocketAddr) -> Vec<(String, String)> {
    let v = ok(agent, "GET", "/v1/agent/checks", None).await.json();
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, c)| (k.clone(), c["Status"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_load_drop_nothing() {
    let servers = ProcServers::start(1).await;
    let server = servers.http(0);
    let data_dir = mesh_tests::data_dir();
    let mut agent = spawn_agent(NODE, &servers.rpc_addrs(), data_dir.path(), &[]);
    let a = agent.http_addr;

    let echo = Echo::start();
    let (db_public, web_public, up) = (free_port(), free_port(), free_port());
    // db: a TTL check on the service (passing, long TTL), Consul's default sidecar checks
    // (TCP "Connect Sidecar Listening" every 10 s, alias of db) on its sidecar.
    let db = json!({
        "Name": "db", "ID": "db", "Port": echo.port(),
        "Check": {"CheckID": "db-ttl", "TTL": "10m", "Status": "passing"},
        "Connect": {"SidecarService": {"Port": db_public}}
    });
    let web = json!({
        "Name": "web", "ID": "web", "Port": free_port(),
        "Connect": {"SidecarService": {"Port": web_public, "Proxy": {"Upstreams": [
            {"DestinationName": "db", "LocalBindPort": up}]}}}
    });
    register_all(a, [db, web]).await;
    put_intention(server, "web", "db", "allow").await;
    let db_proxy = Proxy::start(a, "db", &[]);
    let web_proxy = Proxy::start(a, "web", &[]);
    let upstream: SocketAddr = format!("127.0.0.1:{up}").parse().unwrap();

    // Steady state: every service of the node in the catalog and passing (the sidecars'
    // first TCP probe comes within its 10 s interval), and traffic flowing.
    eventually(
        "every service of the node passing on the server",
        Duration::from_secs(40),
        || async move {
            let ids = catalog_ids(server)?;
            let mut missing: Vec<&str> = Vec::new();
            for s in SERVICES {
                if !ids.contains(s) || !passing_on_node(server, s)? {
                    missing.push(s);
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not passing yet: {missing:?}"))
            }
        },
    )
    .await;
    eventually(
        "a first echo through web's upstream",
        Duration::from_secs(30),
        || async move {
            match roundtrip(upstream, b"hello") {
                Ok(b) if b == b"hello" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let serial = |p: &Proxy| {
        p.config()["Identity"]["Leaf"]["serial_number"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let leaves_before = [serial(&db_proxy), serial(&web_proxy)];

    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let mut threads = vec![monitor(server, stats.clone())];
    for w in 0..CONN_WORKERS {
        threads.push(new_connections(w, upstream, stats.clone()));
    }
    for i in 0..LONG_LIVED {
        threads.push(long_lived(i, upstream, stats.clone()));
    }

    let want: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    let mut restart_times = Vec::new();
    for round in 1..=RESTARTS {
        let before = stats.conns_ok.load(Ordering::SeqCst);
        wait_for_traffic(&stats, before, CONNS_BETWEEN_RESTARTS).await;
        let killed = Instant::now();
        agent.kill();
        agent = Meshd::spawn(&agent.name, &agent.args)
            .unwrap_or_else(|e| panic!("restart {round}: meshd agent: {e:#}"));
        let back = killed.elapsed();
        restart_times.push(back);
        assert_eq!(agent.http_addr, a, "restarted on the same address");
        // The very first answers of the restarted agent already hold the restored state.
        assert_eq!(agent_services(a).await, want, "restart {round}: services");
        let checks = agent_checks(a).await;
        assert!(
            checks.len() == 5 && checks.iter().all(|(_, s)| s == "passing"),
            "restart {round}: checks restored with their status: {checks:?}"
        );
        eprintln!("t80: restart {round}: agent serving again {back:?} after SIGKILL");
    }
    let before = stats.conns_ok.load(Ordering::SeqCst);
    wait_for_traffic(&stats, before, CONNS_BETWEEN_RESTARTS).await;

    // The leaf keys died with the first agent: each proxy moves, under the same load, to a
    // leaf the restarted agent issued (its leaf indexes start above the previous run's, so
    // the proxy's blocking query sees the new leaf as a change; see `agent/leaf.rs`).
    let rotation = Instant::now();
    let proxies = [("db", &db_proxy), ("web", &web_proxy)];
    eventually(
        "both proxies on a leaf issued by the restarted agent",
        Duration::from_secs(120),
        || {
            let now: Vec<String> = proxies.iter().map(|(_, p)| serial(p)).collect();
            let old = leaves_before.clone();
            async move {
                let mut pending = Vec::new();
                for (i, (svc, _)) in proxies.iter().enumerate() {
                    let r = try_call(a, "GET", &format!("/v1/agent/connect/ca/leaf/{svc}"), None)
                        .await?;
                    let issued = r.json()["SerialNumber"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if now[i] == old[i] || now[i] != issued {
                        pending.push(format!("{svc}: proxy {} agent {issued}", now[i]));
                    }
                }
                if pending.is_empty() {
                    Ok(())
                } else {
                    Err(pending.join("; "))
                }
            }
        },
    )
    .await;
    let rotated_after = rotation.elapsed();

    stats.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("load thread");
    }
    let run = started.elapsed();
    let load = Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let conns = g(&stats.conns_ok) + g(&stats.conns_failed);
    eprintln!(
        "t80: {RESTARTS} agent restarts in {run:?} (each back in {restart_times:?}); \
         new connections attempted {conns}, failed {}; long-lived connections {LONG_LIVED}, \
         echo checks {}, failed {}; server polls {} (catalog gaps {}, ?passing gaps {}, \
         poll errors {}); echo app saw {:?} (connections, bytes); proxies on the \
         restarted agent's leaves within {rotated_after:?} of checking; load: {load}",
        g(&stats.conns_failed),
        g(&stats.long_checks),
        g(&stats.long_failed),
        g(&stats.polls),
        g(&stats.catalog_gaps),
        g(&stats.health_gaps),
        g(&stats.poll_errors),
        echo.seen(),
    );
    let errors = stats.errors.lock().unwrap().clone();
    let logs = || {
        format!(
            "\n--- db proxy ---\n{}\n--- web proxy ---\n{}",
            db_proxy.log(),
            web_proxy.log()
        )
    };
    assert!(
        errors.is_empty(),
        "first errors: {errors:#?}{}",
        if errors.iter().any(|e| e.contains("connection")) {
            logs()
        } else {
            String::new()
        }
    );
    assert_eq!(g(&stats.conns_failed), 0);
    assert_eq!(g(&stats.long_failed), 0);
    assert_eq!(g(&stats.catalog_gaps) + g(&stats.health_gaps), 0);
    assert!(
        conns >= (RESTARTS as u64 + 1) * CONNS_BETWEEN_RESTARTS,
        "{conns} connections"
    );
    assert!(g(&stats.long_checks) >= LONG_LIVED as u64 * 10);
    assert!(g(&stats.polls) >= 20, "{} polls", g(&stats.polls));
    drop(servers);
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Status and output of check `id` on the agent at `agent`.
async fn check_state(agent: SocketAddr, id: &str) -> (String, String) {
    let v = ok(agent, "GET", "/v1/agent/checks", None).await.json();
    let c = &v[id];
    (
        c["Status"].as_str().unwrap_or("absent").to_string(),
        c["Output"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_state_follows_the_api() {
    const TTL: Duration = Duration::from_secs(6);
    let dir = mesh_tests::data_dir();
    let data = dir.path().join("agent");
    let d = data.clone();
    let env = InprocEnv::start("client-persist", move |c| c.data_dir = Some(d)).await;
    let a = env.http;
    let services = data.join(SERVICES_DIR);
    assert_eq!(mode(&data), DIR_MODE);
    assert_eq!(mode(&services), DIR_MODE);

    let api = json!({"Name": "api", "Port": 7000,
        "Check": {"CheckID": "api-ttl", "TTL": "6s", "Status": "critical"}});
    let web = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}});
    register_all(a, [api, web]).await;
    for id in ["api", "web", "web-sidecar-proxy"] {
        let f = services.join(file_name(id));
        assert_eq!(mode(&f), FILE_MODE, "{}", f.display());
    }
    ok(a, "PUT", "/v1/agent/check/pass/api-ttl?note=fine", None).await;
    let passed = Instant::now();
    eventually(
        "api-ttl passing on the agent",
        Duration::from_secs(10),
        || async move {
            let s = check_state(a, "api-ttl").await;
            if s.0 == "passing" {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;

    // Deregistering the parent deletes its file and its sidecar's.
    ok(a, "PUT", "/v1/agent/service/deregister/web", None).await;
    assert!(!services.join(file_name("web")).exists());
    assert!(!services.join(file_name("web-sidecar-proxy")).exists());
    // A corrupt file next to the good one (private, as the agent writes its files: a wider
    // one would stop the restart, see the cluster suite's t90_data_dir_mode).
    let broken = services.join("broken.json");
    std::io::Write::write_all(
        &mut mesh_control::data_dir::create_file(&broken).unwrap(),
        b"{\"Version\": 1, \"Serv",
    )
    .unwrap();

    // A deliberate gap between the TTL update and the restart (not a wait for anything), so
    // that the persisted deadline and "a full TTL after the restart" are seconds apart.
    tokio::time::sleep_until((passed + TTL / 2).into()).await;
    let config: AgentConfig = {
        let mut c = env.agent.agent.config.clone();
        c.http_addr = Some("127.0.0.1:0".parse().unwrap());
        c
    };
    let InprocEnv {
        cluster,
        agent,
        server_http,
        ..
    } = env;
    agent.shutdown().await;
    let restarted = Instant::now();
    let agent = Agent::start(config).await.expect("agent restarts");
    let a = agent.http_addr.expect("HTTP address");

    assert_eq!(
        agent_services(a).await,
        BTreeSet::from(["api".to_string()]),
        "restored before the first answer"
    );
    assert_eq!(
        check_state(a, "api-ttl").await,
        ("passing".into(), "fine".into()),
        "status and output restored"
    );
    assert!(!broken.exists(), "the corrupt file was moved aside");
    assert!(services.join("broken.json.corrupt").exists());

    let expired = try_eventually(TTL * 2, || async move {
        let s = check_state(a, "api-ttl").await;
        if s.0 == "critical" {
            Ok(Instant::now())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
    .expect("the TTL check expires");
    let since_pass = expired - passed;
    let since_restart = expired - restarted;
    eprintln!("t80: TTL expired {since_pass:?} after the pass, {since_restart:?} after restart");
    assert!(
        since_pass >= TTL - Duration::from_millis(100),
        "expired {since_pass:?} after the pass, before its {TTL:?} TTL"
    );
    assert!(
        since_restart < TTL - Duration::from_secs(1),
        "expired {since_restart:?} after the restart: the deadline was not kept"
    );
    // The server's catalog sees the expiry too (anti-entropy runs after the restore).
    wait_json(
        server_http,
        "/v1/health/service/api",
        "api-ttl critical on the server",
        Duration::from_secs(10),
        |v| {
            v[0]["Checks"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["CheckID"] == "api-ttl"))
                .is_some_and(|c| c["Status"] == "critical")
        },
    )
    .await;
    agent.shutdown().await;
    cluster.shutdown().await;
}

/// Registers each of `services` (`/v1/agent/service/register` bodies) with the agent at `a`.
async fn register_all(a: SocketAddr, services: impl IntoIterator<Item = serde_json::Value>) {
    for body in services {
        ok(
            a,
            "PUT",
            "/v1/agent/service/register",
            Some(&body.to_string()),
        )
        .await;
    }
}
