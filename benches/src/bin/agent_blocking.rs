//! `agent_blocking`: how soon a blocking query on a client agent's cache wakes after the change
//! that concerns it, against the round trip of that change's write measured in the same run;
//! and whether a query whose result did not change returns at its deadline.
//!
//! Acceptance figure: "a blocking query wakes within 50 ms of the change that concerns it
//! (median over 100 changes), and a query whose result did not change returns at its deadline".
//!
//! Setup: one in-process server bootstrapping alone (fast election) and a separate in-process
//! client agent (its own HTTP API) whose one gRPC watch stream keeps its cache fresh. Per round
//! a keep-alive client sends `GET /v1/health/connect/web?cached&index=<last X-Consul-Index>&wait=30s`
//! to the agent, lets it park for a fixed, untimed moment, then changes `web` (re-registers its
//! one connect-native instance with a new port through the server's `PUT /v1/catalog/register`)
//! and records when the write is acknowledged and when the blocking response arrives.
//!
//! Everything listens on 127.0.0.1 with OS-chosen ports; data lives in one temporary directory
//! removed at exit; the agent and the server are shut down before the figures are printed; every
//! loop is bounded by a count and a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use mesh_benches::{
    CommonArgs, HttpConn, Samples, Table, ensure_in, load_average, load_average_json,
    load_average_text, ratio, signed_ms_between, with_server_and_agent,
};

/// How long the server may take to lead with a CA, and the agent to connect and sync.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The acceptance target for the median wake latency.
const TARGET: Duration = Duration::from_millis(50);
/// Untimed pause between sending a blocking query and making the change, so the query is
/// parked in the agent (a loopback request reaches its handler in well under a millisecond).
const PARK_DELAY: Duration = Duration::from_millis(20);
/// `wait` of the blocking queries that a change should wake.
const CHANGE_WAIT: &str = "30s";
/// Longest a round may take (the query's 30 s wait plus its jitter of at most wait/16, plus slack).
const ROUND_TIMEOUT: Duration = Duration::from_secs(35);
/// Cap on the change phases, whatever `--changes` says.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Blocking queries with no change, and their `wait`.
const DEADLINE_QUERIES: usize = 5;
const DEADLINE_WAIT: Duration = Duration::from_millis(500);
/// Allowed lateness of a deadline return beyond `wait + wait/16` (the most jitter adds).
const DEADLINE_SLACK: Duration = Duration::from_millis(100);
/// The service whose health the queries follow.
const SERVICE: &str = "web";
/// Its one instance, re-registered with port `BASE_PORT + round` for each change.
const INSTANCE_ID: &str = "web-1";
const BASE_PORT: u16 = 20_000;

/// Blocking-query wake latency on a client agent, against the write round trip.
#[derive(Debug, Parser)]
#[command(name = "agent_blocking")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Number of changes (rounds) to time, and of writes in the baseline (at most 10,000; the
    /// run stops earlier if a phase reaches 60 s).
    #[arg(long, default_value_t = 100)]
    changes: usize,
}

/// What the change rounds measured.
#[derive(Debug, Default)]
struct Rounds {
    /// Blocking response arrival minus the write's acknowledgement (negative: woke first).
    wake_after_ack: Samples,
    /// Blocking response arrival minus the start of the write request.
    wake_after_start: Samples,
    /// The write's round trip while a query was parked.
    write_rtt: Samples,
    /// Queries that returned before their change was made (not parked, or woken by something
    /// else).
    early: u64,
    /// Queries that woke without showing the change.
    stale: u64,
    first_problem: Option<String>,
    elapsed: Duration,
}

/// One deadline query.
#[derive(Debug)]
struct DeadlineQuery {
    elapsed: Duration,
    index_before: u64,
    index_after: Option<u64>,
}

impl DeadlineQuery {
    fn upper_bound() -> Duration {
        DEADLINE_WAIT + DEADLINE_WAIT / 16 + DEADLINE_SLACK
    }

    fn ok(&self) -> bool {
        self.index_after == Some(self.index_before)
            && self.elapsed >= DEADLINE_WAIT
            && self.elapsed <= Self::upper_bound()
    }
}

/// Everything one run measured.
struct Measured {
    baseline: Samples,
    rounds: Rounds,
    deadline: Vec<DeadlineQuery>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_in("changes", args.changes, 1..=10_000)?;
    let load_start = load_average();
    let m = with_server_and_agent(
        &args.common,
        "mesh-bench-blocking-",
        READY_TIMEOUT,
        |server, agent| measure(server, agent, args.changes),
    )
    .await?;
    let load_end = load_average();

    let median_wake = m.rounds.wake_after_ack.median();
    let median_wake_start = m.rounds.wake_after_start.median();
    let target_ms = TARGET.as_secs_f64() * 1e3;
    let ratio_target = median_wake / target_ms;
    let ratio_target_start = median_wake_start / target_ms;
    let ratio_baseline = ratio(median_wake_start, m.baseline.median());
    let wake_ok = m.rounds.wake_after_ack.0.len() == args.changes
        && m.rounds.early == 0
        && m.rounds.stale == 0
        && median_wake <= target_ms;
    let deadline_ok = m.deadline.len() == DEADLINE_QUERIES && m.deadline.iter().all(|d| d.ok());

