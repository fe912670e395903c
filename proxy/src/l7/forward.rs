//! The leg to the local application: one client connection per inbound connection, opened on
//! the first allowed request and reopened when the application closes it.
//!
//! `http` speaks HTTP/1.1 (with upgrades enabled, so a 101 hands over the connection);
//! `http2`/`grpc` speak HTTP/2 cleartext with prior knowledge (h2c, RFC 9113 §3.3), which is
//! what gRPC servers listen for. One connection per inbound connection keeps the mapping
//! simple and fair: HTTP/1.1 requests of one inbound connection are sequential anyway (hyper's
//! server dispatches them in order, pipelined ones included), and HTTP/2 streams multiplex
//! over the one h2c connection the way they did over the mesh.
//!
//! The client connection is not spawned as a task of its own: [`drive`] polls it inside the
//! inbound connection's task, next to hyper's server, so a request and its response cross no
//! task boundary (a wake-up and possibly a hop to another worker thread saved per request).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Mutex, mpsc};

use crate::transport::{self, SocketFactory};

/// Errors forwarding a request to the application.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to the local application {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: transport::TransportError,
    },
    #[error("HTTP handshake with the local application failed")]
    Handshake(#[source] hyper::Error),
    #[error("the local application failed the request")]
    Request(#[source] hyper::Error),
}

enum Sender {
    H1(http1::SendRequest<Incoming>),
    H2(http2::SendRequest<Incoming>),
}

/// A client connection's future, run by [`drive`].
type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The client side towards the application, for one inbound connection.
pub struct Forwarder {
    host: String,
    port: u16,
    h2: bool,
    sockets: SocketFactory,
    connect_timeout: Duration,
    sender: Mutex<Option<Sender>>,
    conns: mpsc::UnboundedSender<ConnFuture>,
}

/// Runs the client connections a [`Forwarder`] opens, in the caller's task; returns once the
/// forwarder is gone and its last connection has finished. Poll it next to the server (it
/// must be polled for the forwarder's requests to make progress).
pub async fn drive(mut rx: mpsc::UnboundedReceiver<ConnFuture>) {
    let mut current: Option<ConnFuture> = None;
    loop {
        let Some(mut c) = current.take() else {
            match rx.recv().await {
                Some(c) => current = Some(c),
                None => return,
            }
            continue;
        };
        tokio::select! {
            () = &mut c => {}
            next = rx.recv() => match next {
                // A replacement arrives only once the old connection failed; let it finish on
                // its own.
                Some(n) => {
                    tokio::spawn(c);
                    current = Some(n);
                }
                None => {
                    c.await;
                    return;
                }
            },
        }
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("h2", &self.h2)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// The forwarder and the future that runs its connections (see [`drive`]).
    pub fn new(
        host: String,
        port: u16,
        h2: bool,
        sockets: SocketFactory,
        connect_timeout: Duration,
    ) -> (Self, impl Future<Output = ()> + Send + use<>) {
        let (conns, rx) = mpsc::unbounded_channel();
        let f = Self {
            host,
            port,
            h2,
            sockets,
            connect_timeout,
            sender: Mutex::new(None),
            conns,
        };
        (f, drive(rx))
    }

    fn run(&self, conn: ConnFuture) {
        if let Err(e) = self.conns.send(conn) {
            // The driver is gone only when the inbound connection is: nothing left to serve.
            drop(e);
        }
    }

    async fn connect(&self) -> Result<Sender, ForwardError> {
        let tcp = self
            .sockets
            .connect(&self.host, self.port, self.connect_timeout)
            .await
            .map_err(|source| ForwardError::Connect {
                host: self.host.clone(),
                port: self.port,
                source,
            })?;
        let io = TokioIo::new(tcp);
        if self.h2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(ForwardError::Handshake)?;
            self.run(Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "h2c connection to the application ended");
                }
            }));
            Ok(Sender::H2(send))
        } else {
            let (send, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ForwardError::Handshake)?;
            self.run(Box::pin(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "HTTP/1.1 connection to the application ended");
                }
            }));
            Ok(Sender::H1(send))
        }
    }

    /// Sends `req` and returns the response head (the body streams afterwards).
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ForwardError> {
        let mut slot = self.sender.lock().await;
        // A connection the application closed (or that an upgrade consumed) is replaced.
        let usable = match slot.as_mut() {
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *slot = Some(self.connect().await?);
        }
        match slot.as_mut().expect("connected above") {
            // HTTP/1.1: the lock is held until the response head arrives; requests of one
            // inbound connection are sequential anyway.
            Sender::H1(s) => s.send_request(req).await.map_err(ForwardError::Request),
            Sender::H2(s) => {
                // HTTP/2 streams run concurrently: release the lock before waiting.
                let mut s = s.clone();
                drop(slot);
                s.send_request(req).await.map_err(ForwardError::Request)
            }
        }
    }
}
