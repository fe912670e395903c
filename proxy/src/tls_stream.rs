//! A TLS stream on rustls's unbuffered API, over buffers of our own.
//!
//! Why not tokio-rustls: buffered rustls copies every received record three times in user
//! space (ciphertext from the socket buffer into its deframer buffer, the decrypted payload
//! into a new `Vec`, that into the reader's buffer) and copies every sent byte into its own
//! queue before writing. Here the socket is read straight into [`TlsStream`]'s incoming
//! buffer, records are decrypted in place there, and each record's payload is copied once,
//! into the caller's `ReadBuf` (rustls 0.23 still moves each decrypted payload into a `Vec`
//! of its own; that copy is inside rustls). Outgoing plaintext is encrypted straight into our
//! outgoing buffer, up to [`MAX_WRITE`] bytes (sixteen full records) per call, which then
//! leaves in one `write`.
//!
//! The handshake runs on the same state machine ([`accept`], [`connect`]); callers bound it
//! with their handshake timeout. Everything after it (NewSessionTicket, KeyUpdate and the
//! reply it requests) is rustls's own processing: this module only moves bytes. Semantics match
//! tokio-rustls: `close_notify` then EOF on read, a TCP FIN without `close_notify` is an
//! `UnexpectedEof` error, `poll_shutdown` sends `close_notify` then FIN, and a rustls error
//! is an `InvalidData` I/O error wrapping the [`rustls::Error`] (what
//! [`crate::tls::handshake_failure_kind`] reads), after the alert rustls queued for the peer
//! has been offered to the socket once.

use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First size of the incoming buffer: a handshake flight or a few small messages.
const IN_MIN: usize = 8 * 1024;

/// Largest incoming buffer: one socket read carries up to sixteen full records.
const IN_MAX: usize = crate::copy::MAX_BUF;

/// Most plaintext encrypted per write call: sixteen full records, one socket write.
pub const MAX_WRITE: usize = crate::copy::MAX_BUF;

/// Largest plaintext of one record (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;

/// Upper bound on what one record adds to its plaintext (header, content type, AEAD tag, TLS
/// 1.2 explicit nonce): sizes the outgoing buffer; rustls checks the exact size.
const RECORD_OVERHEAD: usize = 64;

/// State-machine steps per call before yielding to the runtime.
const STEP_BUDGET: usize = 4096;

/// The two sides of rustls's unbuffered API behind one interface.
pub trait Session: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;

    /// [`UnbufferedConnectionCommon::process_tls_records`] of this side.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Session for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Session for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// Server side of a mutual-TLS connection.
pub type ServerStream<S> = TlsStream<S, UnbufferedServerConnection>;

/// Client side of a mutual-TLS connection.
pub type ClientStream<S> = TlsStream<S, UnbufferedClientConnection>;

/// Runs the server handshake on `io` (the caller bounds it in time).
pub async fn accept<S>(config: Arc<ServerConfig>, io: S) -> io::Result<ServerStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    TlsStream::new(io, conn).handshake(LastFlight::Send).await
}

/// Runs the client handshake to `name` on `io` (the caller bounds it in time).
///
/// It returns with the client's last flight (its Certificate, CertificateVerify and Finished)
/// still queued: the flight leaves with the first write, flush or read, so a client that speaks
/// first sends it in the same segment as its first bytes, and the server wakes once for both.
/// Any use of the stream sends it; a stream dropped unused never completes the server's
/// handshake, as if it had closed a moment earlier.
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: S,
) -> io::Result<ClientStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    TlsStream::new(io, conn).handshake(LastFlight::Queue).await
}

/// What a handshake does with the records it encodes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastFlight {
    /// Written before the handshake returns.
    Send,
    /// Left in the outgoing buffer for the stream's first write, flush or read.
    Queue,
}

/// The bytes `buf[start..end]` of a buffer that is filled at its end and drained from its
/// start.
#[derive(Debug, Default)]
struct Window {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn pending_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    fn tail_len(&self) -> usize {
        self.buf.len() - self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes at least `n` bytes of room at the end: moves the pending bytes to the front,
    /// then grows.
    fn reserve_tail(&mut self, n: usize) {
        if self.tail_len() >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.tail_len() < n {
            self.buf.resize(self.end + n, 0);
        }
    }

