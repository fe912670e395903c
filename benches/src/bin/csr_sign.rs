//! `csr_sign`: how many agent CSRs the built-in CA signs per second, against the bare ECDSA
//! P-256 signature rate of the same key measured in the same run.
//!
//! Why: every sidecar asks for a leaf at start and on every rotation, so a cluster-wide restart
//! or root rotation is a burst of `sign_leaf` calls. The raw-signature baseline turns the figure
//! into a machine-independent ratio: it says how much of a signing costs beyond the one
//! signature the CA cannot avoid (PEM/DER parsing, the CSR's own signature check, SPIFFE
//! validation, loading the root key, certificate encoding).
//!
//! CSRs are generated before timing starts; each phase is bounded by `--seconds` and by a count.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_benches::{
    CommonArgs, Count, Table, ensure_in, load_average, load_average_json, load_average_text,
    parallelism, rate, ratio, run_for,
};
use mesh_control::ca::{BuiltinProvider, CaProvider, LeafRequest, StoredRoot, generate_csr};
use mesh_control::spiffe::SpiffeId;
use rcgen::{KeyPair, SigningKey};
use time::OffsetDateTime;

const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";
const DATACENTER: &str = "dc1";
const SERVICE: &str = "web";
/// Consul's default `LeafCertTTL`.
const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
/// Size of the message the baseline signs (about a leaf's to-be-signed part).
const MESSAGE_LEN: usize = 300;
/// Default upper bound on operations per thread and phase, whatever the duration.
const MAX_OPS: u64 = 10_000_000;

/// CSR signing throughput of the built-in CA against raw ECDSA P-256 signatures.
#[derive(Debug, Parser)]
#[command(name = "csr_sign")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Threads for the parallel phases (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Number of distinct CSRs generated up front and signed in turn.
    #[arg(long, default_value_t = 1000)]
    csrs: usize,
    /// Stop each thread's phase after this many operations even if time is left (for
    /// fixed-work runs under `valgrind --tool=callgrind`).
    #[arg(long, default_value_t = MAX_OPS)]
    max_ops: u64,
}

/// One timed phase: what ran, on how many threads, and how many operations completed.
struct Phase {
    name: &'static str,
    threads: usize,
    count: Count,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.common.duration()?;
    let threads = args.threads.unwrap_or_else(parallelism);
    anyhow::ensure!((1..=256).contains(&threads), "--threads must be in 1..=256");
    ensure_in("max-ops", args.max_ops, 1..=MAX_OPS)?;
    ensure_in("csrs", args.csrs, 1..=100_000)?;
    let load_start = load_average();

    let now = OffsetDateTime::now_utc();
    let root = BuiltinProvider
        .generate_root(TRUST_DOMAIN, 1, now)
        .context("generating the root")?;
    let id = SpiffeId::service(TRUST_DOMAIN, DATACENTER, SERVICE);
    let csrs = (0..args.csrs)
        .map(|_| generate_csr(&id).map(|(csr_pem, _key_pem)| csr_pem))
        .collect::<Result<Vec<_>, _>>()
        .context("generating CSRs")?;
    // The baseline signs with the very key `sign_leaf` uses: the root's.
    let root_key = KeyPair::from_pem(&root.private_key_pem).context("loading the root key")?;
    let message: Vec<u8> = (0..MESSAGE_LEN).map(|i| (i % 251) as u8).collect();

    // Fail before timing if signing does not work at all.
    sign_one(&root, &csrs[0], now).context("signing a CSR")?;
    root_key.sign(&message).context("raw signature")?;

    let mut phases = Vec::new();
    let mut thread_counts = vec![1];
    if threads > 1 {
        thread_counts.push(threads);
    }
    // Baseline and CSR phases alternate per thread count so both see the same machine load.
    for &t in &thread_counts {
        phases.push(Phase {
            name: "CSR sign (BuiltinProvider::sign_leaf)",
            threads: t,
            count: parallel(t, duration, args.max_ops, |thread, n| {
                let csr = &csrs[(thread + n as usize * t) % csrs.len()];
                sign_one(&root, csr, now).map(|_| ())
            })?,
        });
        phases.push(Phase {
            name: "raw ECDSA P-256 sign (rcgen KeyPair)",
            threads: t,
            count: parallel(t, duration, args.max_ops, |_, _| {
                root_key.sign(&message).map(|_| ())
            })?,
        });
    }
    let load_end = load_average();