    if args.common.json {
        let json = serde_json::json!({
            "bench": "agent_blocking",
            "changes": args.changes,
            "park_delay_ms": PARK_DELAY.as_secs_f64() * 1e3,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "wake_after_write_ack": m.rounds.wake_after_ack.json(),
            "wake_after_change_start": m.rounds.wake_after_start.json(),
            "write_rtt_during_rounds": m.rounds.write_rtt.json(),
            "baseline_write_rtt_alone": m.baseline.json(),
            "early_returns": m.rounds.early,
            "stale_wakes": m.rounds.stale,
            "first_problem": m.rounds.first_problem,
            "rounds_elapsed_s": m.rounds.elapsed.as_secs_f64(),
            "target_ms": target_ms,
            "ratio_median_wake_to_target": ratio_target,
            "ratio_median_wake_from_start_to_target": ratio_target_start,
            "ratio_median_wake_from_start_to_baseline": ratio_baseline,
            "wake_target_met": wake_ok,
            "deadline_queries": m.deadline.iter().map(|d| serde_json::json!({
                "wait_ms": DEADLINE_WAIT.as_secs_f64() * 1e3,
                "elapsed_ms": d.elapsed.as_secs_f64() * 1e3,
                "upper_bound_ms": DeadlineQuery::upper_bound().as_secs_f64() * 1e3,
                "index_before": d.index_before,
                "index_after": d.index_after,
                "ok": d.ok(),
            })).collect::<Vec<_>>(),
            "deadline_target_met": deadline_ok,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }

    println!(
        "agent_blocking: 1 server + 1 client agent on 127.0.0.1, {} changes to {SERVICE:?}, \
         queries parked {} ms before each change",
        args.changes,
        PARK_DELAY.as_millis()
    );
    println!("start {}", load_average_text(load_start));
    let mut table = Table::new(["latency", "n", "min", "median", "p90", "p99", "max"]);
    table.row(
        m.rounds
            .wake_after_ack
            .row("wake after write ACK (negative: woke first)"),
    );
    table.row(m.rounds.wake_after_start.row("wake after change start"));
    table.row(m.rounds.write_rtt.row("write round trip, query parked"));
    table.row(m.baseline.row("baseline: write round trip alone"));
    print!("{}", table.render());
    if m.rounds.early > 0 || m.rounds.stale > 0 {
        println!(
            "problems: {} queries returned before their change, {} woke without it; first: {}",
            m.rounds.early,
            m.rounds.stale,
            m.rounds.first_problem.as_deref().unwrap_or("-")
        );
    }
    let mut dl = Table::new(["deadline query", "wait", "elapsed", "bound", "index", "ok"]);
    for (i, d) in m.deadline.iter().enumerate() {
        dl.row([
            format!("#{}", i + 1),
            format!("{} ms", DEADLINE_WAIT.as_millis()),
            format!("{:.3} ms", d.elapsed.as_secs_f64() * 1e3),
            format!(
                "[{}, {:.2}] ms",
                DEADLINE_WAIT.as_millis(),
                DeadlineQuery::upper_bound().as_secs_f64() * 1e3
            ),
            match d.index_after {
                Some(a) if a == d.index_before => format!("{a} (same)"),
                Some(a) => format!("{} -> {a}", d.index_before),
                None => "none".to_string(),
            },
            if d.ok() { "yes" } else { "NO" }.to_string(),
        ]);
    }
    print!("{}", dl.render());
    println!("end   {}", load_average_text(load_end));
    println!(
        "ratio = median wake after ACK / {target_ms:.0} ms target = {ratio_target:.3} \
         (from change start: {ratio_target_start:.3}) -> {}",
        if wake_ok {
            "target met"
        } else {
            "TARGET MISSED"
        }
    );
    println!(
        "ratio = median wake after change start / median write round trip alone = \
         {ratio_baseline:.3}"
    );
    println!(
        "deadline: {} -> {}",
        if deadline_ok {
            "every unchanged query returned at its deadline with the same index"
        } else {
            "some unchanged query did not return at its deadline with the same index"
        },
        if deadline_ok {
            "target met"
        } else {
            "TARGET MISSED"
        }
    );
    Ok(())
}

/// `PUT /v1/catalog/register` body: `web`'s one connect-native instance on `port`.
fn register_body(port: u16) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "Node": "bench-web-node",
            "Address": "127.0.0.1",
            "Service": {
                "ID": INSTANCE_ID,
                "Service": SERVICE,
                "Port": port,
                "Connect": { "Native": true },
            },
        }))
        .expect("JSON value serializes"),
    )
}