    fn append(&mut self, data: &[u8]) {
        self.reserve_tail(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }
}

/// Size of `plaintext` bytes once sealed into records (an upper bound).
fn sealed_len(plaintext: usize) -> usize {
    plaintext + plaintext.div_ceil(MAX_RECORD).max(1) * RECORD_OVERHEAD
}

/// Most plaintext whose records fit in `room` bytes.
fn plaintext_fitting(room: usize) -> usize {
    let full = room / (MAX_RECORD + RECORD_OVERHEAD);
    let rest = (room % (MAX_RECORD + RECORD_OVERHEAD)).saturating_sub(RECORD_OVERHEAD);
    full * MAX_RECORD + rest
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn unexpected_eof(during: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("peer closed the connection {during} without sending TLS close_notify"),
    )
}

/// What a [`TlsStream::process`] run is for, besides moving records along.
enum Job<'a> {
    /// Deliver received plaintext.
    Read,
    /// Encrypt this plaintext once the session may send it.
    Write(&'a [u8]),
    /// Queue `close_notify`.
    Close,
    /// Queue a KeyUpdate.
    KeyUpdate,
    /// Nothing beyond processing (handshake, draining).
    None,
}

/// Why a [`TlsStream::process`] run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing left to process in the incoming buffer (the session may send data).
    Idle,
    /// The handshake needs more bytes from the peer.
    NeedInput,
    /// The read destination cannot take another full record.
    Full,
    /// Both sides sent `close_notify`.
    Closed,
    /// [`STEP_BUDGET`] used up; more may be ready.
    Budget,
}

struct Progress {
    /// Plaintext bytes written to the read destination or set aside.
    delivered: usize,
    /// Plaintext bytes of the write job that were encrypted.
    written: usize,
    stop: Stop,
}

/// Copies `payload` into `dst` and sets aside what does not fit (in order: after anything set
/// aside already).
fn deliver(payload: &[u8], dst: Option<&mut ReadBuf<'_>>, plain: &mut Window) {
    let direct = match dst {
        Some(dst) if plain.is_empty() => {
            let n = dst.remaining().min(payload.len());
            dst.put_slice(&payload[..n]);
            n
        }
        _ => 0,
    };
    if direct < payload.len() {
        plain.append(&payload[direct..]);
    }
}

/// A TLS session over `io` with our own buffers; `AsyncRead + AsyncWrite` of the plaintext.
pub struct TlsStream<S, C> {
    io: S,
    conn: C,
    /// Ciphertext read from `io` and not yet processed.
    incoming: Window,
    /// Records encrypted or encoded and not yet written to `io`.
    outgoing: Window,
    /// Decrypted plaintext the reader has not taken yet (only when a record did not fit).
    plain: Window,
    /// The session failed; every later call returns this.
    failed: Option<rustls::Error>,
    peer_closed: bool,
    sent_close: bool,
    /// `io` reached EOF.
    eof: bool,
}

impl<S, C> std::fmt::Debug for TlsStream<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plain", &self.plain.len())
            .field("peer_closed", &self.peer_closed)
            .field("sent_close", &self.sent_close)
            .finish_non_exhaustive()
    }
}

impl<S, C> TlsStream<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Session,
{
    fn new(io: S, conn: C) -> Self {
        Self {
            io,
            conn,
            incoming: Window::default(),
            outgoing: Window::default(),
            plain: Window::default(),
            failed: None,
            peer_closed: false,
            sent_close: false,
            eof: false,
        }
    }

    /// The session: peer certificates, negotiated suite and ALPN, handshake kind.
    pub fn session(&self) -> &CommonState {
        &self.conn
    }

    /// The transport under the session.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Queues a TLS 1.3 KeyUpdate (asking the peer to update too); it leaves with the next
    /// write or flush.
    pub fn refresh_traffic_keys(&mut self) -> io::Result<()> {
        self.process(Job::KeyUpdate, None).map(drop)
    }

