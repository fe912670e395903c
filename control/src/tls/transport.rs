//! The RPC port's connections, both ways: [`incoming`] accepts (and, with TLS, completes the
//! handshake of) each connection before tonic sees it, attaching who the peer is
//! ([`RpcPeer`], read by `tls::peer::Admit`); [`channel`] dials a server, over TLS when the
//! process has it, verifying the server's name.
//!
//! Handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`] and at most
//! [`MAX_HANDSHAKES`] at once, so a peer that opens connections and sends nothing holds no one
//! else up and cannot grow the server without bound. A refused handshake (plaintext, no
//! certificate, another CA, a workload certificate) is logged with the peer's address and the
//! reason, and the connection is closed before any gRPC is read.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use super::peer::{Peer, RpcPeer};
use super::rpc::RpcTls;

/// Longest a TLS handshake on the RPC port may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for tonic.
const BACKLOG: usize = 64;

/// Handshakes in progress at once; beyond it the accept loop waits (connections queue in the
/// kernel's backlog), so a flood of connections that never finish their handshake holds at
/// most this many tasks and buffers, each for at most [`HANDSHAKE_TIMEOUT`].
pub const MAX_HANDSHAKES: usize = 256;

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted RPC connection and who is at the other end.
pub struct RpcStream {
    io: Io,
    peer: RpcPeer,
}

impl Connected for RpcStream {
    type ConnectInfo = RpcPeer;

    fn connect_info(&self) -> RpcPeer {
        self.peer.clone()
    }
}

impl AsyncRead for RpcStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RpcStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener`, handshaken when `tls` is given; ends when the receiver is
/// dropped (the gRPC server stopped).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<RpcTls>>,
) -> ReceiverStream<io::Result<RpcStream>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            // A permit per handshake in flight, taken before accepting the next connection.
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "accepting an RPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    let stream = RpcStream {
                        io: Io::Plain(tcp),
                        peer: RpcPeer {
                            remote: Some(remote),
                            peer: Peer::Plaintext,
                        },
                    };
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (tls, tx) = (tls.clone(), tx.clone());
                    tokio::spawn(async move {
                        let stream = handshake(&tls, tcp, remote).await;
                        drop(permit);
                        if let Some(stream) = stream {
                            let _ = tx.send(Ok(stream)).await;
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The server side of one handshake; `None` (logged) when refused.
async fn handshake(tls: &RpcTls, tcp: TcpStream, remote: SocketAddr) -> Option<RpcStream> {
    let config = tls.server_config()?;
    let refused = |reason: String| {
        tracing::warn!(peer = %remote, %reason, "refused an RPC connection");
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(tcp),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            refused(format!("TLS handshake failed: {e}"));
            return None;
        }
        Err(_) => {
            refused(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"));
            return None;
        }
    };
    let peer = match tls.classify(stream.get_ref().1.peer_certificates()) {
        Ok(p) => p,
        Err(e) => {
            refused(e.to_string());
            return None;
        }
    };
    tracing::debug!(peer = %remote, ?peer, "RPC connection");
    Some(RpcStream {
        io: Io::Tls(Box::new(stream)),
        peer: RpcPeer {
            remote: Some(remote),
            peer,
        },
    })
}

/// A lazily connected channel to the server at `endpoint`, over TLS (verifying the name
/// `server.<dc>.<domain>`) when `tls` is given.
pub fn channel(endpoint: &Endpoint, tls: Option<&Arc<RpcTls>>) -> Channel {
    let Some(tls) = tls else {
        return endpoint.connect_lazy();
    };
    let connector = TlsConnector::from(tls.client_config());
    let name = tls.server_name();
    let dial = tower::service_fn(move |uri: Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?
                .to_string();
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector_lazy(dial)
}
