//! The application behind every chain and the load generator in front of it.
//!
//! One app port serves every phase, because a meshproxy sidecar forwards to exactly one
//! registered application port. The first byte a connection sends chooses the mode:
//!
//! * `D` (discard): the app answers one byte `k` at once (so the client knows the whole chain is
//!   up before it starts its clock), then reads and throws away everything until EOF and
//!   replies with the byte count it saw (u64, little endian). Nothing is hashed on this path,
//!   so the sink costs as little CPU as possible.
//! * anything else (echo): the app writes back every byte it reads, the first one included,
//!   and half-closes after the client's EOF.
//!
//! The harness's own sockets (the load generator's and the app's) use TCP_NODELAY and the
//! `cubic` congestion control whatever the system default is: a pacing default such as `bbr`
//! without the `fq` qdisc would make the harness itself the slowest hop and hide the proxies'
//! differences behind it. The proxies' own sockets are left as each proxy sets them.
//!
//! The load-generator functions are blocking (std sockets on their own threads): each phase is
//! one tight loop per thread with no runtime in between, bounded by a count and a deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Mode byte of a discarding connection.
pub const DISCARD: u8 = b'D';
/// Mode byte of an echo connection (any other byte echoes too).
pub const ECHO: u8 = b'E';
/// Read buffer of the discarding app, and write size of the bulk sender.
const BULK_CHUNK: usize = 256 * 1024;
/// Read buffer of the echoing app (small: 1,000 held connections each keep one).
const ECHO_BUF: usize = 16 * 1024;
/// Socket read/write timeout of the load generator: a stuck chain fails the phase instead of
/// hanging the run.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts on `listener` forever, one task per connection.
pub async fn serve_app(listener: tokio::net::TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = app_conn(s).await;
        });
    }
}

/// TCP_NODELAY and an unpaced congestion control on a harness socket (see the module docs).
fn tune(s: socket2::SockRef<'_>) -> std::io::Result<()> {
    s.set_tcp_nodelay(true)?;
    // A kernel without cubic keeps its default; nothing else depends on it.
    let _ = s.set_tcp_congestion(b"cubic");
    Ok(())
}

async fn app_conn(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    tune(socket2::SockRef::from(&s))?;
    let mut buf = vec![0u8; ECHO_BUF];
    let n = s.read(&mut buf).await?;
    if n == 0 {
        return Ok(());
    }
    if buf[0] == DISCARD {
        s.write_all(b"k").await?;
        let mut count = (n - 1) as u64;
        buf.resize(BULK_CHUNK, 0);
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            count += n as u64;
        }
        s.write_all(&count.to_le_bytes()).await?;
        return s.shutdown().await;
    }
    s.write_all(&buf[..n]).await?;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    tune(socket2::SockRef::from(&s))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Deterministic pseudo-random bytes (xorshift64), so a transfer is not trivially compressible
/// and a corrupted byte changes the hash; and the hash of a stream fed in pieces. The tests'
/// own, so the benches and the tests check integrity the same way.
pub use mesh_tests::chain::{Pattern, StreamHash};

/// Result of one bulk transfer.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    /// Bytes the app counted.
    pub bytes: u64,
    /// From the first payload byte written to the app's count arriving back.
    pub elapsed: Duration,
    /// Whether all requested bytes were sent before the deadline.
    pub complete: bool,
}

impl Bulk {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `bytes` (or as much as fits before `deadline`) on one connection to a discarding app
/// and waits for its count: single-stream throughput of the whole chain.
pub fn bulk(addr: SocketAddr, bytes: u64, deadline: Instant) -> anyhow::Result<Bulk> {
    let mut s = connect(addr)?;
    s.write_all(&[DISCARD])?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)
        .context("waiting for the app's ready byte")?;
    let mut chunk = vec![0u8; BULK_CHUNK];
    Pattern::new(7).fill(&mut chunk);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes && Instant::now() < deadline {
        let n = (bytes - sent).min(BULK_CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).context("sending bulk data")?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .context("waiting for the app's byte count")?;
    let elapsed = start.elapsed();
    let counted = u64::from_le_bytes(count);
    if counted != sent {
        bail!("the app counted {counted} bytes, {sent} were sent");
    }
    Ok(Bulk {
        bytes: counted,
        elapsed,
        complete: sent == bytes,
    })
}

/// Echoes `bytes` of pseudo-random data through the chain (writer and reader on two threads)
/// and checks that the same bytes, in order, came back (length and SipHash of both streams).
pub fn verify(addr: SocketAddr, bytes: u64) -> anyhow::Result<()> {
    let s = connect(addr)?;
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
        let mut h = StreamHash::default();
        let mut p = Pattern::new(11);
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        let mut first = true;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            p.fill(&mut buf[..n]);
            if first {
                buf[0] = ECHO;
                first = false;
            }
            w.write_all(&buf[..n])?;
            h.update(&buf[..n]);
            sent += n as u64;
        }
        w.shutdown(Shutdown::Write)?;
        Ok(h.finish())
    });
    let mut r = s;
    let mut h = StreamHash::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).context("reading the echo")?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let (sent_hash, sent) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let (got_hash, got) = h.finish();
    if got != sent || got_hash != sent_hash {
        bail!(
            "echo differs: sent {sent} bytes, got {got} back, hashes equal: {}",
            got_hash == sent_hash
        );
    }
    Ok(())
}

