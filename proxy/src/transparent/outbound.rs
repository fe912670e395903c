//! The outbound listener of transparent mode: every connection the eBPF programs redirected
//! lands here. Its original destination comes back from the kernel map keyed by the client's
//! address; [`super::route::decide`] picks mesh mTLS (through the same code as upstream
//! listeners, [`crate::outbound`]), pass-through, or refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::catalog::MeshIndex;
use super::loader::Attached;
use super::route::{self, Route};
use crate::agent::{self, AgentClient, Endpoint};
use crate::copy;
use crate::drain;
use crate::metrics::{ConnResult, Direction};
use crate::outbound::{OutboundContext, Upstream};
use crate::serve::{self, Outcome};

/// State shared by the outbound listener's connections.
pub struct TransparentOutbound {
    pub attached: Arc<Attached>,
    pub index: watch::Receiver<Option<Arc<MeshIndex>>>,
    /// Its identity's client configurations cover every mesh service of the index.
    pub ctx: Arc<OutboundContext>,
    pub mesh_destinations_only: bool,
    pub client: AgentClient,
    pub control: tokio::runtime::Handle,
    pub listen: SocketAddr,
    upstreams: Mutex<HashMap<Arc<str>, Arc<Upstream>>>,
}

impl TransparentOutbound {
    pub fn new(
        attached: Arc<Attached>,
        index: watch::Receiver<Option<Arc<MeshIndex>>>,
        ctx: Arc<OutboundContext>,
        mesh_destinations_only: bool,
        client: AgentClient,
        control: tokio::runtime::Handle,
        listen: SocketAddr,
    ) -> Self {
        Self {
            attached,
            index,
            ctx,
            mesh_destinations_only,
            client,
            control,
            listen,
            upstreams: Mutex::new(HashMap::new()),
        }
    }

    /// The upstream of `service`, its healthy-instance watch started on first use.
    fn upstream(&self, service: &Arc<str>) -> Arc<Upstream> {
        let mut map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(service.clone())
            .or_insert_with(|| {
                let (tx, rx) = watch::channel::<Option<Arc<Vec<Endpoint>>>>(None);
                let path = format!("/v1/health/connect/{service}?passing");
                let p = path.clone();
                let _enter = self.control.enter();
                agent::spawn_watch(
                    self.client.clone(),
                    "transparent upstream instances",
                    path,
                    move |_, body| agent::decode_endpoints(&p, body),
                    tx,
                );
                Arc::new(Upstream::new(service.to_string(), self.listen, rx))
            })
            .clone()
    }
}

/// Accepts redirected connections until draining starts (the accept loop is
/// [`serve::serve`]).
pub async fn serve(listener: TcpListener, t: Arc<TransparentOutbound>, drain: drain::Watch) {
    let metrics = t.ctx.metrics.clone();
    serve::serve(
        listener,
        "transparent outbound",
        Direction::Outbound,
        metrics,
        drain,
        t,
        handle,
    )
    .await;
}

/// Waits (bounded) until `rx` holds a value that satisfies `ok`.
async fn wait_until<T>(
    rx: &watch::Receiver<T>,
    limit: Duration,
    ok: impl FnMut(&T) -> bool,
) -> bool {
    let mut rx = rx.clone();
    matches!(
        tokio::time::timeout(limit, rx.wait_for(ok)).await,
        Ok(Ok(_))
    )
}

async fn handle(t: Arc<TransparentOutbound>, tcp: TcpStream, peer: SocketAddr) -> Outcome {
    let recorded = t.attached.original_destination(peer);
    let Some(orig) = recorded.or_else(|| nat_original_destination(&tcp)) else {
        tracing::warn!(%peer, "redirected connection without a recorded original destination; closing");
        return ConnResult::Error.into();
    };
    let limit = t.ctx.connect_timeout;
    if !wait_until(&t.index, limit, Option::is_some).await {
        return ConnResult::NotReady.into();
    }
    let index = t.index.borrow().clone().unwrap_or_default();
    match route::decide(orig, &index, t.mesh_destinations_only) {
        Route::Mesh { service } => {
            tracing::info!(%peer, %orig, %service, "transparent: mesh destination; mutual TLS to its sidecar");
            let up = t.upstream(&service);
            let has_client = |i: &Option<Arc<crate::identity::Identity>>| {
                i.as_ref().is_some_and(|i| i.client(&service).is_some())
            };
            if !wait_until(&t.ctx.identity, limit, has_client).await {
                return ConnResult::NotReady.into();
            }
            if !wait_until(&up.endpoints, limit, Option::is_some).await {
                return ConnResult::NoEndpoints.into();
            }
            crate::outbound::handle_stream(&t.ctx, &up, ResetUnanswered::new(tcp, peer, orig), peer)
                .await
        }
        Route::PassThrough => {
            tracing::info!(%peer, %orig, "transparent: not a mesh destination; passing through");
            pass_through(&t, tcp, orig).await
        }
        Route::Refuse => {
            tracing::info!(%peer, %orig, "transparent: not a mesh destination; refused (--mesh-destinations-only)");
            // Reset rather than FIN, so the client sees a refusal, not an empty answer.
            let _ = SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            drop(tcp);
            ConnResult::Denied.into()
        }
    }
}

