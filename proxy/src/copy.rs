//! The byte pump: copies both directions between two streams in one future, with half-close.
//!
//! When one side reads EOF, the pump shuts down the *write* half of the other side (a TCP FIN,
//! or a TLS `close_notify` followed by FIN) and keeps copying the other direction until it ends
//! too; that is what lets a client send a request, half-close, and still read the whole reply.
//!
//! Each direction owns one buffer that starts at [`INITIAL_BUF`] and grows to [`MAX_BUF`] when
//! reads keep filling it (bulk transfers), as ztunnel does; a connection that only exchanges
//! small messages never holds a large buffer. Nothing is allocated per read or per byte. Both
//! directions are polled from the same task, so neither stream needs splitting (TLS streams
//! cannot be split without a lock).
//!
//! Latency and throughput pull in different directions, so the pump decides per read:
//!
//! * a short read (a request, a reply) is written out at once and, once the reader has nothing
//!   more, flushed: a message never waits for more data;
//! * a read of at least [`BULK_READ`] bytes (a full TLS record's plaintext, or a plain read
//!   that filled a large part of the buffer) means a bulk transfer: the pump keeps reading
//!   into the same buffer while the reader has data ready, then writes it in one call. From a
//!   TLS stream that turns one 16 KiB write per record into one write of up to [`MAX_BUF`], and
//!   towards a TLS stream it hands rustls enough plaintext for full-size records.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First buffer size of each direction: one page, so an idle or interactive connection costs
/// little (1,000 held connections hold 2,000 of these per proxy).
pub const INITIAL_BUF: usize = 4 * 1024;

/// Largest buffer size of each direction.
pub const MAX_BUF: usize = 256 * 1024;

/// Reads that must fill the buffer in a row before it grows.
const FULL_READS_TO_GROW: u8 = 4;

/// A read at least this large marks a bulk transfer: keep reading before writing. One TLS
/// record carries at most 16 KiB of plaintext (RFC 8446 §5.1), so a TLS stream returns exactly
/// this much per read while a bulk transfer is running.
pub const BULK_READ: usize = 16 * 1024;

/// Bytes copied in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Errors of the pump, naming the direction and side.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading from the {side} side failed after {a_to_b} bytes a→b, {b_to_a} bytes b→a")]
    Read {
        side: Side,
        a_to_b: u64,
        b_to_a: u64,
        #[source]
        source: io::Error,
    },
    #[error("writing to the {side} side failed after {a_to_b} bytes a→b, {b_to_a} bytes b→a")]
    Write {
        side: Side,
        a_to_b: u64,
        b_to_a: u64,
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    /// What was copied before the error.
    pub fn transferred(&self) -> Transferred {
        match *self {
            CopyError::Read { a_to_b, b_to_a, .. } | CopyError::Write { a_to_b, b_to_a, .. } => {
                Transferred { a_to_b, b_to_a }
            }
        }
    }
}

/// Which stream an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::A => "a",
            Side::B => "b",
        })
    }
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

impl HalfError {
    /// The pump's error for a failure of the direction that reads from `reader` (and writes
    /// to the other side), after `copied`.
    fn reading_from(self, reader: Side, copied: Transferred) -> CopyError {
        let Transferred { a_to_b, b_to_a } = copied;
        match self {
            HalfError::Read(source) => CopyError::Read {
                side: reader,
                a_to_b,
                b_to_a,
                source,
            },
            HalfError::Write(source) => CopyError::Write {
                side: reader.other(),
                a_to_b,
                b_to_a,
                source,
            },
        }
    }
}

/// One direction: reads from one stream into `buf`, writes `buf[pos..filled]` to the other.
struct Half {
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// Size of the last read (0 before the first).
    last_read: usize,
    read_eof: bool,
    need_flush: bool,
    done: bool,
    full_reads: u8,
    copied: u64,
}

impl Half {
    fn new() -> Self {
        Self {
            buf: vec![0; INITIAL_BUF],
            pos: 0,
            filled: 0,
            last_read: 0,
            read_eof: false,
            need_flush: false,
            done: false,
            full_reads: 0,
            copied: 0,
        }
    }

