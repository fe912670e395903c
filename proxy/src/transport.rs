//! Sockets: TCP options every proxied socket gets, bounded connects, and the
//! [`SocketFactory`] that decides in which network namespace the data path's sockets are
//! created.
//!
//! TCP_NODELAY everywhere: the proxy forwards whatever it reads at once, and Nagle's algorithm
//! would hold small writes (TLS records, request heads) for up to an RTT waiting for an ACK.
//! Keepalive finds peers that vanished without a FIN, so a dead connection does not hold a
//! drain or a connection-registry slot forever.
//!
//! Accepted connections get these options from their listener: Linux copies a listening
//! socket's TCP_NODELAY, keepalive settings and congestion control to every socket it accepts,
//! so [`tune_listener`] sets them once and [`tune_accepted`] adds only what the listener could
//! not give (five `setsockopt`s and a `getpeername` fewer per connection).
//!
//! A connection whose peer is on this host (a loopback address: the app behind a sidecar, or a
//! proxy on the same node) uses [`LOOPBACK_CONGESTION_CONTROL`] whatever the system default
//! is. Loopback never congests, and a pacing algorithm there only costs: BBR without the `fq`
//! qdisc paces in TCP itself, with a timer per burst, which on a 2-core machine cut a bulk
//! stream through two proxies to about two thirds and raised the proxies' CPU per GiB by
//! 40 % (`proxy_chain`, system default `bbr` vs `cubic`). Connections to other hosts keep
//! the operator's choice.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
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

/// Congestion control of connections with a loopback peer: Linux's default algorithm, which
/// never paces unless the qdisc does.
pub const LOOPBACK_CONGESTION_CONTROL: &str = "cubic";

/// Sets TCP_NODELAY and keepalive on `s`, and [`LOOPBACK_CONGESTION_CONTROL`] if its peer is
/// on this host.
pub fn tune(s: &TcpStream) -> Result<(), TransportError> {
    let peer = s.peer_addr().ok();
    let err = |source| TransportError::SocketOptions {
        peer: peer.map_or_else(|| "?".into(), |a| a.to_string()),
        source,
    };
    set_options(SockRef::from(s)).map_err(err)?;
    if peer.is_some_and(|a| a.ip().is_loopback()) {
        loopback_congestion_control(SockRef::from(s));
    }
    Ok(())
}

/// TCP_NODELAY and keepalive: what every proxied socket gets.
fn set_options(s: SockRef<'_>) -> io::Result<()> {
    s.set_tcp_nodelay(true)?;
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL),
    )
}

/// Not fatal: a kernel without the module keeps its default (and says so at debug level only,
/// as nothing is wrong with the connection).
fn loopback_congestion_control(s: SockRef<'_>) {
    if let Err(e) = s.set_tcp_congestion(LOOPBACK_CONGESTION_CONTROL.as_bytes()) {
        tracing::debug!(error = %e, "keeping the default congestion control on a loopback connection");
    }
}

/// What a listener hands down to the sockets it accepts ([`tune_listener`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerTuning {
    /// NODELAY and keepalive are set on the listener.
    options: bool,
    /// The listener is bound to a loopback address, so every peer is on this host and the
    /// listener carries [`LOOPBACK_CONGESTION_CONTROL`] too.
    loopback: bool,
}

/// Sets on `listener` the options its accepted sockets inherit ([`tune`]'s): NODELAY and
/// keepalive, and the loopback congestion control when it listens on a loopback address. A
/// listener that refuses them leaves the work to [`tune_accepted`], per connection.
pub fn tune_listener(listener: &TcpListener) -> ListenerTuning {
    let options = set_options(SockRef::from(listener))
        .inspect_err(|e| tracing::debug!(error = %e, "socket options on a listener; set per connection instead"))
        .is_ok();
    let loopback = options && listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    if loopback {
        loopback_congestion_control(SockRef::from(listener));
    }
    ListenerTuning { options, loopback }
}

