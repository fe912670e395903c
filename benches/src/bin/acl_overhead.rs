//! `acl_overhead`: what enforcing ACLs costs a request, ACLs on against ACLs off in the same
//! run (issue 12: overhead ≤ 10 %), and how long resolving a token with 10 policies takes once
//! it is cached (≤ 1 µs).
//!
//! Why: with ACLs on, every agent request resolves its token and checks a permission before
//! doing its work. The connect authorize route (one per inbound connection for proxies that
//! ask their agent) and a cached read (`/v1/health/connect/:s?cached`, what proxies poll for
//! endpoints) are the hot routes; the overhead must stay small against the same route on a
//! server without ACLs.
//!
//! Setup: two in-process single servers in one temporary directory, on 127.0.0.1 with
//! OS-chosen ports: `off` (ACLs disabled) and `on` (ACLs enabled, default deny, bootstrapped),
//! each with a client agent (the agent on `on` acts with the management token). On `on`, ten
//! policies are created and one token links all ten (the first grants what the routes need:
//! `service:write` on `web`, read on every service and node). `web` is registered with a
//! sidecar through each agent; the timed requests go to the agents. Before anything is timed, each route is checked on both servers
//! (200), and on `on` without a token (403: enforcement is really on).
//!
//! Timed: `--rounds` rounds, each timing every route on `off` then on `on` with the same
//! number of keep-alive HTTP/1.1 clients for `--seconds`; rates are summed per route and
//! server. In-process, `Server::acl_resolve` of the 10-policy token (cached after the first
//! call) per call, against a `HashMap` lookup of the same secret (the floor of any cache).
//! Every loop is bounded by a count and a deadline; both servers are shut down before the
//! figures are printed.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, Count, HttpConn, SHUTDOWN_TIMEOUT, Table, client_agent_config, ensure_in,
    load_average, load_average_json, load_average_text, rate, ratio, run_for, shutdown_agent,
    shutdown_server, single_server_config, start_agent, start_server,
};
use mesh_control::agent::{AgentHandle, AgentToken};
use mesh_control::intentions::DefaultPolicy;
use mesh_control::server::{AclConfig, ServerHandle};
use mesh_tests::sidecar::sidecar_registration;

/// How long a server may take to lead with a CA, and set-up requests may be retried.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Policies the timed token links.
const POLICIES: usize = 10;
/// Upper bound on operations per client (or in-process loop) and phase, whatever the duration.
const MAX_OPS: u64 = 500_000_000;

/// ACLs on against ACLs off: request rates on hot agent routes, and cached token resolution.
#[derive(Debug, Parser)]
#[command(name = "acl_overhead")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Concurrent keep-alive HTTP clients per timed phase.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Rounds of (every route on `off`, then on `on`).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One server of the comparison, and the client agent the timed requests go to.
struct Side {
    handle: ServerHandle,
    agent: AgentHandle,
    /// The agent's HTTP address.
    http: SocketAddr,
    /// The token requests carry (`on` only).
    token: Option<String>,
}

/// A timed route.
struct Route {
    name: &'static str,
    method: http::Method,
    path: &'static str,
    body: Bytes,
}