    /// [`Half::poll_copy`] until it is done, then `Ready(Ok)` on every later poll.
    fn poll_to_end<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut R>,
        writer: Pin<&mut W>,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if !self.done {
            ready!(self.poll_copy(cx, reader, writer))?;
            self.done = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), HalfError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.filled && !self.read_eof {
                self.grow_if_busy();
                self.pos = 0;
                self.filled = 0;
            }
            // Read: at least once when the buffer is empty, and on while a bulk transfer keeps
            // the reader supplied and the buffer has room for another full read.
            while !self.read_eof && self.filled < self.buf.len() {
                let pending_data = self.pos < self.filled;
                if pending_data && !self.keep_reading() {
                    break;
                }
                let mut rb = ReadBuf::new(&mut self.buf[self.filled..]);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_eof = true;
                        } else {
                            self.filled += n;
                            self.last_read = n;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(HalfError::Read(e))),
                    Poll::Pending if pending_data => break,
                    Poll::Pending => {
                        // Nothing more to read now: push out what was written (TLS buffers a
                        // record until flushed).
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(HalfError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            if self.filled == self.buf.len() && self.pos == 0 {
                self.full_reads = self.full_reads.saturating_add(1);
            } else if self.pos == 0 && self.filled > 0 {
                self.full_reads = 0;
            }
            while self.pos < self.filled {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.filled])
                )
                .map_err(HalfError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(HalfError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.read_eof {
                // Half-close: the peer of `writer` sees EOF, the other direction keeps going.
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(HalfError::Write)?;
                self.need_flush = false;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Whether to read more before writing what is buffered: only in a bulk transfer, and
    /// only while another full read fits.
    fn keep_reading(&self) -> bool {
        self.last_read >= BULK_READ && self.buf.len() - self.filled >= BULK_READ
    }

    /// Grows the buffer after a run of reads that filled it (only between reads, when empty).
    fn grow_if_busy(&mut self) {
        if self.full_reads >= FULL_READS_TO_GROW && self.buf.len() < MAX_BUF {
            let new = (self.buf.len() * 4).min(MAX_BUF);
            self.buf.resize(new, 0);
            self.full_reads = 0;
        }
    }
}

/// Copies `a → b` and `b → a` until both directions reached EOF (each followed by a shutdown
/// of the other side's write half), or either failed.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> Result<Transferred, CopyError>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Half::new();
    let mut ba = Half::new();
    poll_fn(|cx| {
        let copied = |ab: &Half, ba: &Half| Transferred {
            a_to_b: ab.copied,
            b_to_a: ba.copied,
        };
        if let Poll::Ready(Err(e)) = ab.poll_to_end(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
            return Poll::Ready(Err(e.reading_from(Side::A, copied(&ab, &ba))));
        }
        if let Poll::Ready(Err(e)) = ba.poll_to_end(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
            return Poll::Ready(Err(e.reading_from(Side::B, copied(&ab, &ba))));
        }
        if ab.done && ba.done {
            Poll::Ready(Ok(copied(&ab, &ba)))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn half_close_keeps_the_other_direction() {
        // client <-> (c1, p1) pump (p2, s1) <-> server
        let (mut client, mut p1) = duplex(64 * 1024);
        let (mut p2, mut server) = duplex(64 * 1024);
        let pump = tokio::spawn(async move { bidirectional(&mut p1, &mut p2).await });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "server sees the data then EOF");
        // The reverse direction still works after the client's half-close.
        server.write_all(b"reply after half-close").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after half-close");
        let t = pump.await.unwrap().unwrap();
        assert_eq!(t.a_to_b, 7);
        assert_eq!(t.b_to_a, 22);
    }

    #[tokio::test]
    async fn large_transfer_grows_buffer_and_keeps_bytes() {
        let (mut client, mut p1) = duplex(1 << 20);
        let (mut p2, mut server) = duplex(1 << 20);
        let pump = tokio::spawn(async move { bidirectional(&mut p1, &mut p2).await });
        let data: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&data).await.unwrap();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        server.shutdown().await.unwrap();
        assert!(got == expected, "payload corrupted");
        assert!(writer.await.unwrap().is_empty());
        let t = pump.await.unwrap().unwrap();
        assert_eq!(t.a_to_b, expected.len() as u64);
    }

    /// A scripted stream: each read hands out the next chunk (at most what was asked for),
    /// then `Pending` once they are used up (or EOF when `eof`); writes and flushes are
    /// recorded. Nothing ever wakes the task: the tests poll once and look at what happened.
    #[derive(Default)]
    struct Script {
        chunks: std::collections::VecDeque<Vec<u8>>,
        eof: bool,
        writes: Vec<usize>,
        flushes: usize,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.chunks.pop_front() {
                Some(mut c) => {
                    if c.len() > buf.remaining() {
                        let rest = c.split_off(buf.remaining());
                        self.chunks.push_front(rest);
                    }
                    buf.put_slice(&c);
                    Poll::Ready(Ok(()))
                }
                None if self.eof => Poll::Ready(Ok(())),
                None => Poll::Pending,
            }
        }
    }

    impl tokio::io::AsyncWrite for Script {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Polls the pump between `a` and `b` once.
    fn poll_once(a: &mut Script, b: &mut Script) -> Poll<Result<Transferred, CopyError>> {
        let mut pump = std::pin::pin!(bidirectional(a, b));
        pump.as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_short_message_is_written_and_flushed_at_once() {
        let mut a = Script {
            chunks: [vec![7u8; 64]].into(),
            ..Default::default()
        };
        let mut b = Script::default();
        assert!(poll_once(&mut a, &mut b).is_pending());
        assert_eq!(b.writes, [64], "written without waiting for more");
        assert!(b.flushes >= 1, "flushed once the reader had nothing more");
    }

    #[test]
    fn a_bulk_stream_is_coalesced_into_large_writes() {
        // 4 MiB arriving as 16 KiB reads, as a TLS stream returns one record at a time.
        let mut a = Script {
            chunks: (0..256).map(|_| vec![1u8; BULK_READ]).collect(),
            ..Default::default()
        };
        let mut b = Script::default();
        assert!(poll_once(&mut a, &mut b).is_pending());
        assert_eq!(
            b.writes.iter().sum::<usize>(),
            256 * BULK_READ,
            "every byte"
        );
        assert_eq!(*b.writes.iter().max().unwrap(), MAX_BUF, "{:?}", b.writes);
        assert!(
            b.writes.len() < 40,
            "one write per buffer, not per read: {} writes",
            b.writes.len()
        );
        // Small buffers until the stream proved to be bulk.
        assert_eq!(b.writes[0], INITIAL_BUF);
    }

    #[test]
    fn eof_after_data_writes_then_shuts_down() {
        let mut a = Script {
            chunks: [vec![1u8; 100], vec![2u8; 100]].into(),
            eof: true,
            ..Default::default()
        };
        let mut b = Script {
            eof: true,
            ..Default::default()
        };
        match poll_once(&mut a, &mut b) {
            Poll::Ready(Ok(t)) => assert_eq!((t.a_to_b, t.b_to_a), (200, 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_side_that_failed() {
        let t = Transferred {
            a_to_b: 3,
            b_to_a: 4,
        };
        let e = || io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(matches!(
            HalfError::Read(e()).reading_from(Side::B, t),
            CopyError::Read {
                side: Side::B,
                a_to_b: 3,
                b_to_a: 4,
                ..
            }
        ));
        assert!(matches!(
            HalfError::Write(e()).reading_from(Side::A, t),
            CopyError::Write { side: Side::B, .. }
        ));
        // Through the pump: `b`'s peer is gone, so forwarding `a`'s bytes to it fails.
        let mut a = Script {
            chunks: [vec![1u8; 10]].into(),
            ..Default::default()
        };
        let (mut b, peer) = duplex(64);
        drop(peer);
        let mut pump = std::pin::pin!(bidirectional(&mut a, &mut b));
        match pump
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(Err(CopyError::Write { side: Side::B, .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn buffer_growth_is_bounded() {
        let mut h = Half::new();
        for _ in 0..10 {
            h.full_reads = FULL_READS_TO_GROW;
            h.grow_if_busy();
        }
        assert_eq!(h.buf.len(), MAX_BUF);
    }
}
