//! `agent_authorize`: authorization decisions per second with 10,000 intentions loaded, made
//! in-process (`agent::authorize::decide` on the intention views the agent caches) and over
//! loopback HTTP (`POST /v1/agent/connect/authorize` on a client agent), each against a
//! baseline measured in the same run.
//!
//! Why: every inbound mesh connection of a proxy that asks its agent is one such decision, so
//! their rate bounds how fast a host accepts connections. The baselines are floors: in-process
//! a `HashMap<(String, String), bool>` look-up of the same (source, target) pairs (no decision
//! can be cheaper than finding the answer), over HTTP `GET /v1/agent/self` on the same agent
//! (the cost of an HTTP request that does no work). The ratios say how far above those floors
//! a decision is.
//!
//! Setup: one in-process server bootstrapping alone (fast election) loads 10,000 intentions
//! through `Server::write` with concurrent writers (`svc-{i} -> db-{i % 100}`, every tenth a
//! deny, plus `* -> db-7` deny and `web -> *` allow); a separate in-process client agent then
//! answers authorize requests from its cache. Decisions are checked against the expected
//! answers (untimed) before anything is timed.
//!
//! Everything listens on 127.0.0.1 with OS-chosen ports; data lives in one temporary directory
//! removed at exit; the agent and the server are shut down before the figures are printed; every
//! loop is bounded by a count and a deadline.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, Count, HttpConn, SHUTDOWN_TIMEOUT, Table, ensure_in, load_average,
    load_average_json, load_average_text, rate, ratio, run_for, shutdown_agent, shutdown_server,
    start_client_agent, start_single_server,
};
use mesh_control::agent::Agent;
use mesh_control::agent::authorize::{AuthorizeResponse, decide};
use mesh_control::agent::cache::{CacheKey, IntentionView, Value};
use mesh_control::fsm::Command;
use mesh_control::intentions::IntentionSet;
use mesh_control::model::{Intention, IntentionAction};
use mesh_control::server::Server;
use mesh_tests::inproc::intention;

/// How long the server may take to lead with a CA, and the agent to connect and sync.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Intentions loaded (including the two wildcard ones).
const INTENTIONS: usize = 10_000;
/// Exact-destination services `db-0` .. `db-99`.
const DESTINATIONS: usize = 100;
/// The destination with a `* -> db-7` deny.
const WILDCARD_DENIED: usize = 7;
/// How long loading the intentions may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Distinct (source, target) pairs decided in turn.
const PAIRS: usize = 4096;
/// Upper bound on passes over the pairs per in-process phase, whatever the duration.
const MAX_PASSES: u64 = 10_000_000;
/// Upper bound on requests per client and HTTP phase, whatever the duration.
const MAX_REQUESTS_PER_CLIENT: u64 = 100_000_000;
/// How long the agent may take to answer the first request for a destination (cache fill).
const WARM_TIMEOUT: Duration = Duration::from_secs(60);

/// Authorize decisions per second with 10,000 intentions, in-process and over loopback HTTP.
#[derive(Debug, Parser)]
#[command(name = "agent_authorize")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Concurrent keep-alive HTTP clients of the second HTTP round (the first has one).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Concurrent writers loading the intentions through the leader.
    #[arg(long, default_value_t = 32)]
    loaders: usize,
}

/// One (source, target) pair and everything needed to decide it.
struct Pair {
    target: String,
    uri: String,
    key: (String, String),
    expected: bool,
    /// The view the agent cached for `target`.
    view: Arc<IntentionView>,
    /// `POST /v1/agent/connect/authorize` body.
    body: Bytes,
}

/// One timed phase: `ops` decisions (or requests) in `elapsed`, `errors` failed requests.
#[derive(Debug, Default, Clone)]
struct Phase {
    name: String,
    clients: usize,
    count: Count,
    errors: u64,
    first_error: Option<String>,
}

