//! `agent_memory`: process memory a client agent adds per cached service, against the memory
//! of the cached data itself held in a plain `HashMap`, measured in the same run.
//!
//! Acceptance figure: "agent memory per cached service (target below 4 KB)".
//!
//! Setup: one in-process server bootstrapping alone (fast election) holds `--services`
//! connect-native services `svc-{i}` (one instance each, on its own node, one `Register` write
//! each), plus one `warm-up` service; then a client agent starts in the same process. With
//! every server-side write done and the agent's watch stream already running (it caches
//! `warm-up` first), the resident set size is read; the agent is then made to cache health for
//! the first half of the services (`GET /v1/health/connect/svc-{i}?cached`, once each, over
//! keep-alive connections, until `agent.cache.len()` grew by that many), RSS read again, the
//! same for the second half, RSS read again.
//!
//! Reported: (RSS growth) ÷ services for each half and overall; the marginal cost of the second
//! half (its growth ÷ its count) excludes any fixed cost the first cached entries pay. The
//! baseline repeats the measurement for a `HashMap<String, Vec<u8>>` holding copies of the same
//! JSON bodies (read back from the agent's cache), so the ratio says how many times the data
//! itself an agent needs per entry.
//!
//! RSS (`VmRSS`) counts pages, not allocations: the allocator may reuse memory freed earlier
//! (the growth then looks smaller) or keep freed memory mapped (larger). Memory freed by the
//! server side while it renders the answers is one source of the latter; taking the first
//! reading after the server has done all its writes keeps the rest out.
//!
//! Everything listens on 127.0.0.1 with OS-chosen ports; data lives in one temporary directory
//! removed at exit; the agent and the server are shut down before the figures are printed; every
//! loop is bounded by a count and a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, HttpConn, SHUTDOWN_TIMEOUT, Table, bytes_text, load_average, load_average_json,
    load_average_text, ratio, rss_bytes, shutdown_agent, shutdown_server, start_client_agent,
    start_single_server,
};
use mesh_control::agent::Agent;
use mesh_control::agent::cache::{CacheKey, Value};
use mesh_control::fsm::Command;
use mesh_control::model::{Node, ServiceConnect, ServiceInstance};
use mesh_control::server::Server;

/// How long the server may take to lead with a CA, and the agent to connect and sync.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The acceptance target per cached service.
const TARGET_BYTES: f64 = 4096.0;
/// Concurrent writers registering the services, and how long that may take.
const REGISTER_WRITERS: usize = 32;
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);
/// Keep-alive connections populating the cache, and how long one half may take.
const CLIENTS: usize = 16;
const POPULATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before each RSS reading, so requests in flight finish and their buffers are released.
const SETTLE: Duration = Duration::from_millis(300);

/// Process memory per cached service on a client agent.
#[derive(Debug, Parser)]
#[command(name = "agent_memory")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Services cached in total, in two equal halves (even, 2..=100,000).
    #[arg(long, default_value_t = 2000)]
    services: usize,
}

/// RSS readings around one measured step.
#[derive(Debug, Clone, Copy)]
struct Step {
    entries: usize,
    before: u64,
    after: u64,
}

impl Step {
    fn growth(&self) -> f64 {
        self.after as f64 - self.before as f64
    }

    fn per_entry(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            self.growth() / self.entries as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "entries": self.entries,
            "rss_before": self.before,
            "rss_after": self.after,
            "growth_bytes": self.growth(),
            "bytes_per_entry": self.per_entry(),
        })
    }
}

/// Two halves measured one after the other, and the whole.
#[derive(Debug, Clone, Copy)]
struct Halves {
    first: Step,
    second: Step,
}

impl Halves {
    fn total(&self) -> Step {
        Step {
            entries: self.first.entries + self.second.entries,
            before: self.first.before,
            after: self.second.after,
        }
    }
}

