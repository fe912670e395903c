//! `l7_chain`: what per-request L7 authorization (issue #6) costs, against the L4 chain, in one
//! run.
//!
//! Acceptance figure: "requests/s and p50/p99 latency for small requests through the L7 chain vs
//! the L4 chain, in one run, with 100 permissions on the destination".
//!
//! One `meshd dev`, one application (a small HTTP/1.1 hyper server in this process answering
//! `ok`), registered twice: `db-l4` (protocol tcp, an allow intention web → db-l4) and `db-l7`
//! (service-defaults protocol `http`, an intention web → db-l7 with `--permissions` permissions
//! of mixed kinds, PathExact + Methods + Header, PathPrefix, PathRegex, of which only the last
//! matches the bench's request, so every request walks the whole list). One client sidecar,
//! `web`, has both as upstreams. The load generator (in this process, HTTP/1.1 keep-alive
//! connections, one request at a time per connection) measures:
//!
//! * `direct`: straight to the application (the floor);
//! * `L4`: web's upstream listener → web's proxy ⇒ mTLS ⇒ db-l4's proxy (byte pump) → app;
//! * `L7`: the same path to db-l7's proxy, which parses every request, decides it with the
//!   control plane's matcher and forwards it over its own connection to the app.
//!
//! Phases run interleaved, column after column, `--reps` times, so background load hits every
//! column alike: one connection (latency p50/p99 and requests/s of a single client), then
//! `--concurrency` connections (requests/s under load, with latency percentiles). At the end the
//! harness checks on db-l7's metrics that the requests were allowed by the last permission.

use mesh_benches::proxy_chain::{mesh, procs};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_benches::{
    CommonArgs, HttpConn, Table, load_average, load_average_json, load_average_text, ms,
    percentile, rate, ratio,
};
use serde_json::{Value, json};

use procs::{Child, free_port, local};

/// The bench's request path: matched by the last permission only.
const PATH: &str = "/bench/item";
/// Untimed requests on each new connection before measuring.
const WARMUP: usize = 200;

/// L7 vs L4 chain: requests/s and p50/p99 latency with N permissions on the destination.
#[derive(Debug, Parser)]
#[command(name = "l7_chain")]
struct Args {
    /// `--seconds` is the total length of each phase per column, split over `--reps` slices.
    #[command(flatten)]
    common: CommonArgs,
    /// Concurrent keep-alive connections in the loaded phase.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Interleaved slices per phase and column.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Permissions on the web → db-l7 intention (the matching one is the last).
    #[arg(long, default_value_t = 100)]
    permissions: usize,
}

/// The permissions of web → db-l7: `n - 1` that never match [`PATH`] (a mix of the match kinds
/// a real destination has), then the one that does.
fn permissions(n: usize) -> Value {
    let mut v: Vec<Value> = (0..n.saturating_sub(1))
        .map(|i| match i % 4 {
            0 => json!({"Action": "allow", "HTTP": {
                "PathExact": format!("/svc/exact/{i}"), "Methods": ["POST", "PUT"]}}),
            1 => json!({"Action": "deny", "HTTP": {"PathPrefix": format!("/svc/prefix/{i}/")}}),
            2 => json!({"Action": "allow", "HTTP": {
                "PathRegex": format!("/svc/re/{i}/[0-9]+"), "Methods": ["GET"]}}),
            _ => json!({"Action": "allow", "HTTP": {"PathPrefix": "/bench/",
                "Header": [{"Name": "x-tenant", "Exact": format!("t{i}")}]}}),
        })
        .collect();
    v.push(json!({"Action": "allow", "HTTP": {"PathPrefix": "/bench/", "Methods": ["GET"]}}));
    Value::Array(v)
}