impl Phase {
    fn per_op_ns(&self) -> f64 {
        let rate = self.count.per_sec();
        if rate > 0.0 {
            self.clients as f64 * 1e9 / rate
        } else {
            0.0
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "clients": self.clients,
            "ops": self.count.ops,
            "elapsed_s": self.count.elapsed.as_secs_f64(),
            "per_sec": self.count.per_sec(),
            "ns_per_op_per_client": self.per_op_ns(),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// What loading the intentions took.
#[derive(Debug)]
struct Load {
    count: Count,
    writers: usize,
    view_intentions: Vec<usize>,
}

struct Measured {
    load: Load,
    in_process: Vec<Phase>,
    http: Vec<(Phase, Phase)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.common.duration()?;
    ensure_in("clients", args.clients, 1..=256)?;
    ensure_in("loaders", args.loaders, 1..=1024)?;
    let load_start = load_average();
    let dir = args.common.tempdir("mesh-bench-authorize-")?;

    let server = start_single_server("s1", &dir.path().join("s1"), READY_TIMEOUT).await?;
    let load = match load_intentions(server.server.clone(), args.loaders).await {
        Ok(l) => l,
        Err(e) => {
            shutdown_server(server, SHUTDOWN_TIMEOUT).await;
            return Err(e);
        }
    };
    let agent = match start_client_agent("bench-agent", server.rpc_addr, READY_TIMEOUT).await {
        Ok(a) => a,
        Err(e) => {
            shutdown_server(server, SHUTDOWN_TIMEOUT).await;
            return Err(e);
        }
    };
    let measured = measure(
        &server.server,
        &agent.agent,
        agent.http_addr,
        args.clients,
        duration,
        load,
    )
    .await;
    shutdown_agent(agent, SHUTDOWN_TIMEOUT).await;
    shutdown_server(server, SHUTDOWN_TIMEOUT).await;
    drop(dir);
    let m = measured?;
    let load_end = load_average();

    let [decide_views, decide_all, lookup] = [0, 1, 2].map(|i| m.in_process[i].clone());
    let ratio_views = ratio(decide_views.count.per_sec(), lookup.count.per_sec());
    let ratio_all = ratio(decide_all.count.per_sec(), lookup.count.per_sec());
    let http_ratios: Vec<f64> = m
        .http
        .iter()
        .map(|(a, s)| ratio(a.count.per_sec(), s.count.per_sec()))
        .collect();
    let views = &m.load.view_intentions;
    let (view_min, view_max) = (
        views.iter().min().copied().unwrap_or(0),
        views.iter().max().copied().unwrap_or(0),
    );

    if args.common.json {
        let json = serde_json::json!({
            "bench": "agent_authorize",
            "seconds": duration.as_secs_f64(),
            "intentions": INTENTIONS,
            "pairs": PAIRS,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "load": {
                "writers": m.load.writers,
                "writes": m.load.count.ops,
                "elapsed_s": m.load.count.elapsed.as_secs_f64(),
                "per_sec": m.load.count.per_sec(),
            },
            "cached_view_intentions": { "min": view_min, "max": view_max },
            "in_process": m.in_process.iter().map(Phase::json).collect::<Vec<_>>(),
            "http": m.http.iter().zip(&http_ratios).map(|((a, s), r)| serde_json::json!({
                "authorize": a.json(),
                "baseline_agent_self": s.json(),
                "ratio": r,
            })).collect::<Vec<_>>(),
            "ratio_decide_cached_views_to_hashmap": ratio_views,
            "ratio_decide_one_view_of_all_to_hashmap": ratio_all,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }

    println!(
        "agent_authorize: {INTENTIONS} intentions, {PAIRS} (source, target) pairs in turn, \
         {:.1} s per phase",
        duration.as_secs_f64()
    );
    println!("start {}", load_average_text(load_start));
    println!(
        "loaded {} intentions with {} writers in {:.2} s ({}); the agent's cached view \
         per destination holds {view_min}..{view_max} of them",
        m.load.count.ops,
        m.load.writers,
        m.load.count.elapsed.as_secs_f64(),
        rate(m.load.count.per_sec()),
    );
    let mut table = Table::new(["phase", "clients", "decisions", "errors", "rate", "per op"]);
    let mut row = |p: &Phase| {
        table.row([
            p.name.clone(),
            p.clients.to_string(),
            p.count.ops.to_string(),
            p.errors.to_string(),
            rate(p.count.per_sec()),
            format!("{:.0} ns", p.per_op_ns()),
        ]);
    };
    for p in &m.in_process {
        row(p);
    }
    for (a, s) in &m.http {
        row(a);
        row(s);
    }
    print!("{}", table.render());
    for p in m
        .in_process
        .iter()
        .chain(m.http.iter().flat_map(|(a, s)| [a, s]))
    {
        if let Some(e) = &p.first_error {
            println!("first error of {:?}: {e}", p.name);
        }
    }
    println!("end   {}", load_average_text(load_end));
    println!(
        "ratio = in-process decisions/s / HashMap look-ups/s = {ratio_views:.3} (agent's cached \
         views), {ratio_all:.3} (one view of all {INTENTIONS})"
    );
    for ((a, _), r) in m.http.iter().zip(&http_ratios) {
        println!(
            "ratio = HTTP authorize/s / GET /v1/agent/self/s = {r:.3} with {} client(s)",
            a.clients
        );
    }
    Ok(())
}

/// Number of `svc-{i} -> db-{i % 100}` intentions (the rest are the two wildcard ones).
const EXACT: usize = INTENTIONS - 2;

/// The `n`-th intention loaded.
fn nth_intention(n: usize) -> Intention {
    match n {
        _ if n < EXACT => intention(
            &format!("svc-{n}"),
            &format!("db-{}", n % DESTINATIONS),
            exact_action(n),
        ),
        _ if n == EXACT => intention("*", &format!("db-{WILDCARD_DENIED}"), IntentionAction::Deny),
        _ => intention("web", "*", IntentionAction::Allow),
    }
}

/// Action of `svc-{n} -> db-{n % 100}`: every tenth denies.
fn exact_action(n: usize) -> IntentionAction {
    if n % 10 == 9 {
        IntentionAction::Deny
    } else {
        IntentionAction::Allow
    }
}

/// Loads the intentions through the leader with `loaders` concurrent writers.
async fn load_intentions(server: Arc<Server>, loaders: usize) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + LOAD_TIMEOUT;
    let writers: Vec<_> = (0..loaders)
        .map(|_| {
            let (server, next) = (server.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= INTENTIONS {
                        return Ok(());
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "loading took over {LOAD_TIMEOUT:?}"
                    );
                    let r = server
                        .write(Command::IntentionUpsert {
                            intention: nth_intention(n),
                            replace: true,
                        })
                        .await
                        .with_context(|| format!("writing intention {n}"))?;
                    if let Some(e) = r.error {
                        anyhow::bail!("intention {n} refused: {e:?}");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.context("loader task")??;
    }
    let count = Count {
        ops: INTENTIONS as u64,
        elapsed: start.elapsed(),
    };
    let stored = server.state.read(|s| s.intention_list().len());
    anyhow::ensure!(
        stored == INTENTIONS,
        "server holds {stored} intentions, expected {INTENTIONS}"
    );
    Ok(Load {
        count,
        writers: loaders,
        view_intentions: Vec::new(),
    })
}

/// A small deterministic generator (xorshift64*), so every run decides the same pairs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// (source, target, expected decision): 70 % exact intentions (a tenth of them denies), 10 %
/// caught by `* -> db-7` deny, 10 % from `web` (allowed by `web -> *`, except to db-7), 10 %
/// matching nothing (default deny).
fn pair_specs() -> Vec<(String, String, bool)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..PAIRS)
        .map(|_| match rng.below(10) {
            0..=6 => {
                let i = rng.below(EXACT);
                let ok = exact_action(i) == IntentionAction::Allow;
                (format!("svc-{i}"), format!("db-{}", i % DESTINATIONS), ok)
            }
            7 => {
                let mut i = rng.below(EXACT);
                if i % DESTINATIONS == WILDCARD_DENIED {
                    i = (i + 1) % EXACT;
                }
                (format!("svc-{i}"), format!("db-{WILDCARD_DENIED}"), false)
            }
            8 => {
                let j = rng.below(DESTINATIONS);
                ("web".to_string(), format!("db-{j}"), j != WILDCARD_DENIED)
            }
            _ => {
                let i = rng.below(EXACT);
                let mut j = rng.below(DESTINATIONS);
                while j == i % DESTINATIONS || j == WILDCARD_DENIED {
                    j = (j + 1) % DESTINATIONS;
                }
                (format!("svc-{i}"), format!("db-{j}"), false)
            }
        })
        .collect()
}

/// Sends `bodies` as authorize requests over `conns` in parallel (one task per connection);
/// returns the connections and the answers in order.
async fn authorize_all(
    conns: Vec<HttpConn>,
    bodies: &[Bytes],
) -> anyhow::Result<(Vec<HttpConn>, Vec<AuthorizeResponse>)> {
    let k = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let mine: Vec<(usize, Bytes)> = bodies
                .iter()
                .enumerate()
                .skip(c)
                .step_by(k)
                .map(|(i, b)| (i, b.clone()))
                .collect();
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(mine.len());
                for (i, body) in mine {
                    let r = conn
                        .request(http::Method::POST, "/v1/agent/connect/authorize", body)
                        .await?;
                    anyhow::ensure!(
                        r.status == 200,
                        "authorize answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                    got.push((i, serde_json::from_slice::<AuthorizeResponse>(&r.body)?));
                }
                Ok((conn, got))
            })
        })
        .collect();
    let mut out: Vec<Option<AuthorizeResponse>> = vec![None; bodies.len()];
    let mut conns = Vec::with_capacity(k);
    for t in tasks {
        let (conn, got) = t.await.context("authorize task")??;
        conns.push(conn);
        for (i, a) in got {
            out[i] = Some(a);
        }
    }
    let answers = out
        .into_iter()
        .map(|a| a.context("missing answer"))
        .collect::<anyhow::Result<_>>()?;
    Ok((conns, answers))
}

/// Warms the agent's cache, builds and checks the pairs, then runs every phase.
async fn measure(
    server: &Arc<Server>,
    agent: &Arc<Agent>,
    agent_http: Option<SocketAddr>,
    clients: usize,
    duration: Duration,
    mut load: Load,
) -> anyhow::Result<Measured> {
    let agent_http = agent_http.context("agent has no HTTP address")?;
    let trust_domain = server.state.read(|s| s.ca.trust_domain.clone());
    anyhow::ensure!(!trust_domain.is_empty(), "no trust domain");
    let specs = pair_specs();
    let body_of = |source: &str, target: &str| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "Target": target,
                "ClientCertURI": format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/{source}"),
            }))
            .expect("JSON value serializes"),
        )
    };

    // Untimed: one request per destination fills the agent's cache (one entry each), then every
    // pair once over HTTP, checked against the expected answer.
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(HttpConn::connect(agent_http).await?);
    }
    let warm: Vec<Bytes> = (0..DESTINATIONS)
        .map(|j| body_of("warm-up", &format!("db-{j}")))
        .collect();
    let (conns, _) = tokio::time::timeout(WARM_TIMEOUT, authorize_all(conns, &warm))
        .await
        .context("agent did not fill its intention cache in time")??;
    let bodies: Vec<Bytes> = specs.iter().map(|(s, t, _)| body_of(s, t)).collect();
    let (mut conns, answers) = tokio::time::timeout(WARM_TIMEOUT, authorize_all(conns, &bodies))
        .await
        .context("checking every pair over HTTP took too long")??;
    for ((s, t, want), got) in specs.iter().zip(&answers) {
        anyhow::ensure!(
            got.authorized == *want,
            "HTTP authorize {s} -> {t}: got {got:?}, expected authorized = {want}"
        );
    }

    // The views the agent decides with, straight from its cache.
    let dc = agent.config.datacenter.clone();
    let mut views: HashMap<String, Arc<IntentionView>> = HashMap::new();
    for j in 0..DESTINATIONS {
        let target = format!("db-{j}");
        let c = agent
            .cache
            .get(&CacheKey::intentions(&target, &dc), 0, Duration::ZERO)
            .await
            .with_context(|| format!("cached intentions of {target}"))?;
        let Value::Intentions(view) = c.value else {
            anyhow::bail!("cache entry of {target} holds no intentions");
        };
        load.view_intentions.push(view.set.len());
        views.insert(target, view);
    }
    let pairs: Arc<Vec<Pair>> = Arc::new(
        specs
            .iter()
            .zip(bodies)
            .map(|((s, t, want), body)| Pair {
                target: t.clone(),
                uri: format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/{s}"),
                key: (s.clone(), t.clone()),
                expected: *want,
                view: views[t].clone(),
                body,
            })
            .collect(),
    );
    let all = Arc::new(IntentionView {
        set: IntentionSet::new(
            server.state.read(|s| s.intention_list()),
            server.state.read(|s| s.default_policy),
        ),
        trust_domain: trust_domain.clone(),
        raw: Bytes::new(),
    });
    let lookup: Arc<HashMap<(String, String), bool>> =
        Arc::new(pairs.iter().map(|p| (p.key.clone(), p.expected)).collect());
    for p in pairs.iter() {
        for (name, view) in [("cached view", &p.view), ("all-intentions view", &all)] {
            let d = decide(view, &p.target, &p.uri);
            anyhow::ensure!(
                d.authorized == p.expected,
                "decide ({name}) {} -> {}: got {d:?}, expected authorized = {}",
                p.key.0,
                p.target,
                p.expected
            );
        }
    }

    // In-process phases, on a blocking thread; each pass decides every pair once.
    let in_process = {
        let (pairs, all, lookup) = (pairs.clone(), all.clone(), lookup.clone());
        tokio::task::spawn_blocking(move || in_process_phases(&pairs, &all, &lookup, duration))
            .await
            .context("in-process phases")?
    };

    // HTTP phases: 1 client, then `clients`.
    let mut http = Vec::new();
    let mut rounds = vec![1];
    if clients > 1 {
        rounds.push(clients);
    }
    for k in rounds {
        let mut round: Vec<HttpConn> = conns.drain(..k).collect();
        let auth;
        let own;
        (round, auth) = http_phase(round, &pairs, true, duration).await?;
        (round, own) = http_phase(round, &pairs, false, duration).await?;
        http.push((auth, own));
        conns.extend(round);
    }
    drop(conns);
    Ok(Measured {
        load,
        in_process,
        http,
    })
}

