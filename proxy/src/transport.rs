//! Sockets: TCP options every proxied socket gets, and bounded connects.
//!
//! TCP_NODELAY everywhere: the proxy forwards whatever it reads at once, and Nagle's algorithm
//! would hold small writes (TLS records, request heads) for up to an RTT waiting for an ACK.
//! Keepalive finds peers that vanished without a FIN, so a dead connection does not hold a
//! drain or a connection-registry slot forever.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

/// Socket errors, naming the peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("setting socket options on a connection with {peer} failed")]
    SocketOptions {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {target} failed")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {target} timed out after {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    #[error("binding {addr} failed")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
}

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Interval between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Sets TCP_NODELAY and keepalive on `s`.
pub fn tune(s: &TcpStream) -> Result<(), TransportError> {
    let err = |source| TransportError::SocketOptions {
        peer: s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into()),
        source,
    };
    s.set_nodelay(true).map_err(err)?;
    SockRef::from(s)
        .set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL),
        )
        .map_err(err)?;
    Ok(())
}

/// Connects to `host:port` within `timeout` and tunes the socket.
pub async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, TransportError> {
    let target = || format!("{host}:{port}");
    let s = tokio::time::timeout(timeout, connect_in_netns(host, port))
        .await
        .map_err(|_| TransportError::ConnectTimeout {
            target: target(),
            after: timeout,
        })?
        .map_err(|source| TransportError::Connect {
            target: target(),
            source,
        })?;
    tune(&s)?;
    Ok(s)
}

/// Binds a data-path listener: in the pod's network namespace when transparent mode installed
/// one ([`crate::transparent::netns`]), else here.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    let Some(ns) = crate::transparent::netns::installed() else {
        return bind_host(addr).await;
    };
    let listen = || -> io::Result<TcpListener> {
        let s = ns.socket(socket2::Domain::for_address(addr))?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    listen().map_err(|source| TransportError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Binds a listener in the proxy's own network namespace (the admin port).
pub async fn bind_host(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// `TcpStream::connect`, from a socket created in the installed pod namespace if any.
async fn connect_in_netns(host: &str, port: u16) -> io::Result<TcpStream> {
    let Some(ns) = crate::transparent::netns::installed() else {
        return TcpStream::connect((host, port)).await;
    };
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let s = ns.socket(socket2::Domain::for_address(addr))?;
    tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(s))
        .connect(addr)
        .await
}
