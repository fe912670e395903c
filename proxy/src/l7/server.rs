//! The HTTP server on an authorized inbound mutual-TLS stream: HTTP/1.1 (keep-alive and
//! pipelining, upgrades) or HTTP/2, by the destination's declared protocol, never sniffed.
//!
//! Per request: normalize the path and headers per the snapshot's request normalization
//! ([`normalize`]: malformed → 400, escaped slashes → 307 when configured) so the decision and
//! the application see the same path → decide with the newest [`Policy`] snapshot → denied:
//! answer it here ([`deny`]), log one line and count it, leaving the connection open for the
//! next request (an HTTP/1.1 body still arriving is drained within bounds, or the answer says
//! `Connection: close`: [`body`], [`linger`]) →
//! allowed: strip hop-by-hop headers, forward to the application with the body streaming
//! ([`Forwarder`]), strip the response's hop-by-hop headers and stream its body back, frames
//! (and so trailers) unchanged. A 101 to an upgrade request joins the two upgraded connections
//! with a byte copy. Malformed requests never reach this code: hyper answers them with 400
//! (HTTP/1.1) or a stream reset (HTTP/2) and the proxy keeps serving.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_policy::intentions::l7::HttpRequest;
use mesh_policy::intentions::normalize::{self, PathOutcome};
use mesh_policy::spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::forward::Forwarder;
use mesh_policy::config_entries::Protocol;

use super::{Body, body, deny, hop, linger};
use crate::authz::Policy;
use crate::metrics::Metrics;
use crate::transport::SocketFactory;

/// How long the application connection may take to finish once the inbound one is done.
const DRIVER_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request head (slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What one L7 connection needs.
#[derive(Debug)]
pub struct ConnContext {
    pub peer: SpiffeId,
    pub client: SocketAddr,
    pub protocol: Protocol,
    /// Read per request, so an intention change applies to the next request.
    pub policy: watch::Receiver<Option<Arc<Policy>>>,
    pub metrics: Arc<Metrics>,
    pub app_host: String,
    pub app_port: u16,
    /// Opens the connections to the application.
    pub sockets: SocketFactory,
    pub connect_timeout: Duration,
}

/// Serves HTTP on `io` until the client closes it (or the server errors).
pub async fn serve<I>(io: I, cx: ConnContext) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (fwd, driver) = Forwarder::new(
        cx.app_host.clone(),
        cx.app_port,
        cx.protocol.is_h2(),
        cx.sockets.clone(),
        cx.connect_timeout,
    );
    let fwd = Arc::new(fwd);
    let cx = Arc::new(cx);
    let svc = {
        let cx = cx.clone();
        service_fn(move |req| {
            let (cx, fwd) = (cx.clone(), fwd.clone());
            async move { Ok::<_, std::convert::Infallible>(handle(&cx, &fwd, req).await) }
        })
    };
    // Handed back after hyper's clean shutdown, for the lingering close (`linger`).
    let (io, returned) = linger::Io::new(io);
    let io = TokioIo::new(io);
    let server = async {
        if cx.protocol.is_h2() {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await
        } else {
            hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, svc)
                .with_upgrades()
                .await
        }
    };
    // The connection to the application runs in this task too (see `forward`). The driver
    // ends only after the server, which owns the forwarder: once the server is done, the
    // driver finishes what is left (the hand-over of an upgraded connection after a 101, the
    // close of the idle application connection), bounded.
    tokio::pin!(driver);
    let r = tokio::select! {
        r = server => r,
        () = &mut driver => return Ok(()),
    };
    let linger = async {
        if let Ok(io) = returned.await {
            linger::linger(io, linger::LINGER_TIME).await;
        }
    };
    let _ = tokio::join!(tokio::time::timeout(DRIVER_GRACE, driver), linger);
    r
}

/// `uri` with its path replaced by `path` (query, scheme and authority kept).
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, http::Error> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse()?);
    Ok(http::Uri::from_parts(parts)?)
}