/// Completes [`tune`] on a socket accepted from a listener set up by [`tune_listener`]: only
/// what it did not inherit (the congestion control of a loopback peer that reached a listener
/// on a wildcard or non-loopback address; everything when the listener refused the options).
pub fn tune_accepted(
    s: &TcpStream,
    peer: SocketAddr,
    from: ListenerTuning,
) -> Result<(), TransportError> {
    if !from.options {
        set_options(SockRef::from(s)).map_err(|source| TransportError::SocketOptions {
            peer: peer.to_string(),
            source,
        })?;
    }
    if peer.ip().is_loopback() && !from.loopback {
        loopback_congestion_control(SockRef::from(s));
    }
    Ok(())
}

/// Asks the kernel to hand over connections accepted on `listener` only once their first bytes
/// have arrived (TCP_DEFER_ACCEPT), waiting at most `wait` (whole seconds, at least one) before
/// handing over a connection that sent nothing (the kernel then resends its SYN-ACK and accepts
/// on the client's next ACK; a FIN counts as data, so a TCP health check that connects and
/// closes is accepted at once).
///
/// Only for listeners whose clients always speak first: the mutual-TLS inbound listener, where
/// the first bytes are a ClientHello. The proxy then wakes once per new connection instead of
/// twice (the accept, then the ClientHello), and a client that connects and stays silent costs
/// it nothing until `wait` has passed. Never for a plaintext listener: a server-speaks-first
/// protocol (SMTP, MySQL) would wait out `wait` before its greeting. Not fatal: without it
/// the listener only wakes once more per connection.
pub fn defer_accept(listener: &TcpListener, wait: Duration) {
    if let Err(e) = set_defer_accept(listener, defer_secs(wait)) {
        tracing::debug!(error = %e, "TCP_DEFER_ACCEPT refused; accepting without it");
    }
}

/// `wait` in whole seconds, rounded up, at least one (zero would turn the deferral off).
fn defer_secs(wait: Duration) -> nix::libc::c_int {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1);
    nix::libc::c_int::try_from(secs).unwrap_or(nix::libc::c_int::MAX)
}

#[expect(
    unsafe_code,
    reason = "setsockopt(TCP_DEFER_ACCEPT): neither socket2 nor nix wraps it"
)]
fn set_defer_accept(listener: &TcpListener, secs: nix::libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    // SAFETY: `fd` is the listener's open socket, borrowed for this call; the option value is
    // a `c_int` on this stack frame whose size is passed with it, as the option expects.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates TCP sockets in a network namespace other than the proxy's own. Transparent mode
/// implements it for the pod's namespace (a thread that entered it creates each socket); the
/// socket code here only ever sees this trait, never where the namespace came from.
pub trait MakeSocket: Send + Sync + fmt::Debug {
    /// A new non-blocking, close-on-exec TCP socket of `domain`.
    fn tcp_socket(&self, domain: Domain) -> io::Result<Socket>;
}

/// Transparent mode in a pod: inbound connections reach the local app *from the caller's
/// address* (issue 14 point 4; decided and set up in `transparent::source`). The socket code
/// only sees this trait.
pub trait CallerSource: Send + Sync + fmt::Debug {
    /// How to reach `host:port` from `client`'s address, for a connection that came in on
    /// `local`; `None`: connect as usual.
    fn plan(
        &self,
        client: SocketAddr,
        local: Option<SocketAddr>,
        host: &str,
        port: u16,
    ) -> Option<SourcePlan>;
    /// The planned connect failed (the connect is then made as usual).
    fn failed(&self, plan: &SourcePlan, error: &io::Error);
}

/// A connect from another address than the namespace's own ([`CallerSource::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePlan {
    /// Bound with `IP_TRANSPARENT` (the caller's address, port 0: its own port would collide
    /// with the inbound connection's 4-tuple only by chance, but 0 never does).
    pub bind: SocketAddr,
    pub target: SocketAddr,
    /// `SO_MARK`, which routes the app's replies back to this socket.
    pub mark: u32,
}

/// Bound on a connect from the caller's address before falling back: the app is on this
/// pod's loopback, so only missing routing (or a full accept queue) makes it wait, and one
/// SYN retransmission (1 s) fits.
const CALLER_SOURCE_TIMEOUT: Duration = Duration::from_secs(2);

fn bind_err(addr: SocketAddr) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Bind {
        addr: addr.to_string(),
        source,
    }
}