    async fn handshake(mut self, last: LastFlight) -> io::Result<Self> {
        std::future::poll_fn(|cx| self.poll_handshake(cx, last)).await?;
        Ok(self)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>, last: LastFlight) -> Poll<io::Result<()>> {
        loop {
            let progress = match self.process(Job::None, None) {
                Ok(p) => p,
                Err(e) => return Poll::Ready(Err(self.offer_alert(cx, e))),
            };
            let done = !self.conn.is_handshaking();
            if done && last == LastFlight::Queue {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx))?;
            if done {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_more_input(cx, progress.stop, "during the handshake"))?;
        }
    }

    /// What a handshake or read loop does when a processing run did not finish its job: yield
    /// if the step budget ran out, fail at EOF (`during` names the phase), else read more from
    /// the socket (noting EOF, which the next round reports).
    fn poll_more_input(
        &mut self,
        cx: &mut Context<'_>,
        stop: Stop,
        during: &str,
    ) -> Poll<io::Result<()>> {
        if stop == Stop::Budget {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.eof {
            return Poll::Ready(Err(unexpected_eof(during)));
        }
        if ready!(self.poll_fill(cx))? == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Tries once to send what rustls queued (the alert for `e`), then returns `e`.
    fn offer_alert(&mut self, cx: &mut Context<'_>, e: io::Error) -> io::Error {
        let _ = self.poll_write_out(cx);
        e
    }

    /// Runs the state machine over the incoming buffer: decrypts records (delivering their
    /// plaintext to `dst`, or setting it aside), encodes what rustls wants to send into the
    /// outgoing buffer, and does `job` once the session allows it.
    fn process(
        &mut self,
        mut job: Job<'_>,
        mut dst: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Progress> {
        if let Some(e) = &self.failed {
            return Err(tls_error(e.clone()));
        }
        let mut progress = Progress {
            delivered: 0,
            written: 0,
            stop: Stop::Budget,
        };
        for _ in 0..STEP_BUDGET {
            if progress.delivered > 0 && dst.as_ref().is_some_and(|d| d.remaining() < MAX_RECORD) {
                progress.stop = Stop::Full;
                return Ok(progress);
            }
            let Self {
                conn,
                incoming,
                outgoing,
                plain,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(incoming.pending_mut());
            let mut failure = None;
            let mut stop = None;
            match state {
                Err(e) => failure = Some(e),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                progress.delivered += record.payload.len();
                                deliver(record.payload, dst.as_deref_mut(), plain);
                            }
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let n = match encode.encode(outgoing.tail()) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            outgoing.reserve_tail(required_size);
                            encode.encode(outgoing.tail())
                        }
                        r => r,
                    }
                    .map_err(|e| io::Error::other(e.to_string()))?;
                    outgoing.end += n;
                }
                // The encoded records stay in `outgoing`, in order, until written.
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::BlockedHandshake) => stop = Some(Stop::NeedInput),
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    stop = Some(Stop::Closed);
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match std::mem::replace(&mut job, Job::None) {
                        Job::Write(data) => {
                            outgoing.reserve_tail(sealed_len(data.len()));
                            traffic
                                .encrypt(data, outgoing.tail())
                                .map(|n| outgoing.end += n)
                                .map_err(encrypt_error)?;
                            progress.written = data.len();
                            stop = Some(Stop::Idle);
                        }
                        Job::Close => {
                            outgoing.reserve_tail(RECORD_OVERHEAD);
                            traffic
                                .queue_close_notify(outgoing.tail())
                                .map(|n| outgoing.end += n)
                                .map_err(encrypt_error)?;
                            self.sent_close = true;
                            stop = Some(Stop::Idle);
                        }
                        // Continue: the next state encodes the KeyUpdate.
                        Job::KeyUpdate => {
                            if let Err(e) = traffic.refresh_traffic_keys() {
                                failure = Some(e);
                            }
                        }
                        Job::Read | Job::None => stop = Some(Stop::Idle),
                    }
                }
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    // Never enabled in our configurations (`max_early_data_size` is 0).
                    failure = Some(rustls::Error::General("unexpected early data".into()));
                }
                Ok(other) => {
                    failure = Some(rustls::Error::General(format!(
                        "unsupported TLS connection state {other:?}"
                    )));
                }
            }
            self.incoming.consume(discard);
            if let Some(e) = failure {
                return Err(self.fail(e));
            }
            if let Some(stop) = stop {
                progress.stop = stop;
                return Ok(progress);
            }
        }
        Ok(progress)
    }

    /// Records the failure and encodes the alert rustls queued for the peer. rustls is not
    /// asked for anything after that: processing the input again would re-run what failed.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        self.failed = Some(e.clone());
        let UnbufferedStatus { discard, state } = self.conn.process(self.incoming.pending_mut());
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            self.outgoing.reserve_tail(RECORD_OVERHEAD * 4);
            if let Ok(n) = alert.encode(self.outgoing.tail()) {
                self.outgoing.end += n;
            }
        }
        self.incoming.consume(discard);
        tls_error(e)
    }

    /// Reads the socket into the incoming buffer's free end; `Ok(0)` at EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let inc = &mut self.incoming;
        if inc.buf.is_empty() {
            inc.buf.resize(IN_MIN, 0);
        }
        // A partial record at the end is moved to the front only when the free end is short.
        if inc.start > 0 && inc.tail_len() < inc.buf.len() / 4 {
            inc.reserve_tail(inc.buf.len() - inc.len());
        }
        if inc.tail_len() == 0 {
            if inc.buf.len() >= IN_MAX {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than the receive buffer",
                )));
            }
            inc.buf.resize((inc.buf.len() * 2).min(IN_MAX), 0);
        }
        let room = inc.tail_len();
        let mut rb = ReadBuf::new(inc.tail());
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        inc.end += n;
        if n == room && inc.buf.len() < IN_MAX {
            // The socket had at least this much: a bulk stream. Read more at once next time.
            inc.buf.resize((inc.buf.len() * 2).min(IN_MAX), 0);
        }
        Poll::Ready(Ok(n))
    }

    /// Writes the outgoing buffer to the socket until it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(e.to_string())
}

