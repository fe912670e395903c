//! The public listener: mutual TLS from other proxies, authorized in-process, then piped to the
//! local application.
//!
//! Order matters: handshake (bounded by `--handshake-timeout`) → peer SPIFFE ID from the
//! verified client certificate → [`Policy::authorize`]. Only an allowed connection causes a
//! connect to the application, so a denied peer never gets a single byte to it. A denial is
//! logged as one line naming source, destination and the intention or default policy that
//! decided. Allowed connections are registered with the [`Registry`] so that a later intention
//! change can close them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::authz::Policy;
use crate::connections::Registry;
use crate::copy;
use crate::drain;
use crate::identity::Identity;
use crate::metrics::{ConnResult, Direction, Metrics};
use crate::serve::{self, Outcome};
use crate::tls;
use crate::tls_stream;
use crate::transport::{self, SocketFactory};

/// Bound on sending `close_notify` to a refused peer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the local application listens. Agent mode follows the sidecar registration's
/// `LocalServiceAddress`/`LocalServicePort`; static mode takes `inbound.local_app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalApp {
    pub host: String,
    pub port: u16,
}

/// What inbound connections need.
#[derive(Debug)]
pub struct InboundContext {
    pub identity: watch::Receiver<Option<Arc<Identity>>>,
    pub policy: watch::Receiver<Option<Arc<Policy>>>,
    pub local_app: watch::Receiver<Option<Arc<LocalApp>>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Opens the connects to the local application.
    pub sockets: SocketFactory,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// Accepts until draining starts (the accept loop is [`serve::serve`]).
pub async fn serve(listener: TcpListener, ctx: Arc<InboundContext>, drain: drain::Watch) {
    // Every client of this listener speaks first (a ClientHello): wake once per connection.
    transport::defer_accept(&listener, ctx.handshake_timeout);
    let metrics = ctx.metrics.clone();
    serve::serve(
        listener,
        "inbound",
        Direction::Inbound,
        metrics,
        drain,
        ctx,
        handle,
    )
    .await;
}

async fn handle(ctx: Arc<InboundContext>, tcp: TcpStream, client: SocketAddr) -> Outcome {
    // Socket options: set by `serve` (inherited from the listener).
    // The pod's address the caller dialled (with `sk_lookup`, the app's own address).
    let local = tcp.local_addr().ok();
    let Some(identity) = ctx.identity.borrow().clone() else {
        return ConnResult::NotReady.into();
    };
    let started = Instant::now();
    let handshake = tls_stream::accept(identity.server.clone(), tcp);
    let mut tls = match tokio::time::timeout(ctx.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let kind = tls::handshake_failure_kind(&e);
            ctx.metrics.handshake_failed(Direction::Inbound, kind);
            if kind == "eof" {
                // A TCP health check (connect, then close): not worth a line every interval.
                tracing::debug!(%client, "inbound connection closed before a TLS handshake");
            } else {
                tracing::info!(%client, kind, error = %e, "inbound TLS handshake refused");
            }
            return ConnResult::HandshakeFailed.into();
        }
        Err(_) => {
            ctx.metrics.handshake_failed(Direction::Inbound, "timeout");
            tracing::info!(%client, timeout = ?ctx.handshake_timeout, "inbound TLS handshake timed out");
            return ConnResult::HandshakeFailed.into();
        }
    };
    ctx.metrics
        .handshake_ok(Direction::Inbound, started.elapsed().as_secs_f64());

    let peer = match tls::peer_spiffe_id(tls.session().peer_certificates()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%client, error = %e, "inbound connection refused: no usable peer identity");
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, tokio::io::AsyncWriteExt::shutdown(&mut tls))
                    .await;
            return ConnResult::BadPeerIdentity.into();
        }
    };
    let Some(policy) = ctx.policy.borrow().clone() else {
        return ConnResult::NotReady.into();
    };
    let verdict = policy.authorize(&peer);
    ctx.metrics
        .authorization(verdict.allowed, verdict.kind().as_str());
    if !verdict.allowed {
        tracing::warn!(
            source = %peer, destination = %policy.destination, %client, reason = %verdict.reason,
            "inbound connection denied"
        );
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, tokio::io::AsyncWriteExt::shutdown(&mut tls)).await;
        return ConnResult::Denied.into();
    }
    let registration = ctx.registry.register(peer.clone(), client);
    // The policy may have changed between the decision and the registration; a re-check run in
    // that window did not see this connection, so decide again against the newest snapshot.
    let latest = ctx.policy.borrow().clone();
    if let Some(latest) = latest.filter(|l| l.index != policy.index) {
        let v = latest.authorize(&peer);
        if !v.allowed {
            tracing::warn!(
                source = %peer, destination = %latest.destination, %client, reason = %v.reason,
                "inbound connection denied"
            );
            return ConnResult::Denied.into();
        }
    }

    let (host, port) = ctx
        .local_app
        .borrow()
        .as_ref()
        .map(|a| (a.host.clone(), a.port))
        .unwrap_or_else(|| ("127.0.0.1".into(), 0));
    // From the caller's address where transparent mode set that up (`transparent::source`).
    let sockets = ctx.sockets.for_caller(client, local);
    if policy.protocol.is_l7() {
        // L7 destination (issue #6): serve HTTP on the stream and decide every request.
        let cx = crate::l7::server::ConnContext {
            peer: peer.clone(),
            client,
            protocol: policy.protocol,
            policy: ctx.policy.clone(),
            metrics: ctx.metrics.clone(),
            app_host: host,
            app_port: port,
            sockets,
            connect_timeout: ctx.connect_timeout,
        };
        tracing::debug!(source = %peer, %client, protocol = %policy.protocol, "inbound connection admitted for per-request authorization");
        return tokio::select! {
            r = crate::l7::server::serve(tls, cx) => match r {
                Ok(()) => ConnResult::Ok.into(),
                Err(e) => {
                    tracing::debug!(source = %peer, error = %e, "inbound HTTP connection ended with an error");
                    ConnResult::Error.into()
                }
            },
            _ = registration.closed() => ConnResult::ClosedByPolicy.into(),
        };
    }
    let mut app = match sockets.connect(&host, port, ctx.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(source = %peer, error = %e, "cannot reach the local application");
            return ConnResult::ConnectFailed.into();
        }
    };
    tracing::debug!(source = %peer, destination = %policy.destination, %client, reason = %verdict.reason, "inbound connection authorized");
    tokio::select! {
        r = copy::bidirectional(&mut tls, &mut app) => {
            if let Err(e) = &r {
                tracing::debug!(source = %peer, error = %e, "inbound connection ended with an error");
            }
            r.into()
        }
        _ = registration.closed() => ConnResult::ClosedByPolicy.into(),
    }
}
