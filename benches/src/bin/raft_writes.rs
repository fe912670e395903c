//! `raft_writes`: committed intention writes per second on a 3-server loopback cluster, through
//! the leader and through a follower (which forwards to the leader), against the raw durable
//! commit rate of the storage engine on the same disk, measured in the same run.
//!
//! Why: every catalog, intention and CA change is a Raft write, fsynced on a majority before it
//! is acknowledged, so the write path bounds how fast a cluster absorbs registrations. The
//! baseline (one redb insert + fsync'd commit at a time, from a single writer) is what the disk
//! allows without batching; the ratio shows how much Raft's batching of concurrent proposals
//! gains (or the replication and apply path loses) relative to it, independent of the disk.
//!
//! The cluster runs twice in the same run: with a plaintext RPC port, then with mutual TLS on
//! it (issue 13: every Raft append, vote and forwarded write then crosses a TLS connection
//! verified as `server.dc1.mesh`); `tls_ratio` is TLS writes/s over plaintext writes/s.
//!
//! Everything listens on 127.0.0.1 with OS-chosen ports; data lives in one temporary directory
//! removed at exit; every server is shut down before the figures are printed; every loop is
//! bounded by a deadline and a count.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mesh_benches::{
    CommonArgs, Count, Table, ensure_in, load_average, load_average_json, load_average_text, ms,
    percentile, rate, ratio, run_for,
};
use mesh_control::fsm::Command;
use mesh_control::server::{Server, ServerConfig, ServerHandle};
use mesh_control::tls::TlsFiles;
use mesh_tests::inproc::intention_cmd;

/// How long the cluster may take to elect a leader, seat three voters and create its CA.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on writes per writer and phase, whatever the duration.
const MAX_WRITES_PER_WRITER: u64 = 1_000_000;
/// Upper bound on baseline commits, whatever the duration.
const MAX_BASELINE_COMMITS: u64 = 10_000_000;
/// Size of the value the baseline commits (about one serialized intention log entry).
const BASELINE_VALUE_LEN: usize = 300;
/// Pause after a failed write, so a broken cluster does not turn a writer into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

const BASELINE_TABLE: redb::TableDefinition<u64, &[u8]> =
    redb::TableDefinition::new("bench_baseline");