impl<S, C> AsyncRead for TlsStream<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Session + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = dst.remaining().min(this.plain.len());
                dst.put_slice(&this.plain.pending()[..n]);
                this.plain.consume(n);
                return Poll::Ready(Ok(()));
            }
            if dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = dst.filled().len();
            let progress = match this.process(Job::Read, Some(dst)) {
                Ok(p) => p,
                Err(e) => return Poll::Ready(Err(this.offer_alert(cx, e))),
            };
            // Whatever reading made rustls send (a KeyUpdate reply, an alert) leaves now.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            if dst.filled().len() > before || !this.plain.is_empty() || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_more_input(cx, progress.stop, "mid-stream"))?;
        }
    }
}

impl<S, C> AsyncWrite for TlsStream<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Session + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.sent_close {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        let want = data.len().min(MAX_WRITE);
        // Encrypt behind what is pending while a full record fits. Short of room, a short
        // pending run (the client's queued last flight, a record the socket did not take) gets
        // room, so it leaves in the same segment as this data; a long one is sent first.
        let room = sealed_len(want.min(MAX_RECORD));
        if this.outgoing.tail_len() < room {
            if this.outgoing.len() < MAX_RECORD {
                this.outgoing.reserve_tail(room);
            } else {
                ready!(this.poll_write_out(cx))?;
            }
        }
        let chunk = if this.outgoing.is_empty() {
            want
        } else {
            want.min(plaintext_fitting(this.outgoing.tail_len()))
        };
        let progress = match this.process(Job::Write(&data[..chunk]), None) {
            Ok(p) => p,
            Err(e) => return Poll::Ready(Err(this.offer_alert(cx, e))),
        };
        if progress.written == 0 {
            return match progress.stop {
                Stop::Budget => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Stop::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                _ => Poll::Ready(Err(io::Error::other(
                    "TLS session cannot send application data",
                ))),
            };
        }
        // Start sending now; what the socket does not take goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(progress.written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close && this.failed.is_none() {
            let progress = this.process(Job::Close, None)?;
            if !this.sent_close {
                if progress.stop == Stop::Budget {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // Closed or handshaking: nothing to send close_notify on.
                this.sent_close = true;
            }
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