/// The request with its path and headers normalized per the policy's request normalization,
/// so that the decision and the application see the same path; or the answer when the request
/// is refused (400) or redirected (307) before any rule is read, whose unread body is handled
/// like a denied request's ([`body::answer_unforwarded`]).
async fn normalized(
    cx: &ConnContext,
    policy: &Policy,
    grpc_call: bool,
    req: Request<Incoming>,
) -> Result<Request<Incoming>, Response<Body>> {
    let (mut parts, body) = req.into_parts();
    let outcome =
        normalize::normalize_request(parts.uri.path(), &mut parts.headers, &policy.normalization)
            .map(|o| match o {
                // `normalize_path` borrows exactly when the path is already normal.
                PathOutcome::Forward(Cow::Owned(p)) => Ok(Some(p)),
                PathOutcome::Forward(Cow::Borrowed(_)) => Ok(None),
                PathOutcome::Redirect(to) => Err(to),
            });
    let answer = match outcome {
        Ok(Ok(None)) => return Ok(Request::from_parts(parts, body)),
        Ok(Ok(Some(path))) => match with_path(&parts.uri, &path) {
            Ok(uri) => {
                tracing::debug!(raw = %parts.uri.path(), normalized = %path, "request path normalized");
                parts.uri = uri;
                return Ok(Request::from_parts(parts, body));
            }
            Err(e) => {
                tracing::warn!(source = %cx.peer, path = %path, error = %e, "normalized path is not a valid URI");
                deny::bad_request(grpc_call)
            }
        },
        Ok(Err(to)) => deny::redirect(&with_path(&parts.uri, &to).unwrap_or_default()),
        Err(e) => {
            tracing::warn!(
                source = %cx.peer, destination = %policy.destination, method = %parts.method,
                path = %parts.uri.path(), client = %cx.client, reason = %e,
                "inbound request refused before authorization"
            );
            cx.metrics
                .http_request(false, "malformed_request", e.code().to_string());
            deny::bad_request(grpc_call)
        }
    };
    let r = body::answer_unforwarded(Request::from_parts(parts, body), answer).await;
    cx.metrics.http_response(r.status());
    Err(r)
}

async fn handle(cx: &ConnContext, fwd: &Forwarder, req: Request<Incoming>) -> Response<Body> {
    let grpc_call = cx.protocol == Protocol::Grpc || deny::is_grpc(req.headers());
    let policy = cx.policy.borrow().clone();
    let Some(policy) = policy else {
        // Cannot happen once the listener is open (it waits for a policy); fail closed.
        return deny::forbidden(grpc_call);
    };
    let mut req = match normalized(cx, &policy, grpc_call, req).await {
        Ok(req) => req,
        Err(answer) => return answer,
    };
    let verdict = policy.authorize_http(
        &cx.peer,
        &HttpRequest {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
        },
    );
    cx.metrics.http_request(
        verdict.allowed,
        verdict.kind().as_str(),
        verdict.rule_label(),
    );
    if !verdict.allowed {
        tracing::warn!(
            source = %cx.peer, destination = %policy.destination, method = %req.method(),
            path = %req.uri().path(), client = %cx.client, reason = %verdict.reason,
            "inbound request denied"
        );
        let r = body::answer_unforwarded(req, deny::forbidden(grpc_call)).await;
        cx.metrics.http_response(r.status());
        return r;
    }

    let upgrade = req.version() == Version::HTTP_11 && hop::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    hop::strip(req.headers_mut(), upgrade);
    // HTTP/1.x with a body: on a 502 the body may be partly unread (`body`).
    let body_pending =
        req.version() < Version::HTTP_2 && !hyper::body::Body::is_end_stream(req.body());
    if cx.protocol.is_h2() {
        *req.version_mut() = Version::HTTP_2;
    }
    let mut resp = match fwd.send(req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(source = %cx.peer, client = %cx.client, error = %e, "forwarding to the local application failed");
            let mut r = deny::bad_gateway(grpc_call);
            if body_pending {
                body::announce(&mut r, &body::Leftover::Close(body::CloseReason::Forwarded));
            }
            cx.metrics.http_response(r.status());
            return r;
        }
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, client_upgrade) {
        (true, Some(client_upgrade)) => {
            let app_upgrade = hyper::upgrade::on(&mut resp);
            let peer = cx.peer.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, app_upgrade) {
                    Ok((client, app)) => {
                        let (mut c, mut a) = (TokioIo::new(client), TokioIo::new(app));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut a).await {
                            tracing::debug!(source = %peer, error = %e, "upgraded connection ended with an error");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(source = %peer, error = %e, "protocol upgrade failed")
                    }
                }
            });
            hop::strip(resp.headers_mut(), true);
        }
        _ => hop::strip(resp.headers_mut(), false),
    }
    cx.metrics.http_response(resp.status());
    resp.map(BodyExt::boxed)
}