/// A listening socket on `addr` from `socket` (made by the caller, maybe in another namespace).
fn listen(socket: io::Result<Socket>, addr: SocketAddr, v6only: bool) -> io::Result<TcpListener> {
    let s = socket?;
    if v6only {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Opens the data path's sockets (listeners, connects to other proxies and to the local app),
/// as ztunnel's `SocketFactory`: handed to every listener and connection by value, so which
/// namespace a socket lands in is decided once, where the proxy is wired, and never read from
/// a global. The default opens sockets in the proxy's own namespace.
#[derive(Debug, Clone, Default)]
pub struct SocketFactory {
    /// Where sockets are created; `None`: here, with tokio's own constructors.
    namespace: Option<Arc<dyn MakeSocket>>,
    /// Connects to the app from the caller's address (with [`Self::for_caller`]).
    caller_source: Option<Arc<dyn CallerSource>>,
    /// The inbound connection these connects are made for: its peer and local address.
    caller: Option<(SocketAddr, Option<SocketAddr>)>,
}

impl SocketFactory {
    /// Sockets in the proxy's own network namespace (static mode, agent mode without
    /// `--netns`, and the admin listener always).
    pub fn host() -> Self {
        Self::default()
    }

    /// Sockets created by `maker` (an in-pod namespace).
    pub fn in_namespace(maker: Arc<dyn MakeSocket>) -> Self {
        Self {
            namespace: Some(maker),
            ..Self::default()
        }
    }

    /// This factory, whose connects for a caller ([`Self::for_caller`]) follow `source`.
    pub fn with_caller_source(&self, source: Arc<dyn CallerSource>) -> Self {
        Self {
            caller_source: Some(source),
            ..self.clone()
        }
    }

    /// This factory for the connects an inbound connection from `client` (accepted on
    /// `local`) makes to the app: from `client`'s address where the caller source allows it.
    pub fn for_caller(&self, client: SocketAddr, local: Option<SocketAddr>) -> Self {
        Self {
            caller: Some((client, local)),
            ..self.clone()
        }
    }

    /// Connects to `host:port` within `timeout` and tunes the socket.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, TransportError> {
        if let Some(s) = self.connect_as_caller(host, port, timeout).await {
            tune(&s)?;
            return Ok(s);
        }
        let target = || format!("{host}:{port}");
        let s = tokio::time::timeout(timeout, self.connect_raw(host, port))
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

    /// The connect from the caller's address, if planned and it works (else the caller
    /// source hears why and the usual connect follows).
    async fn connect_as_caller(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Option<TcpStream> {
        let (source, (client, local)) = (self.caller_source.as_ref()?, self.caller?);
        let plan = source.plan(client, local, host, port)?;
        let bound = timeout.min(CALLER_SOURCE_TIMEOUT);
        let r = match tokio::time::timeout(bound, self.connect_from(&plan)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {bound:?}"),
            )),
        };
        r.map_err(|e| source.failed(&plan, &e)).ok()
    }

    /// A transparent (`IP_TRANSPARENT`), marked socket bound to `plan.bind`, connected to
    /// `plan.target`.
    async fn connect_from(&self, plan: &SourcePlan) -> io::Result<TcpStream> {
        let domain = Domain::for_address(plan.target);
        let s = match &self.namespace {
            Some(maker) => maker.tcp_socket(domain)?,
            None => Socket::new(
                domain,
                Type::STREAM.nonblocking().cloexec(),
                Some(Protocol::TCP),
            )?,
        };
        match plan.bind {
            SocketAddr::V4(_) => s.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => s.set_ip_transparent_v6(true)?,
        }
        s.set_mark(plan.mark)?;
        s.bind(&plan.bind.into())?;
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(s))
            .connect(plan.target)
            .await
    }

    /// Binds a listener on `addr`.
    pub async fn bind(&self, addr: SocketAddr) -> Result<TcpListener, TransportError> {
        let Some(maker) = &self.namespace else {
            return TcpListener::bind(addr).await.map_err(bind_err(addr));
        };
        listen(maker.tcp_socket(Domain::for_address(addr)), addr, false).map_err(bind_err(addr))
    }

    /// Binds an IPv6-only listener on `addr` (an IPv6 address): transparent mode's IPv6
    /// inbound listener on `[::]`, next to the IPv4 one on the same port.
    pub async fn bind_v6only(&self, addr: SocketAddr) -> Result<TcpListener, TransportError> {
        let socket = match &self.namespace {
            Some(maker) => maker.tcp_socket(Domain::IPV6),
            None => Socket::new(Domain::IPV6, socket2::Type::STREAM, None),
        };
        listen(socket, addr, true).map_err(bind_err(addr))
    }

    /// `TcpStream::connect`, from a socket the namespace's maker created if there is one.
    async fn connect_raw(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let Some(maker) = &self.namespace else {
            return TcpStream::connect((host, port)).await;
        };
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let s = maker.tcp_socket(Domain::for_address(addr))?;
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(s))
            .connect(addr)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available() -> String {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn loopback_connections_use_the_loopback_congestion_control() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (client, (accepted, _)) = (client.unwrap(), accepted.unwrap());
        let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .unwrap()
            .trim()
            .to_string();
        let expected = if available()
            .split_whitespace()
            .any(|a| a == LOOPBACK_CONGESTION_CONTROL)
        {
            LOOPBACK_CONGESTION_CONTROL.to_string()
        } else {
            system
        };
        for s in [&client, &accepted] {
            tune(s).unwrap();
            let cc = SockRef::from(s).tcp_congestion().unwrap();
            let cc = String::from_utf8_lossy(&cc);
            assert_eq!(cc.trim_end_matches('\0'), expected);
            assert!(s.nodelay().unwrap());
        }
    }

    /// What `tune_listener` relies on: Linux copies NODELAY, the keepalive settings and the
    /// congestion control of a listener to the sockets it accepts. If a kernel stopped doing
    /// so, accepted connections would silently lose them; this says so.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_options() {
        let expected_cc = available()
            .split_whitespace()
            .any(|a| a == LOOPBACK_CONGESTION_CONTROL)
            .then_some(LOOPBACK_CONGESTION_CONTROL);
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            let listener = TcpListener::bind(bind).await.unwrap();
            let tuning = tune_listener(&listener);
            assert_eq!(
                tuning,
                ListenerTuning {
                    options: true,
                    loopback: bind.starts_with("127.")
                }
            );
            let port = listener.local_addr().unwrap().port();
            let (client, accepted) =
                tokio::join!(TcpStream::connect(("127.0.0.1", port)), listener.accept());
            let (_client, (accepted, peer)) = (client.unwrap(), accepted.unwrap());
            tune_accepted(&accepted, peer, tuning).unwrap();
            let s = SockRef::from(&accepted);
            assert!(s.tcp_nodelay().unwrap(), "{bind}: NODELAY");
            assert!(s.keepalive().unwrap(), "{bind}: SO_KEEPALIVE");
            assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE, "{bind}");
            assert_eq!(
                s.tcp_keepalive_interval().unwrap(),
                KEEPALIVE_INTERVAL,
                "{bind}"
            );
            if let Some(cc) = expected_cc {
                let got = s.tcp_congestion().unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&got).trim_end_matches('\0'),
                    cc,
                    "{bind}"
                );
            }
        }
    }

    /// A deferred listener hands over a connection with its first bytes, or with its FIN,
    /// never a connection that has sent nothing yet.
    #[tokio::test]
    async fn a_deferred_listener_hands_over_connections_with_their_first_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        defer_accept(&listener, Duration::from_secs(30));
        let addr = listener.local_addr().unwrap();

        // Connected from the client's side, silent: not handed over.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(
            early.is_err(),
            "a silent connection was accepted: {early:?}"
        );
        // Its first bytes hand it over, and they are there to read at once.
        silent.write_all(b"hello").await.unwrap();
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted after its first bytes")
            .unwrap();
        let mut buf = [0u8; 5];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        // A client that connects and closes (a TCP health check) is handed over with its EOF.
        let closed = TcpStream::connect(addr).await.unwrap();
        drop(closed);
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted after its FIN")
            .unwrap();
        assert_eq!(accepted.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn the_deferral_is_whole_seconds_and_at_least_one() {
        for (wait, secs) in [
            (Duration::ZERO, 1),
            (Duration::from_millis(200), 1),
            (Duration::from_secs(5), 5),
            (Duration::from_millis(5_001), 6),
            (Duration::MAX, nix::libc::c_int::MAX),
        ] {
            assert_eq!(defer_secs(wait), secs, "{wait:?}");
        }
    }
}