    let rate_of = |name_prefix: &str, t: usize| {
        phases
            .iter()
            .find(|p| p.threads == t && p.name.starts_with(name_prefix))
            .map(|p| p.count.per_sec())
            .unwrap_or(0.0)
    };
    let ratios: Vec<(usize, f64, f64, f64)> = thread_counts
        .iter()
        .map(|&t| {
            let csr = rate_of("CSR", t);
            let raw = rate_of("raw", t);
            (t, csr, raw, ratio(csr, raw))
        })
        .collect();

    if args.common.json {
        let json = serde_json::json!({
            "bench": "csr_sign",
            "seconds": duration.as_secs_f64(),
            "csrs": args.csrs,
            "load_average_start": load_average_json(load_start),
            "load_average_end": load_average_json(load_end),
            "phases": phases.iter().map(|p| serde_json::json!({
                "name": p.name,
                "threads": p.threads,
                "ops": p.count.ops,
                "elapsed_s": p.count.elapsed.as_secs_f64(),
                "per_sec": p.count.per_sec(),
            })).collect::<Vec<_>>(),
            "ratios": ratios.iter().map(|(t, csr, raw, r)| serde_json::json!({
                "threads": t,
                "csr_signs_per_sec": csr,
                "raw_signatures_per_sec": raw,
                "ratio": r,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }

    println!(
        "csr_sign: {:.1} s per phase, {} pre-generated P-256 CSRs, leaf TTL 72h",
        duration.as_secs_f64(),
        args.csrs
    );
    println!("start {}", load_average_text(load_start));
    let mut table = Table::new(["phase", "threads", "ops", "rate", "per op/thread"]);
    for p in &phases {
        let per_op = if p.count.ops > 0 {
            p.count.elapsed.as_secs_f64() * p.threads as f64 / p.count.ops as f64
        } else {
            0.0
        };
        table.row([
            p.name.to_string(),
            p.threads.to_string(),
            p.count.ops.to_string(),
            rate(p.count.per_sec()),
            format!("{:.1} µs", per_op * 1e6),
        ]);
    }
    print!("{}", table.render());
    println!("end   {}", load_average_text(load_end));
    let parts: Vec<String> = ratios
        .iter()
        .map(|(t, _, _, r)| format!("{r:.3} ({t} thread{})", if *t == 1 { "" } else { "s" }))
        .collect();
    println!(
        "ratio = CSR signs/s / raw ECDSA signatures/s = {}",
        parts.join(", ")
    );
    Ok(())
}

fn sign_one(
    root: &StoredRoot,
    csr_pem: &str,
    now: OffsetDateTime,
) -> Result<mesh_control::model::IssuedLeaf, mesh_control::ca::CaError> {
    BuiltinProvider.sign_leaf(
        root,
        &LeafRequest {
            csr_pem,
            trust_domain: TRUST_DOMAIN,
            datacenter: DATACENTER,
            service: SERVICE,
            ttl: LEAF_TTL,
        },
        now,
    )
}

/// Runs `op(thread, n)` on `threads` threads for `duration` (each also bounded by `max_ops`)
/// and returns the total count over the longest thread's elapsed time.
fn parallel<E>(
    threads: usize,
    duration: Duration,
    max_ops: u64,
    op: impl Fn(usize, u64) -> Result<(), E> + Sync,
) -> anyhow::Result<Count>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || run_for(duration, max_ops, |n| op(t, n)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .collect::<Result<Vec<_>, E>>()
    })?;
    Ok(Count {
        ops: counts.iter().map(|c| c.ops).sum(),
        elapsed: counts
            .iter()
            .map(|c| c.elapsed)
            .max()
            .unwrap_or(Duration::ZERO),
    })
}