/// The application: answers every request with `ok` (HTTP/1.1, keep-alive).
async fn serve_app(listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// [`mesh::put`] on a new connection to `api`.
async fn put(api: SocketAddr, path: &str, body: &Value) -> anyhow::Result<()> {
    mesh::put(&mut HttpConn::connect(api).await?, path, body).await
}

/// Everything running: dropped in reverse order (proxies, then meshd).
struct Setup {
    _proxies: Vec<Child>,
    _meshd: Child,
    l4: SocketAddr,
    l7: SocketAddr,
    l7_admin: SocketAddr,
}

async fn start(bin: &Path, dir: &Path, app: SocketAddr, n_perms: usize) -> anyhow::Result<Setup> {
    let (meshd, api) = mesh::start_meshd(bin, dir).await?;

    let (up_l4, up_l7) = (free_port()?, free_port()?);
    put(
        api,
        "/v1/config",
        &json!({"Kind": "service-defaults", "Name": "db-l7", "Protocol": "http"}),
    )
    .await?;
    for name in ["db-l4", "db-l7"] {
        put(
            api,
            "/v1/agent/service/register",
            &mesh::registration(name, app.port(), free_port()?, &[]),
        )
        .await?;
    }
    put(
        api,
        "/v1/agent/service/register",
        &mesh::registration(
            "web",
            free_port()?,
            free_port()?,
            &[("db-l4", up_l4), ("db-l7", up_l7)],
        ),
    )
    .await?;
    put(
        api,
        "/v1/connect/intentions/exact?source=web&destination=db-l4",
        &json!({"Action": "allow"}),
    )
    .await?;
    put(
        api,
        "/v1/connect/intentions/exact?source=web&destination=db-l7",
        &json!({"Permissions": permissions(n_perms)}),
    )
    .await?;
    let (l4_proxy, _) = mesh::spawn_proxy(&bin.join("meshproxy"), dir, api, "db-l4", &[])?;
    let (l7_proxy, l7_admin) = mesh::spawn_proxy(&bin.join("meshproxy"), dir, api, "db-l7", &[])?;
    let (web, _) = mesh::spawn_proxy(&bin.join("meshproxy"), dir, api, "web", &[])?;
    let (l4, l7) = (local(up_l4), local(up_l7));
    for entry in [l4, l7] {
        mesh::wait_until(
            "a first request through the chain",
            mesh::START_TIMEOUT,
            || async move {
                let Ok(mut c) = HttpConn::connect(entry).await else {
                    return false;
                };
                c.get(PATH).await.is_ok_and(|r| r.status == 200)
            },
        )
        .await
        .map_err(|e| web.failure(e))?;
    }
    Ok(Setup {
        _proxies: vec![web, l7_proxy, l4_proxy],
        _meshd: meshd,
        l4,
        l7,
        l7_admin,
    })
}

/// One slice: `conns` keep-alive connections to `addr`, each sending requests one at a time
/// for `length`. Returns (requests, elapsed, latencies).
async fn slice(
    addr: SocketAddr,
    conns: usize,
    length: Duration,
) -> anyhow::Result<(u64, Duration, Vec<Duration>)> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut c = HttpConn::connect(addr).await?;
        for _ in 0..WARMUP {
            let r = c.get(PATH).await?;
            anyhow::ensure!(r.status == 200, "warm-up request: HTTP {}", r.status);
        }
        clients.push(c);
    }
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = c.get(PATH).await?;
                    lat.push(t.elapsed());
                    anyhow::ensure!(r.status == 200, "request: HTTP {}", r.status);
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as u64, started.elapsed(), all))
}