/// Committed intention writes per second on a 3-server loopback cluster.
#[derive(Debug, Parser)]
#[command(name = "raft_writes")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Concurrent writers in each cluster phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// What one cluster phase measured.
#[derive(Debug, Default)]
struct WritePhase {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

impl WritePhase {
    fn per_sec(&self) -> f64 {
        Count {
            ops: self.ok,
            elapsed: self.elapsed,
        }
        .per_sec()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.common.duration()?;
    ensure_in("concurrency", args.concurrency, 1..=1024)?;
    let load_start = load_average();
    let dir = args.common.tempdir("mesh-bench-raft-")?;

    // Baseline first, on a quiet process: no cluster heartbeats running yet.
    let baseline = {
        let path = dir.path().join("baseline.redb");
        tokio::task::spawn_blocking(move || redb_baseline(&path, duration))
            .await
            .context("baseline task")??
    };

    let pki = mesh_benches::pki::Pki::create(dir.path())?;
    let (leader, follower) =
        cluster_phases(&dir.path().join("plain"), None, args.concurrency, duration).await?;
    let (tls_leader, tls_follower) = cluster_phases(
        &dir.path().join("tls"),
        Some(pki.server.clone()),
        args.concurrency,
        duration,
    )
    .await?;
    drop(dir);
    let load_end = load_average();

    let leader_ratio = ratio(leader.per_sec(), baseline.per_sec());
    let follower_ratio = ratio(follower.per_sec(), baseline.per_sec());
    let tls_ratio_leader = ratio(tls_leader.per_sec(), leader.per_sec());
    let tls_ratio_follower = ratio(tls_follower.per_sec(), follower.per_sec());
    if args.common.json {
        let phase = |p: &WritePhase| {
            serde_json::json!({
                "writes_ok": p.ok,
                "errors": p.errors,
                "first_error": p.first_error,
                "elapsed_s": p.elapsed.as_secs_f64(),
                "writes_per_sec": p.per_sec(),
                "mean_ms": p.mean.as_secs_f64() * 1e3,
                "p50_ms": p.p50.as_secs_f64() * 1e3,
                "p99_ms": p.p99.as_secs_f64() * 1e3,
            })
        };
        let json = serde_json::json!({
            "bench": "raft_writes",
            "seconds": duration.as_secs_f64(),
            "concurrency": args.concurrency,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "leader": phase(&leader),
            "follower": phase(&follower),
            "tls_leader": phase(&tls_leader),
            "tls_follower": phase(&tls_follower),
            "tls_ratio_leader": tls_ratio_leader,
            "tls_ratio_follower": tls_ratio_follower,
            "baseline": {
                "commits": baseline.ops,
                "elapsed_s": baseline.elapsed.as_secs_f64(),
                "commits_per_sec": baseline.per_sec(),
                "mean_ms": per_op(baseline).as_secs_f64() * 1e3,
            },
            "ratio_leader": leader_ratio,
            "ratio_follower": follower_ratio,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }

    println!(
        "raft_writes: 3 servers on 127.0.0.1, {} writers, {:.1} s per phase",
        args.concurrency,
        duration.as_secs_f64()
    );
    println!("start {}", load_average_text(load_start));
    let mut table = Table::new(["phase", "ok", "errors", "rate", "mean", "p50", "p99"]);
    for (name, p) in [
        ("IntentionUpsert via leader", &leader),
        ("IntentionUpsert via follower", &follower),
        ("mTLS: IntentionUpsert via leader", &tls_leader),
        ("mTLS: IntentionUpsert via follower", &tls_follower),
    ] {
        table.row([
            name.to_string(),
            p.ok.to_string(),
            p.errors.to_string(),
            rate(p.per_sec()),
            ms(p.mean),
            ms(p.p50),
            ms(p.p99),
        ]);
    }
    table.row([
        "baseline: redb insert+fsync commit, 1 writer".to_string(),
        baseline.ops.to_string(),
        "0".to_string(),
        rate(baseline.per_sec()),
        ms(per_op(baseline)),
        "-".to_string(),
        "-".to_string(),
    ]);
    print!("{}", table.render());
    for (name, p) in [
        ("leader", &leader),
        ("follower", &follower),
        ("TLS leader", &tls_leader),
        ("TLS follower", &tls_follower),
    ] {
        if let Some(e) = &p.first_error {
            println!("first {name} error: {e}");
        }
    }
    println!("end   {}", load_average_text(load_end));
    println!(
        "ratio = cluster writes/s / raw fsync commits/s = {leader_ratio:.3} (leader), \
         {follower_ratio:.3} (follower)"
    );
    println!(
        "tls_ratio = mTLS writes/s / plaintext writes/s = {tls_ratio_leader:.3} (leader), \
         {tls_ratio_follower:.3} (follower)"
    );
    Ok(())
}

/// Mean time per operation of a single-threaded measurement.
fn per_op(c: Count) -> Duration {
    if c.ops == 0 {
        Duration::ZERO
    } else {
        c.elapsed / c.ops.min(u32::MAX as u64) as u32
    }
}

/// Single writer, one ~300-byte insert and one durable (fsync'd) commit per iteration.
fn redb_baseline(path: &Path, duration: Duration) -> anyhow::Result<Count> {
    let db = redb::Database::create(path).context("creating the baseline database")?;
    let value = vec![0x5a_u8; BASELINE_VALUE_LEN];
    let count = run_for(duration, MAX_BASELINE_COMMITS, |n| -> anyhow::Result<()> {
        let mut txn = db.begin_write()?;
        // redb's default, spelled out: the commit returns once the data is fsynced.
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = txn.open_table(BASELINE_TABLE)?;
            table.insert(n, value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })?;
    drop(db);
    Ok(count)
}

/// One cluster (TLS on its RPC port when `tls` is given) through both phases, shut down
/// before returning.
async fn cluster_phases(
    dir: &Path,
    tls: Option<TlsFiles>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(WritePhase, WritePhase)> {
    let handles = start_cluster(dir, tls).await?;
    let measured = measure(&handles, concurrency, duration).await;
    for h in handles {
        h.shutdown().await;
    }
    measured
}

/// Starts s1 (bootstrap_expect 3), then s2 and s3 joining through s1. On an error the servers
/// already started are shut down.
async fn start_cluster(dir: &Path, tls: Option<TlsFiles>) -> anyhow::Result<Vec<ServerHandle>> {
    let mut handles: Vec<ServerHandle> = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let mut config = ServerConfig::new(name, dir.join(name));
        config.bootstrap_expect = 3;
        config.tls = tls.clone();
        if let Some(first) = handles.first() {
            config.join = vec![first.rpc_addr.to_string()];
        }
        match Server::start(config).await {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in handles {
                    h.shutdown().await;
                }
                return Err(e).with_context(|| format!("starting {name}"));
            }
        }
    }
    Ok(handles)
}

/// Waits for the cluster, then runs the leader phase and the follower phase.
async fn measure(
    handles: &[ServerHandle],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(WritePhase, WritePhase)> {
    let (leader, follower) = wait_ready(handles).await?;
    // One write through each path first, so connection setup is not timed.
    for (i, s) in [&leader, &follower].into_iter().enumerate() {
        s.write(upsert(usize::MAX - i, 0))
            .await
            .context("warm-up write")?;
    }
    let via_leader = write_phase(leader, 0, concurrency, duration).await?;
    let via_follower = write_phase(follower, concurrency, concurrency, duration).await?;
    Ok((via_leader, via_follower))
}

/// Polls until one server leads, the configuration has three voters, every server knows the
/// leader and the CA is initialized. Returns the leader and one follower.
async fn wait_ready(handles: &[ServerHandle]) -> anyhow::Result<(Arc<Server>, Arc<Server>)> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let leader = handles.iter().find(|h| {
            let s = &h.server;
            s.raft.metrics().borrow().current_leader == Some(s.id)
        });
        if let Some(l) = leader {
            let leader_id = l.server.id;
            let (peers, _) = l.server.peers();
            let voters = peers.iter().filter(|p| p.voter).count();
            let all_know = handles
                .iter()
                .all(|h| h.server.raft.metrics().borrow().current_leader == Some(leader_id));
            let ca_ready = l.server.state.read(|s| !s.ca.roots.is_empty());
            if voters == 3 && all_know && ca_ready {
                let follower = handles
                    .iter()
                    .find(|h| h.server.id != leader_id)
                    .context("no follower")?;
                return Ok((l.server.clone(), follower.server.clone()));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "cluster not ready after {READY_TIMEOUT:?} (leader, 3 voters, CA)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `allow` intention from `svc-{writer}-{n}` to `db`.
fn upsert(writer: usize, n: u64) -> Command {
    intention_cmd(&format!("svc-{writer}-{n}"), "db")
}

/// What one writer task saw.
struct WriterResult {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// `concurrency` writers (numbered from `first_writer`) writing through `server` for `duration`.
async fn write_phase(
    server: Arc<Server>,
    first_writer: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<WritePhase> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (first_writer..first_writer + concurrency)
        .map(|writer| {
            let server = server.clone();
            tokio::spawn(async move {
                let mut r = WriterResult {
                    latencies: Vec::new(),
                    errors: 0,
                    first_error: None,
                };
                let mut n = 0;
                while n < MAX_WRITES_PER_WRITER && Instant::now() < deadline {
                    let t = Instant::now();
                    match server.write(upsert(writer, n)).await {
                        Ok(_) => r.latencies.push(t.elapsed()),
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| e.to_string());
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    n += 1;
                }
                r
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut phase = WritePhase::default();
    for t in tasks {
        let r = t.await.context("writer task")?;
        latencies.extend(r.latencies);
        phase.errors += r.errors;
        if phase.first_error.is_none() {
            phase.first_error = r.first_error;
        }
    }
    phase.elapsed = start.elapsed();
    latencies.sort_unstable();
    phase.ok = latencies.len() as u64;
    if phase.ok > 0 {
        phase.mean = latencies.iter().sum::<Duration>() / phase.ok.min(u32::MAX as u64) as u32;
    }
    phase.p50 = percentile(&latencies, 50.0);
    phase.p99 = percentile(&latencies, 99.0);
    Ok(phase)
}