async fn pass_through(t: &TransparentOutbound, mut tcp: TcpStream, orig: SocketAddr) -> Outcome {
    // The proxy's own cgroup is excluded from redirection, so this connect goes out as is.
    let mut server = match t
        .ctx
        .sockets
        .connect(&orig.ip().to_string(), orig.port(), t.ctx.connect_timeout)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%orig, error = %e, "pass-through connect failed");
            let _ = SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            return ConnResult::ConnectFailed.into();
        }
    };
    copy::bidirectional(&mut tcp, &mut server).await.into()
}

/// The original destination that netfilter's NAT (an iptables `REDIRECT` rule) recorded for
/// the connection, for `--outbound-capture external`. `None` when the connection was not
/// NATed (the kernel answers ENOENT).
fn nat_original_destination(tcp: &TcpStream) -> Option<SocketAddr> {
    let a = nix::sys::socket::getsockopt(tcp, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some(SocketAddr::new(
        std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
        u16::from_be(a.sin_port),
    ))
}

/// The app's side of a mesh connection, reset rather than closed when the mesh refused it.
///
/// Acceptance 2 of issue #5 (and what Istio shows for an RBAC deny): the app's connection is
/// reset, not ended in order, when the destination's proxy refuses it. The destination's proxy
/// denies after the TLS handshake by closing without a byte (TLS 1.3 lets the client finish
/// its handshake before the server has checked the client certificate), so the sign of a
/// refusal seen from here is: the upstream ended before any byte came back. Then, instead of
/// passing the end on as a FIN, [`AsyncWrite::poll_shutdown`] sets `SO_LINGER 0` and fails,
/// which aborts the byte pump; closing the socket then sends a RST. The same holds when the
/// connection is abandoned earlier (no instance, connect or handshake failure): dropping a
/// socket that never carried a byte back resets it. Once a byte came back the stream behaves
/// as a plain `TcpStream` (half-close included).
struct ResetUnanswered {
    tcp: TcpStream,
    answered: bool,
    /// The reset is armed (and was logged) already.
    reset: bool,
    /// For the one log line: the app's address and the destination it asked for.
    peer: SocketAddr,
    orig: SocketAddr,
}

impl ResetUnanswered {
    fn new(tcp: TcpStream, peer: SocketAddr, orig: SocketAddr) -> Self {
        Self {
            tcp,
            answered: false,
            reset: false,
            peer,
            orig,
        }
    }

    /// Arms the reset (SO_LINGER 0: the close sends a RST) and says why, once.
    fn arm_reset(&mut self, why: &str) {
        if self.reset {
            return;
        }
        self.reset = true;
        tracing::info!(
            peer = %self.peer, orig = %self.orig,
            "transparent: {why}; resetting the app's connection"
        );
        if let Err(e) = SockRef::from(&self.tcp).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(error = %e, "SO_LINGER 0 on the app's socket");
        }
    }
}

impl Drop for ResetUnanswered {
    fn drop(&mut self) {
        if !self.answered {
            // The destination's proxy reset the connection (a refusal can arrive as a RST as
            // well as a clean close), or it was abandoned before any answer.
            self.arm_reset("the connection to the destination ended before any answer");
        }
    }
}

impl AsyncRead for ResetUnanswered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetUnanswered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.answered = true;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.answered = true;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.answered {
            self.arm_reset(
                "the destination's proxy ended the connection before answering (refused)",
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the upstream ended the connection before answering (refused by the mesh); resetting the app's connection",
            )));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