#[derive(Default)]
struct Acc {
    requests: u64,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Acc {
    fn add(&mut self, (n, e, l): (u64, Duration, Vec<Duration>)) {
        self.requests += n;
        self.elapsed += e;
        self.lat.extend(l);
    }

    fn per_sec(&self) -> f64 {
        ratio(self.requests as f64, self.elapsed.as_secs_f64())
    }

    fn p(&mut self, q: f64) -> Duration {
        self.lat.sort_unstable();
        percentile(&self.lat, q)
    }
}

/// `meshproxy_http_requests_total` samples of db-l7's proxy whose labels contain `needle`.
async fn l7_metric(admin: SocketAddr, needle: &str) -> u64 {
    let Ok(mut c) = HttpConn::connect(admin).await else {
        return 0;
    };
    let Ok(r) = c.get("/metrics").await else {
        return 0;
    };
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("meshproxy_http_requests_total") && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phase = args.common.duration()?;
    anyhow::ensure!(args.reps >= 1 && args.concurrency >= 1 && args.permissions >= 1);
    let bin = mesh_benches::release::release_dir("l7_chain")?;
    if !(bin.join("meshd").exists() && bin.join("meshproxy").exists()) {
        mesh_benches::release::build_binaries()?;
    }
    let load_start = load_average();
    let tmp = args.common.tempdir("l7-chain")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let app_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let app = app_listener.local_addr()?;
    rt.spawn(serve_app(app_listener));
    let setup = rt.block_on(start(&bin, tmp.path(), app, args.permissions))?;

    let columns = [
        ("direct", app),
        ("L4 chain", setup.l4),
        ("L7 chain", setup.l7),
    ];
    let slice_len = phase / args.reps as u32;
    let mut single: Vec<Acc> = columns.iter().map(|_| Acc::default()).collect();
    let mut loaded: Vec<Acc> = columns.iter().map(|_| Acc::default()).collect();
    for _ in 0..args.reps {
        for (i, (_, addr)) in columns.iter().enumerate() {
            single[i].add(rt.block_on(slice(*addr, 1, slice_len))?);
        }
        for (i, (_, addr)) in columns.iter().enumerate() {
            loaded[i].add(rt.block_on(slice(*addr, args.concurrency, slice_len))?);
        }
    }
    let by_last = rt.block_on(l7_metric(
        setup.l7_admin,
        &format!("rule=\"web=>db-l7#{}\"", args.permissions - 1),
    ));
    let denied = rt.block_on(l7_metric(setup.l7_admin, "decision=\"deny\""));
    let load_end = load_average();
    drop(setup);

    let mut rows = Vec::new();
    for (i, (name, _)) in columns.iter().enumerate() {
        let (s, l) = (&mut single[i], &mut loaded[i]);
        rows.push(json!({
            "chain": name,
            "single": {"requests_per_sec": s.per_sec(), "p50_ms": s.p(50.0).as_secs_f64() * 1e3,
                       "p99_ms": s.p(99.0).as_secs_f64() * 1e3, "requests": s.requests},
            "loaded": {"requests_per_sec": l.per_sec(), "p50_ms": l.p(50.0).as_secs_f64() * 1e3,
                       "p99_ms": l.p(99.0).as_secs_f64() * 1e3, "requests": l.requests},
        }));
    }
    let l7_over_l4_single = ratio(single[2].per_sec(), single[1].per_sec());
    let l7_over_l4_loaded = ratio(loaded[2].per_sec(), loaded[1].per_sec());
    if args.common.json {
        println!(
            "{}",
            json!({
                "permissions": args.permissions,
                "concurrency": args.concurrency,
                "seconds_per_phase": phase.as_secs_f64(),
                "chains": rows,
                "l7_over_l4_requests_per_sec": {"single": l7_over_l4_single,
                                                "loaded": l7_over_l4_loaded},
                "l7_allowed_by_last_permission": by_last,
                "l7_denied": denied,
                "load_average_start": load_average_json(load_start),
                "load_average_end": load_average_json(load_end),
            })
        );
        return Ok(());
    }
    println!(
        "l7_chain: {} permissions on db-l7 (the last one matches GET {PATH}), {} s per phase \
         and column in {} slices",
        args.permissions,
        phase.as_secs_f64(),
        args.reps
    );
    println!("start {}", load_average_text(load_start));
    let mut t = Table::new([
        "chain".to_string(),
        "1 conn req/s".into(),
        "p50".into(),
        "p99".into(),
        format!("{} conns req/s", args.concurrency),
        "p50".into(),
        "p99".into(),
    ]);
    for (i, (name, _)) in columns.iter().enumerate() {
        let (s, l) = (&mut single[i], &mut loaded[i]);
        t.row([
            name.to_string(),
            rate(s.per_sec()),
            ms(s.p(50.0)),
            ms(s.p(99.0)),
            rate(l.per_sec()),
            ms(l.p(50.0)),
            ms(l.p(99.0)),
        ]);
    }
    print!("{}", t.render());
    println!(
        "L7 ÷ L4 requests/s: {l7_over_l4_single:.2} (1 connection), {l7_over_l4_loaded:.2} ({} connections)",
        args.concurrency
    );
    println!(
        "db-l7 decisions: {by_last} allowed by permission #{} (the last), {denied} denied",
        args.permissions - 1
    );
    println!("end   {}", load_average_text(load_end));
    Ok(())
}
