//! The one HTTP serve loop of the agent's and the server's APIs, with bounded resources:
//! `axum::serve` has no timeouts and no connection cap, so a few slow or idle clients could hold
//! sockets and memory without end (issue 15: five half-sent requests stayed open 45 s, 1,000
//! idle connections took 24 MB and 1,017 descriptors, a 60 MB PUT peaked at 245 MB).
//!
//! * **Head timeout:** a request's head must arrive within `read_header_timeout` of when the
//!   connection starts waiting for it (hyper's HTTP/1 header timer). hyper starts that timer
//!   after accepting and again after each response, so the same bound closes idle keep-alive
//!   connections: it is both the header-read and the idle timeout.
//! * **Connections per client:** at most `max_conns_per_client` open connections per client IP
//!   (Consul's `limits.http_max_conns_per_client`, default 200). Beyond it the connection gets
//!   Consul's answer, `429 Too Many Requests`, and is closed; a warning says so, at most once
//!   per [`CAP_LOG_EVERY`] with the number refused meanwhile.
//! * **Request bodies:** a body longer than `max_request_body` is refused with 413 naming the
//!   limit, before it is read when `Content-Length` says so, else as soon as the limit is
//!   passed ([`Limited`]); nothing reads more than the limit into memory. A body must arrive
//!   within the head timeout too (408), so a trickled body cannot hold a connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ApiError;

/// At most one "connection limit reached" warning per this period.
pub const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Timeouts and caps of an HTTP API (`limits { ... }` in a configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `limits.http_read_header_timeout`: a request head must arrive within this of when the
    /// server starts waiting for it (also the idle keep-alive timeout, see the module doc).
    pub read_header_timeout: Duration,
    /// `limits.http_max_conns_per_client`: open connections per client IP (Consul's key).
    pub max_conns_per_client: usize,
    /// `limits.http_max_request_body`: the largest request body, in bytes.
    pub max_request_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            read_header_timeout: Duration::from_secs(30),
            max_conns_per_client: 200,
            max_request_body: 4 * 1024 * 1024,
        }
    }
}

/// 413 for a body over `limit` bytes (`len` when known).
pub fn too_large(limit: usize, len: Option<u64>) -> ApiError {
    let size = len.map_or_else(String::new, |n| format!(" ({n} bytes)"));
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "Request body too large{size}: the limit is {limit} bytes \
             (limits.http_max_request_body)"
        ),
    }
}

/// Whether a body read failed because it passed its [`Limited`] length.
fn is_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads the request body here, once, within `limits`: a declared oversize body is refused
/// before a byte of it is read, an undeclared (chunked) one as soon as it passes the limit, and
/// a body that trickles in slower than the head timeout is 408. Handlers get the buffer as is
/// (every API handler buffers its body anyway; `Bytes` passes through without a copy).
async fn read_body(limits: Arc<HttpLimits>, req: Request, next: Next) -> Response {
    let limit = limits.max_request_body;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit, declared).into_response();
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        limits.read_header_timeout,
        http_body_util::BodyExt::collect(Limited::new(body, limit)),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if is_too_large(&*e) => return too_large(limit, None).into_response(),
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response();
        }
        Err(_) => {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not arrive within {} (limits.http_read_header_timeout)",
                    crate::duration::format_duration(limits.read_header_timeout)
                ),
            }
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// `app` with the body read by [`read_body`] on every route (the extractors' own limit set to
/// match).
fn with_body_limit(app: Router, limits: &HttpLimits) -> Router {
    let shared = Arc::new(limits.clone());
    app.layer(axum::middleware::from_fn(move |req, next| {
        read_body(shared.clone(), req, next)
    }))
    .layer(DefaultBodyLimit::max(limits.max_request_body))
}

/// Counts open connections per client IP; a slot is given back when its [`Slot`] drops.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl PerClient {
    /// A slot for `ip`, or `None` when it already holds `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

/// Logs an event at most once per period, with how many happened meanwhile.
struct Throttled {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            count: 0,
        }
    }

    /// Records one event; `Some(n)` (events since the last log, this one included) when it
    /// is time to log.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Consul's answer to a connection over the per-client cap.
const TOO_MANY: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls";

/// Answers 429 (bounded in time) and closes.
async fn refuse(mut stream: TcpStream) {
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{TOO_MANY}",
        TOO_MANY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops accepting,
/// lets open requests finish, and returns when every connection has closed.
pub async fn serve(
    app: Router,
    listener: TcpListener,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = with_body_limit(app, &limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .keep_alive(true);
    let clients = Arc::new(PerClient::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut capped = Throttled::new(CAP_LOG_EVERY);
    let mut accept_errors = Throttled::new(CAP_LOG_EVERY);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    if let Some(n) = accept_errors.hit() {
                        tracing::warn!(error = %e, errors = n, "HTTP accept failed; pausing");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = clients.take(peer.ip(), limits.max_conns_per_client) else {
            if let Some(n) = capped.hit() {
                tracing::warn!(
                    client = %peer.ip(),
                    limit = limits.max_conns_per_client,
                    refused = n,
                    "HTTP connection limit per client reached (limits.http_max_conns_per_client): \
                     answering 429 and closing"
                );
            }
            tokio::spawn(refuse(stream));
            continue;
        };
        // As Go (and so Consul) does for every TCP connection: a response hyper writes in more
        // than one piece (a large or streamed body) must not wait on Nagle for the client's
        // delayed ACK (40 ms on Linux) before its last piece goes out.
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver: they are all gone once this returns.
    stop_tx.closed().await;
}