struct Measured {
    agent: Halves,
    baseline: Halves,
    mean_body: f64,
    register_elapsed: Duration,
    rss_start: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (2..=100_000).contains(&args.services) && args.services.is_multiple_of(2),
        "--services must be even and in 2..=100000"
    );
    anyhow::ensure!(rss_bytes().is_some(), "no VmRSS in /proc/self/status");
    let load_start = load_average();
    let dir = args.common.tempdir("mesh-bench-memory-")?;

    let server = start_single_server("s1", &dir.path().join("s1"), READY_TIMEOUT).await?;
    let measured = measure(&server.server, server.rpc_addr, args.services).await;
    shutdown_server(server, SHUTDOWN_TIMEOUT).await;
    drop(dir);
    let m = measured?;
    let load_end = load_average();

    let agent_total = m.agent.total();
    let base_total = m.baseline.total();
    let marginal = m.agent.second.per_entry();
    let marginal_base = m.baseline.second.per_entry();
    let ratio_total = ratio(agent_total.per_entry(), base_total.per_entry());
    let ratio_marginal = ratio(marginal, marginal_base);
    let met = agent_total.per_entry() < TARGET_BYTES && marginal < TARGET_BYTES;

    if args.common.json {
        let json = serde_json::json!({
            "bench": "agent_memory",
            "services": args.services,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "register_elapsed_s": m.register_elapsed.as_secs_f64(),
            "rss_at_start": m.rss_start,
            "mean_body_bytes": m.mean_body,
            "agent": {
                "first_half": m.agent.first.json(),
                "second_half": m.agent.second.json(),
                "total": agent_total.json(),
                "marginal_bytes_per_entry": marginal,
            },
            "baseline_hashmap": {
                "first_half": m.baseline.first.json(),
                "second_half": m.baseline.second.json(),
                "total": base_total.json(),
                "marginal_bytes_per_entry": marginal_base,
            },
            "target_bytes": TARGET_BYTES,
            "ratio_total_per_entry_to_baseline": ratio_total,
            "ratio_marginal_to_baseline": ratio_marginal,
            "ratio_total_per_entry_to_target": agent_total.per_entry() / TARGET_BYTES,
            "ratio_marginal_to_target": marginal / TARGET_BYTES,
            "target_met": met,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }

    let half = args.services / 2;
    println!(
        "agent_memory: 1 server + 1 client agent in one process, {} services cached in two \
         halves of {half}; mean cached JSON body {:.0} B",
        args.services, m.mean_body
    );
    println!("start {}", load_average_text(load_start));
    println!(
        "registered {} services in {:.2} s; RSS at start {}",
        args.services + 1,
        m.register_elapsed.as_secs_f64(),
        bytes_text(m.rss_start as f64)
    );
    let mut table = Table::new([
        "step",
        "entries",
        "RSS before",
        "RSS after",
        "growth",
        "per entry",
    ]);
    let mut row = |name: &str, s: &Step| {
        table.row([
            name.to_string(),
            s.entries.to_string(),
            bytes_text(s.before as f64),
            bytes_text(s.after as f64),
            bytes_text(s.growth()),
            bytes_text(s.per_entry()),
        ]);
    };
    row(&format!("agent cache: svc-0..{}", half - 1), &m.agent.first);
    row(
        &format!("agent cache: svc-{half}..{} (marginal)", args.services - 1),
        &m.agent.second,
    );
    row("agent cache: total", &agent_total);
    row(
        "baseline HashMap<String, Vec<u8>>: first half",
        &m.baseline.first,
    );
    row(
        "baseline HashMap<String, Vec<u8>>: second half (marginal)",
        &m.baseline.second,
    );
    row("baseline HashMap<String, Vec<u8>>: total", &base_total);
    print!("{}", table.render());
    println!("end   {}", load_average_text(load_end));
    println!(
        "per cached service: {} at {} services, {} at {half}, marginal {} (target < {}) -> {}",
        bytes_text(agent_total.per_entry()),
        args.services,
        bytes_text(m.agent.first.per_entry()),
        bytes_text(marginal),
        bytes_text(TARGET_BYTES),
        if met { "target met" } else { "TARGET MISSED" }
    );
    println!(
        "ratio = agent bytes per entry / HashMap bytes per entry = {ratio_total:.2} (total), \
         {ratio_marginal:.2} (marginal)"
    );
    Ok(())
}

/// One connect-native instance of `name` on its own node.
fn register(name: &str) -> Command {
    let node = format!("node-{name}");
    Command::Register {
        node: Node {
            id: String::new(),
            node: node.clone(),
            address: "127.0.0.1".to_string(),
            datacenter: "dc1".to_string(),
            meta: Default::default(),
            create_index: 0,
            modify_index: 0,
        },
        service: Some(ServiceInstance {
            id: format!("{name}-1"),
            service: name.to_string(),
            node,
            kind: String::new(),
            address: "127.0.0.1".to_string(),
            port: 8080,
            tags: Vec::new(),
            meta: Default::default(),
            proxy: None,
            connect: ServiceConnect { native: true },
            create_index: 0,
            modify_index: 0,
        }),
        checks: Vec::new(),
    }
}

/// Registers `warm-up` and `svc-0` .. `svc-{services - 1}` with concurrent writers.
async fn register_all(server: &Arc<Server>, services: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let deadline = start + REGISTER_TIMEOUT;
    server
        .write(register("warm-up"))
        .await
        .context("registering warm-up")?;
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..REGISTER_WRITERS)
        .map(|_| {
            let (server, next) = (server.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= services {
                        return Ok(());
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "registering took over {REGISTER_TIMEOUT:?}"
                    );
                    let r = server
                        .write(register(&format!("svc-{i}")))
                        .await
                        .with_context(|| format!("registering svc-{i}"))?;
                    if let Some(e) = r.error {
                        anyhow::bail!("svc-{i} refused: {e:?}");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.context("register task")??;
    }
    Ok(start.elapsed())
}

/// RSS after letting in-flight work settle.
async fn settled_rss() -> anyhow::Result<u64> {
    tokio::time::sleep(SETTLE).await;
    rss_bytes().context("reading VmRSS")
}

/// Registers, starts the agent, measures both halves, then the baseline; shuts the agent down.
async fn measure(
    server: &Arc<Server>,
    server_rpc: SocketAddr,
    services: usize,
) -> anyhow::Result<Measured> {
    let rss_start = rss_bytes().context("reading VmRSS")?;
    let register_elapsed = register_all(server, services).await?;
    let agent = start_client_agent("bench-agent", server_rpc, READY_TIMEOUT).await?;
    let r = measure_agent(&agent.agent, agent.http_addr, services).await;
    // The baseline runs with the agent (and its cache) still alive, so it cannot reuse memory
    // the agent would free at shutdown.
    let r = match r {
        Ok((halves, bodies, conns)) => {
            let baseline = measure_baseline(&bodies).await;
            drop(conns);
            baseline.map(|(b, mean)| (halves, b, mean))
        }
        Err(e) => Err(e),
    };
    shutdown_agent(agent, SHUTDOWN_TIMEOUT).await;
    let (agent_halves, baseline, mean_body) = r?;
    Ok(Measured {
        agent: agent_halves,
        baseline,
        mean_body,
        register_elapsed,
        rss_start,
    })
}

/// `GET /v1/health/connect/<name>?cached` for every name over `conns` in parallel (one task
/// per connection); returns the connections.
async fn fetch_cached(conns: Vec<HttpConn>, names: &[String]) -> anyhow::Result<Vec<HttpConn>> {
    let k = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let mine: Vec<String> = names.iter().skip(c).step_by(k).cloned().collect();
            tokio::spawn(async move {
                for name in mine {
                    let r = conn
                        .get(&format!("/v1/health/connect/{name}?cached"))
                        .await?;
                    anyhow::ensure!(
                        r.status == 200 && r.body.len() > 2,
                        "cached health of {name} answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                Ok(conn)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(k);
    for t in tasks {
        out.push(t.await.context("fetch task")??);
    }
    Ok(out)
}

/// Waits until the agent's cache holds `want` entries.
async fn wait_len(agent: &Agent, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + POPULATE_TIMEOUT;
    while agent.cache.len() < want {
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent cache holds {} entries, expected {want}",
            agent.cache.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

type AgentResult = (Halves, Vec<(String, Bytes)>, Vec<HttpConn>);

/// The two measured halves of the agent's cache; returns the cached bodies for the baseline.
async fn measure_agent(
    agent: &Arc<Agent>,
    http_addr: Option<SocketAddr>,
    services: usize,
) -> anyhow::Result<AgentResult> {
    let addr = http_addr.context("agent has no HTTP address")?;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = HttpConn::connect(addr).await?;
        anyhow::ensure!(c.get("/v1/agent/self").await?.status == 200, "agent/self");
        conns.push(c);
    }
    // The fixed cost (watch stream, first entry) is paid before the first reading.
    let conns = fetch_cached(conns, &["warm-up".to_string()]).await?;
    let base_len = agent.cache.len();
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i}")).collect();
    let half = services / 2;
    let mut steps = Vec::new();
    let mut conns = Some(conns);
    for (n, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let before = settled_rss().await?;
        let c = conns.take().context("connections lost")?;
        conns = Some(
            tokio::time::timeout(POPULATE_TIMEOUT, fetch_cached(c, part))
                .await
                .context("populating the cache took too long")??,
        );
        wait_len(agent, base_len + half * (n + 1)).await?;
        let after = settled_rss().await?;
        steps.push(Step {
            entries: part.len(),
            before,
            after,
        });
    }
    anyhow::ensure!(
        agent.cache.len() == base_len + services,
        "agent cache holds {} entries, expected {}",
        agent.cache.len(),
        base_len + services
    );
    let dc = agent.config.datacenter.clone();
    let mut bodies = Vec::with_capacity(services);
    for name in names {
        let c = agent
            .cache
            .get(&CacheKey::health(&name, false, &dc), 0, Duration::ZERO)
            .await
            .with_context(|| format!("cached health of {name}"))?;
        let Value::Health(body) = c.value else {
            anyhow::bail!("cache entry of {name} holds no health");
        };
        bodies.push((name, body.raw.clone()));
    }
    Ok((
        Halves {
            first: steps[0],
            second: steps[1],
        },
        bodies,
        conns.unwrap_or_default(),
    ))
}

/// The same two halves for a `HashMap<String, Vec<u8>>` of copies of the cached bodies.
async fn measure_baseline(bodies: &[(String, Bytes)]) -> anyhow::Result<(Halves, f64)> {
    let half = bodies.len() / 2;
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    let mut steps = Vec::new();
    for part in [&bodies[..half], &bodies[half..]] {
        let before = settled_rss().await?;
        for (name, body) in part {
            map.insert(name.clone(), body.to_vec());
        }
        let after = settled_rss().await?;
        steps.push(Step {
            entries: part.len(),
            before,
            after,
        });
    }
    let mean = map.values().map(Vec::len).sum::<usize>() as f64 / map.len().max(1) as f64;
    std::hint::black_box(&map);
    drop(map);
    Ok((
        Halves {
            first: steps[0],
            second: steps[1],
        },
        mean,
    ))
}
