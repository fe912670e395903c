//! Upstream listeners: one loopback port per upstream; each connection goes over mutual TLS to
//! a healthy instance of the upstream.
//!
//! Instances come from the agent's `/v1/health/connect/:upstream?passing` loop. Connections are
//! spread round-robin; when the TCP connect to an instance fails, the next one is tried (each
//! instance at most once per connection). The TLS client verifies that the server presents
//! exactly the upstream's SPIFFE ID (see [`crate::tls`]): a healthy-looking instance that
//! presents another service's certificate is refused, not failed over to silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_policy::spiffe::SpiffeId;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::agent::Endpoint;
use crate::copy;
use crate::drain;
use crate::identity::Identity;
use crate::metrics::{ConnResult, Direction, Metrics};
use crate::serve::{self, Outcome};
use crate::tls;
use crate::tls_stream;
use crate::transport::SocketFactory;

/// One upstream listener's state.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub bind: SocketAddr,
    pub endpoints: watch::Receiver<Option<Arc<Vec<Endpoint>>>>,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(
        name: String,
        bind: SocketAddr,
        endpoints: watch::Receiver<Option<Arc<Vec<Endpoint>>>>,
    ) -> Self {
        Self {
            name,
            bind,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }
}

/// What outbound connections need.
#[derive(Debug)]
pub struct OutboundContext {
    pub identity: watch::Receiver<Option<Arc<Identity>>>,
    pub metrics: Arc<Metrics>,
    /// Opens the connects to the upstream's proxies.
    pub sockets: SocketFactory,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// The SNI sent to upstreams (Consul's `<svc>.<ns>.<dc>.internal.<trust-domain>`); servers do
/// not route on it, but it is a valid DNS name and names the intended service.
fn server_name(expected: &SpiffeId) -> ServerName<'static> {
    ServerName::try_from(format!(
        "{}.{}.{}.internal.{}",
        expected.service, expected.namespace, expected.datacenter, expected.trust_domain
    ))
    .unwrap_or_else(|_| ServerName::try_from("mesh.invalid").expect("static DNS name"))
}

/// Accepts on `listener` for `up` until draining starts (the accept loop is
/// [`serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    up: Arc<Upstream>,
    ctx: Arc<OutboundContext>,
    drain: drain::Watch,
) {
    let name = format!("upstream {}", up.name);
    let metrics = ctx.metrics.clone();
    let accepted = |(ctx, up): (Arc<OutboundContext>, Arc<Upstream>), tcp, client| async move {
        handle(&ctx, &up, tcp, client).await
    };
    serve::serve(
        listener,
        name,
        Direction::Outbound,
        metrics,
        drain,
        (ctx, up),
        accepted,
    )
    .await;
}

/// One accepted connection to `up`: healthy instance, mutual TLS, byte pump. Also used by
/// transparent mode ([`crate::transparent::outbound`]) once it knows the service.
pub(crate) async fn handle(
    ctx: &OutboundContext,
    up: &Upstream,
    client_tcp: TcpStream,
    client: SocketAddr,
) -> Outcome {
    // Socket options: set by `serve` (inherited from the listener).
    handle_stream(ctx, up, client_tcp, client).await
}

/// [`handle`] over any client-side stream (transparent mode wraps the app's socket to reset it
/// when the upstream refuses).
pub(crate) async fn handle_stream<C>(
    ctx: &OutboundContext,
    up: &Upstream,
    mut client_tcp: C,
    client: SocketAddr,
) -> Outcome
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(identity) = ctx.identity.borrow().clone() else {
        return ConnResult::NotReady.into();
    };
    let Some((expected, config)) = identity.client(&up.name) else {
        return ConnResult::NotReady.into();
    };
    let endpoints = ctx.endpoints_of(up);
    if endpoints.is_empty() {
        tracing::warn!(upstream = %up.name, "no healthy instance of the upstream");
        return ConnResult::NoEndpoints.into();
    }
    let start = up.next.fetch_add(1, Ordering::Relaxed);
    let mut server_tcp = None;
    for i in 0..endpoints.len() {
        let ep = &endpoints[(start + i) % endpoints.len()];
        match ctx
            .sockets
            .connect(&ep.host, ep.port, ctx.connect_timeout)
            .await
        {
            Ok(s) => {
                server_tcp = Some((s, ep));
                break;
            }
            Err(e) => {
                tracing::warn!(upstream = %up.name, instance = %ep.id, error = %e, "upstream instance unreachable; trying the next one");
            }
        }
    }
    let Some((server_tcp, ep)) = server_tcp else {
        return ConnResult::ConnectFailed.into();
    };

    let started = Instant::now();
    let handshake = tls_stream::connect(config, server_name(expected), server_tcp);
    let mut server = match tokio::time::timeout(ctx.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let kind = tls::handshake_failure_kind(&e);
            ctx.metrics.handshake_failed(Direction::Outbound, kind);
            tracing::warn!(
                upstream = %up.name, instance = %ep.id, addr = %format_args!("{}:{}", ep.host, ep.port),
                expected = %expected, kind, error = %e,
                "upstream TLS handshake failed; refusing the connection"
            );
            return ConnResult::HandshakeFailed.into();
        }
        Err(_) => {
            ctx.metrics.handshake_failed(Direction::Outbound, "timeout");
            tracing::warn!(upstream = %up.name, instance = %ep.id, "upstream TLS handshake timed out");
            return ConnResult::HandshakeFailed.into();
        }
    };
    ctx.metrics
        .handshake_ok(Direction::Outbound, started.elapsed().as_secs_f64());
    let pumped = copy::bidirectional(&mut client_tcp, &mut server).await;
    if let Err(e) = &pumped {
        tracing::debug!(upstream = %up.name, %client, error = %e, "outbound connection ended with an error");
    }
    pumped.into()
}

impl OutboundContext {
    fn endpoints_of(&self, up: &Upstream) -> Arc<Vec<Endpoint>> {
        up.endpoints.borrow().clone().unwrap_or_default()
    }
}