/// Round-trip times of `size`-byte messages on one kept-alive connection: `warmup` untimed
/// rounds, then up to `rounds` timed ones or until `cap` passes. The connection is returned
/// still open, so the caller can read the proxies' counters before a thread-per-connection
/// proxy ends the thread that served it.
pub fn latency(
    addr: SocketAddr,
    size: usize,
    warmup: u64,
    rounds: u64,
    cap: Duration,
) -> anyhow::Result<(Vec<Duration>, TcpStream)> {
    let mut s = connect(addr)?;
    let mut msg = vec![0u8; size];
    Pattern::new(3).fill(&mut msg);
    msg[0] = ECHO;
    let mut back = vec![0u8; size];
    for _ in 0..warmup {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    let mut samples = Vec::with_capacity(rounds.min(1_000_000) as usize);
    crate::run_for(cap, rounds, |_| -> anyhow::Result<()> {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        samples.push(t.elapsed());
        Ok(())
    })?;
    if back != msg {
        bail!("latency: the echo differs from the message");
    }
    Ok((samples, s))
}

/// Outcome of the connection-rate phase.
#[derive(Debug, Clone, Default)]
pub struct ConnRate {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl ConnRate {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `concurrency` threads, each in a loop for `duration`: connect, send one byte, read its
/// echo, close. Every connection is new, so every one makes the client-side proxy open a new
/// TLS connection to the server-side proxy.
pub fn conn_rate(addr: SocketAddr, concurrency: usize, duration: Duration) -> ConnRate {
    let ok = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    let start = Instant::now();
    let deadline = start + duration;
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    let r = (|| -> anyhow::Result<()> {
                        let mut s = connect(addr)?;
                        s.write_all(&[ECHO])?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)?;
                        if b[0] != ECHO {
                            bail!("echoed byte differs");
                        }
                        Ok(())
                    })();
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut f = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            f.get_or_insert_with(|| format!("{e:#}"));
                            // Do not spin on a broken chain.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            });
        }
    });
    ConnRate {
        ok: ok.into_inner(),
        errors: errors.into_inner(),
        first_error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
        elapsed: start.elapsed(),
    }
}

/// Opens up to `n` connections through the chain (with `parallel` threads), each confirmed
/// end to end by a one-byte echo, and returns them still open. Stops opening at `deadline`.
pub fn hold(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    deadline: Instant,
) -> (Vec<TcpStream>, Option<String>) {
    let failed = AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None::<String>);
    let parallel = parallel.clamp(1, n.max(1));
    let per = n.div_ceil(parallel);
    let mut all = Vec::with_capacity(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel)
            .map(|t| {
                let count = per.min(n.saturating_sub(t * per));
                let (failed, first_error) = (&failed, &first_error);
                scope.spawn(move || {
                    let mut mine = Vec::with_capacity(count);
                    for _ in 0..count {
                        if failed.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let r = (|| -> anyhow::Result<TcpStream> {
                            let mut s = connect(addr)?;
                            s.write_all(&[ECHO])?;
                            let mut b = [0u8; 1];
                            s.read_exact(&mut b)?;
                            Ok(s)
                        })();
                        match r {
                            Ok(s) => mine.push(s),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                let mut f = first_error.lock().unwrap_or_else(|p| p.into_inner());
                                f.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            if let Ok(v) = h.join() {
                all.extend(v);
            }
        }
    });
    (
        all,
        first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}