/// `decide` on the agent's views, `decide` on one view of everything, the HashMap floor.
fn in_process_phases(
    pairs: &[Pair],
    all: &IntentionView,
    lookup: &HashMap<(String, String), bool>,
    duration: Duration,
) -> Vec<Phase> {
    let n = pairs.len() as u64;
    let timed = |name: &str, mut pass: Box<dyn FnMut() + '_>| {
        let c = run_for(duration, MAX_PASSES, |_| {
            pass();
            Ok::<_, ()>(())
        })
        .unwrap_or_default();
        Phase {
            name: name.to_string(),
            clients: 1,
            count: Count {
                ops: c.ops * n,
                elapsed: c.elapsed,
            },
            errors: 0,
            first_error: None,
        }
    };
    vec![
        timed(
            "in-process decide(), agent's cached view per target",
            Box::new(|| {
                for p in pairs {
                    black_box(decide(black_box(&p.view), &p.target, &p.uri));
                }
            }),
        ),
        timed(
            "in-process decide(), one view of all 10,000",
            Box::new(|| {
                for p in pairs {
                    black_box(decide(black_box(all), &p.target, &p.uri));
                }
            }),
        ),
        timed(
            "baseline: HashMap<(String, String), bool> look-up",
            Box::new(|| {
                for p in pairs {
                    black_box(black_box(lookup).get(black_box(&p.key)));
                }
            }),
        ),
    ]
}