/// Requests that succeeded and failed in one phase.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: Count,
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.count.ops += other.count.ops;
        self.count.elapsed += other.count.elapsed;
        self.errors += other.errors;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.common.duration()?;
    ensure_in("clients", args.clients, 1..=256)?;
    ensure_in("rounds", args.rounds, 1..=20)?;
    let load_start = load_average();
    let dir = args.common.tempdir("mesh-bench-acl-")?;

    let off = start_side(&dir.path().join("off"), false).await?;
    let on = match start_side(&dir.path().join("on"), true).await {
        Ok(s) => s,
        Err(e) => {
            shutdown_server(off.handle, SHUTDOWN_TIMEOUT).await;
            return Err(e);
        }
    };
    let measured = measure(&off, &on, &args, duration).await;
    for side in [off, on] {
        shutdown_agent(side.agent, SHUTDOWN_TIMEOUT).await;
        shutdown_server(side.handle, SHUTDOWN_TIMEOUT).await;
    }
    drop(dir);
    let (routes, resolve, agent_cached, floor) = measured?;
    let load_end = load_average();

    if args.common.json {
        let routes_json: Vec<_> = routes
            .iter()
            .map(|(name, off, on)| {
                serde_json::json!({
                    "route": name,
                    "off_per_sec": off.count.per_sec(),
                    "on_per_sec": on.count.per_sec(),
                    "on_vs_off": ratio(on.count.per_sec(), off.count.per_sec()),
                    "overhead_pct": overhead_pct(off, on),
                    "errors": off.errors + on.errors,
                })
            })
            .collect();
        let json = serde_json::json!({
            "bench": "acl_overhead",
            "seconds": duration.as_secs_f64(),
            "clients": args.clients,
            "rounds": args.rounds,
            "policies": POLICIES,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "routes": routes_json,
            "resolve_ns": ns_per_op(resolve),
            "agent_resolve_ns": ns_per_op(agent_cached),
            "hashmap_floor_ns": ns_per_op(floor),
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "acl_overhead: {} round(s) of {:?} per phase, {} client(s); {} -> {}",
        args.rounds,
        duration,
        args.clients,
        load_average_text(load_start),
        load_average_text(load_end)
    );
    let mut t = Table::new([
        "route", "ACLs off", "ACLs on", "on/off", "overhead", "errors",
    ]);
    for (name, off, on) in &routes {
        t.row([
            name.to_string(),
            rate(off.count.per_sec()),
            rate(on.count.per_sec()),
            format!("{:.3}", ratio(on.count.per_sec(), off.count.per_sec())),
            format!("{:.1} %", overhead_pct(off, on)),
            (off.errors + on.errors).to_string(),
        ]);
    }
    println!("{}", t.render());
    let mut t = Table::new(["in-process", "per call", "vs HashMap floor"]);
    t.row([
        format!("server acl_resolve, token with {POLICIES} policies (cached)"),
        format!("{:.0} ns", ns_per_op(resolve)),
        format!("{:.1}x", ratio(ns_per_op(resolve), ns_per_op(floor))),
    ]);
    t.row([
        "agent cache, same token (Agent::resolve)".to_string(),
        format!("{:.0} ns", ns_per_op(agent_cached)),
        format!("{:.1}x", ratio(ns_per_op(agent_cached), ns_per_op(floor))),
    ]);
    t.row([
        "HashMap<secret, Arc<_>> lookup (floor)".to_string(),
        format!("{:.0} ns", ns_per_op(floor)),
        "1.0x".to_string(),
    ]);
    println!("{}", t.render());
    Ok(())
}

/// How much slower `on` served than `off`, in percent of `off`'s rate (negative: faster).
fn overhead_pct(off: &Tally, on: &Tally) -> f64 {
    (1.0 - ratio(on.count.per_sec(), off.count.per_sec())) * 100.0
}

fn ns_per_op(c: Count) -> f64 {
    if c.ops == 0 {
        0.0
    } else {
        c.elapsed.as_nanos() as f64 / c.ops as f64
    }
}

/// Starts one server, bootstraps ACLs and creates the timed token when `acl`, registers `web`.
async fn start_side(dir: &std::path::Path, acl: bool) -> anyhow::Result<Side> {
    let mut config = single_server_config(if acl { "on" } else { "off" }, dir);
    config.acl = AclConfig {
        enabled: acl,
        default_policy: DefaultPolicy::Deny,
    };
    let handle = start_server(config, READY_TIMEOUT).await?;
    let server_http = handle.http_addr;
    let set_up = async {
        let root = if acl {
            Some(bootstrap(server_http).await?)
        } else {
            None
        };
        let token = match &root {
            Some(root) => Some(timed_token(server_http, root).await?),
            None => None,
        };
        // The agent acts with the management token (its node and the registered services).
        let mut agent_config = client_agent_config("bench-agent", handle.rpc_addr);
        agent_config.token = AgentToken(root.clone().unwrap_or_default());
        let agent = start_agent(agent_config, READY_TIMEOUT).await?;
        let http = agent.http_addr.context("the agent serves HTTP")?;
        let mut conn = connect(http, root.as_deref()).await?;
        let reg = sidecar_registration("web", 8080, 21000, &[]).to_string();
        conn.expect_ok(http::Method::PUT, "/v1/agent/service/register", reg)
            .await?;
        anyhow::Ok((agent, http, token))
    };
    match set_up.await {
        Ok((agent, http, token)) => Ok(Side {
            handle,
            agent,
            http,
            token,
        }),
        Err(e) => {
            shutdown_server(handle, SHUTDOWN_TIMEOUT).await;
            Err(e)
        }
    }
}

async fn connect(http: SocketAddr, token: Option<&str>) -> anyhow::Result<HttpConn> {
    let conn = HttpConn::connect(http).await?;
    match token {
        Some(t) => conn.with_token(t),
        None => Ok(conn),
    }
}

/// `PUT /v1/acl/bootstrap`, retried until the leader takes it; the management SecretID.
async fn bootstrap(http: SocketAddr) -> anyhow::Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut conn = connect(http, None).await?;
        match conn
            .expect_ok(http::Method::PUT, "/v1/acl/bootstrap", String::new())
            .await
        {
            Ok(v) => {
                return v["SecretID"]
                    .as_str()
                    .map(str::to_string)
                    .context("bootstrap answer without SecretID");
            }
            Err(e) if Instant::now() >= deadline => return Err(e.context("ACL bootstrap")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Creates [`POLICIES`] policies and a token linking them all; its SecretID.
async fn timed_token(http: SocketAddr, root: &str) -> anyhow::Result<String> {
    let mut conn = connect(http, Some(root)).await?;
    let mut links = Vec::new();
    for i in 0..POLICIES {
        let rules = if i == 0 {
            "service \"web\" { policy = \"write\" }\nservice_prefix \"\" { policy = \"read\" }\n\
             node_prefix \"\" { policy = \"read\" }"
                .to_string()
        } else {
            format!("service_prefix \"team-{i}-\" {{ policy = \"write\" }}")
        };
        let body = serde_json::json!({ "Name": format!("bench-{i}"), "Rules": rules });
        let p = conn
            .expect_ok(http::Method::PUT, "/v1/acl/policy", body.to_string())
            .await?;
        links.push(serde_json::json!({ "ID": p["ID"] }));
    }
    let body = serde_json::json!({ "Description": "acl_overhead", "Policies": links });
    let t = conn
        .expect_ok(http::Method::PUT, "/v1/acl/token", body.to_string())
        .await?;
    t["SecretID"]
        .as_str()
        .map(str::to_string)
        .context("token answer without SecretID")
}

fn routes(trust_domain: &str) -> Vec<Route> {
    let authorize = serde_json::json!({
        "Target": "web",
        "ClientCertURI": format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/db"),
    });
    vec![
        Route {
            name: "POST /v1/agent/connect/authorize",
            method: http::Method::POST,
            path: "/v1/agent/connect/authorize",
            body: Bytes::from(authorize.to_string()),
        },
        Route {
            name: "GET /v1/health/connect/web?cached",
            method: http::Method::GET,
            path: "/v1/health/connect/web?cached",
            body: Bytes::new(),
        },
    ]
}

async fn measure(
    off: &Side,
    on: &Side,
    args: &Args,
    duration: Duration,
) -> anyhow::Result<(Vec<(&'static str, Tally, Tally)>, Count, Count, Count)> {
    let trust_domain = on.handle.server.state.read(|s| s.ca.trust_domain.clone());
    let routes = routes(&trust_domain);
    // Untimed checks: every route answers 200 on both sides, and 403 on `on` without a token.
    for r in &routes {
        for side in [off, on] {
            let mut conn = connect(side.http, side.token.as_deref()).await?;
            let body = String::from_utf8_lossy(&r.body).to_string();
            conn.expect_ok(r.method.clone(), r.path, body).await?;
        }
        let mut anonymous = connect(on.http, None).await?;
        let a = anonymous
            .request(r.method.clone(), r.path, r.body.clone())
            .await?;
        if a.status != 403 {
            bail!(
                "{}: anonymous request on the ACL server answered {}, not 403",
                r.name,
                a.status
            );
        }
    }
    let mut totals: Vec<(&'static str, Tally, Tally)> = routes
        .iter()
        .map(|r| (r.name, Tally::default(), Tally::default()))
        .collect();
    for _ in 0..args.rounds {
        for (i, r) in routes.iter().enumerate() {
            let t_off = phase(off, r, args.clients, duration).await?;
            let t_on = phase(on, r, args.clients, duration).await?;
            totals[i].1.add(t_off);
            totals[i].2.add(t_on);
        }
    }

    // In-process: the cached resolution of the 10-policy token against a HashMap floor.
    let secret = on.token.clone().context("the ACL side has a token")?;
    let server = on.handle.server.clone();
    server
        .acl_resolve(Some(&secret))
        .map_err(|e| anyhow::anyhow!("resolving the timed token: {e}"))?;
    let resolve = run_for(duration, MAX_OPS, |_| {
        server
            .acl_resolve(black_box(Some(secret.as_str())))
            .map(|c| {
                black_box(c);
            })
    })
    .map_err(|e| anyhow::anyhow!("resolving the timed token: {e}"))?;
    // The agent's per-token cache (what its routes use), filled by the first call.
    let agent = on.agent.agent.clone();
    let (start, mut ops) = (Instant::now(), 0u64);
    while ops < MAX_OPS && (ops == 0 || start.elapsed() < duration) {
        black_box(
            agent
                .resolve(black_box(Some(secret.as_str())))
                .await
                .map_err(|e| anyhow::anyhow!("agent resolving the timed token: {e}"))?,
        );
        ops += 1;
    }
    // The first (filling) call is not counted; its one RPC stays in the elapsed time.
    let agent_cached = Count {
        ops: ops.saturating_sub(1),
        elapsed: start.elapsed(),
    };
    let floor_map: HashMap<String, Arc<str>> = (0..1000)
        .map(|i| {
            (
                format!("{i:08}-0000-4000-8000-000000000000"),
                Arc::from("x"),
            )
        })
        .chain(std::iter::once((secret.clone(), Arc::from("token"))))
        .collect();
    let floor = run_for(duration, MAX_OPS, |_| {
        black_box(floor_map.get(black_box(secret.as_str())).cloned())
            .map(drop)
            .context("secret in the floor map")
    })?;
    Ok((totals, resolve, agent_cached, floor))
}

/// `clients` keep-alive connections sending `route` on `side` for `duration`.
async fn phase(
    side: &Side,
    route: &Route,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(side.http, side.token.as_deref()).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (method, path, body) = (route.method.clone(), route.path, route.body.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut sent = 0;
                while sent < MAX_OPS && Instant::now() < deadline {
                    sent += 1;
                    match conn.request(method.clone(), path, body.clone()).await {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        let (ok, errors) = t.await.context("client task")?;
        tally.count.ops += ok;
        tally.errors += errors;
    }
    tally.count.elapsed = start.elapsed();
    Ok(tally)
}