/// Registers `web` on `port` through the server's HTTP API; returns when acknowledged.
async fn register(server: &mut HttpConn, port: u16) -> anyhow::Result<()> {
    let r = server
        .request(
            http::Method::PUT,
            "/v1/catalog/register",
            register_body(port),
        )
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "catalog register answered {}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    Ok(())
}

/// Whether a health body shows the instance on `port`.
fn shows_port(body: &[u8], port: u16) -> bool {
    let needle = format!("\"Port\":{port}");
    body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Baseline, change rounds, deadline queries.
async fn measure(
    server_http: SocketAddr,
    agent_http: SocketAddr,
    changes: usize,
) -> anyhow::Result<Measured> {
    let mut server = HttpConn::connect(server_http).await?;
    let mut agent = HttpConn::connect(agent_http).await?;
    let health = format!("/v1/health/connect/{SERVICE}?cached");

    // Baseline: the same writes with nobody waiting, each after the same idle pause as in the
    // rounds (a process that just slept competes differently for a busy CPU than one that
    // writes back to back). Ports below BASE_PORT so that the rounds' ports are all new.
    register(&mut server, BASE_PORT - 1).await?;
    let mut baseline = Samples::default();
    let phase_end = Instant::now() + PHASE_LIMIT;
    for i in 0..changes {
        if Instant::now() >= phase_end {
            break;
        }
        tokio::time::sleep(PARK_DELAY).await;
        let t = Instant::now();
        register(&mut server, BASE_PORT - 2 - (i % 2) as u16).await?;
        baseline.0.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // The first (non-blocking) read creates the cache entry and gives the starting index.
    register(&mut server, BASE_PORT).await?;
    let first = agent.get(&health).await?;
    anyhow::ensure!(
        first.status == 200 && shows_port(&first.body, BASE_PORT),
        "first cached read answered {}: {}",
        first.status,
        String::from_utf8_lossy(&first.body)
    );
    let mut index = first.index.context("no X-Consul-Index on cached read")?;

    let mut rounds = Rounds::default();
    let start = Instant::now();
    let phase_end = start + PHASE_LIMIT;
    let mut conn = Some(agent);
    for round in 1..=changes {
        if Instant::now() >= phase_end {
            break;
        }
        let port = BASE_PORT + round as u16;
        let path = format!("{health}&index={index}&wait={CHANGE_WAIT}");
        let mut c = conn.take().context("agent connection lost")?;
        let query = tokio::spawn(async move {
            let r = c.get(&path).await;
            (c, r, Instant::now())
        });
        tokio::time::sleep(PARK_DELAY).await;
        let early = query.is_finished();
        let change_start = Instant::now();
        register(&mut server, port).await?;
        let ack = Instant::now();
        let (c, reply, woke) = tokio::time::timeout(ROUND_TIMEOUT, query)
            .await
            .context("blocking query did not return within the round timeout")?
            .context("blocking query task")?;
        conn = Some(c);
        let reply = reply?;
        anyhow::ensure!(
            reply.status == 200,
            "blocking query answered {}",
            reply.status
        );
        let new_index = reply.index.context("no X-Consul-Index on blocking read")?;
        if early || woke < change_start {
            rounds.early += 1;
            rounds
                .first_problem
                .get_or_insert_with(|| format!("round {round}: returned before the change"));
        } else if new_index <= index || !shows_port(&reply.body, port) {
            rounds.stale += 1;
            rounds.first_problem.get_or_insert_with(|| {
                format!("round {round}: woke at index {new_index} without port {port}")
            });
        } else {
            rounds.wake_after_ack.0.push(signed_ms_between(ack, woke));
            rounds
                .wake_after_start
                .0
                .push(signed_ms_between(change_start, woke));
            rounds
                .write_rtt
                .0
                .push(signed_ms_between(change_start, ack));
        }
        index = new_index;
        if !shows_port(&reply.body, port) {
            // Catch up so the next round starts from the state that includes this change.
            let r = conn
                .as_mut()
                .context("agent connection lost")?
                .get(&health)
                .await?;
            index = r.index.unwrap_or(index);
        }
    }
    rounds.elapsed = start.elapsed();

    // Deadline: nothing changes, so each query must return after its wait, with the same index.
    let agent = conn.as_mut().context("agent connection lost")?;
    let mut deadline = Vec::new();
    for _ in 0..DEADLINE_QUERIES {
        let path = format!(
            "{health}&index={index}&wait={}ms",
            DEADLINE_WAIT.as_millis()
        );
        let t = Instant::now();
        let r = tokio::time::timeout(ROUND_TIMEOUT, agent.get(&path))
            .await
            .context("deadline query did not return")??;
        let elapsed = t.elapsed();
        anyhow::ensure!(r.status == 200, "deadline query answered {}", r.status);
        deadline.push(DeadlineQuery {
            elapsed,
            index_before: index,
            index_after: r.index,
        });
        if let Some(i) = r.index {
            index = i;
        }
    }
    Ok(Measured {
        baseline,
        rounds,
        deadline,
    })
}