/// `conns.len()` clients (one task each) sending requests back to back for `duration`:
/// authorize requests over the pairs in turn, or `GET /v1/agent/self` (the baseline). Returns
/// the connections that are still usable.
async fn http_phase(
    conns: Vec<HttpConn>,
    pairs: &Arc<Vec<Pair>>,
    authorize: bool,
    duration: Duration,
) -> anyhow::Result<(Vec<HttpConn>, Phase)> {
    let k = conns.len();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let pairs = pairs.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
                let mut n = c * pairs.len() / k;
                let mut sent = 0;
                let mut broken = false;
                while sent < MAX_REQUESTS_PER_CLIENT && Instant::now() < deadline {
                    let r = if authorize {
                        let p = &pairs[n % pairs.len()];
                        n += 1;
                        conn.request(
                            http::Method::POST,
                            "/v1/agent/connect/authorize",
                            p.body.clone(),
                        )
                        .await
                    } else {
                        conn.get("/v1/agent/self").await
                    };
                    sent += 1;
                    match r {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("status {}", r.status));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                            // A broken connection stays broken: stop this client.
                            broken = true;
                            break;
                        }
                    }
                }
                (conn, broken, ok, errors, first_error)
            })
        })
        .collect();
    let mut phase = Phase {
        name: if authorize {
            "HTTP POST /v1/agent/connect/authorize".to_string()
        } else {
            "baseline: HTTP GET /v1/agent/self".to_string()
        },
        clients: k,
        ..Phase::default()
    };
    let mut conns = Vec::with_capacity(k);
    for t in tasks {
        let (conn, broken, ok, errors, first) = t.await.context("HTTP client task")?;
        if !broken {
            conns.push(conn);
        }
        phase.count.ops += ok;
        phase.errors += errors;
        if phase.first_error.is_none() {
            phase.first_error = first;
        }
    }
    phase.count.elapsed = start.elapsed();
    anyhow::ensure!(
        conns.len() == k,
        "{} of {k} HTTP connections broke: {}",
        k - conns.len(),
        phase.first_error.as_deref().unwrap_or("-")
    );
    Ok((conns, phase))
}
