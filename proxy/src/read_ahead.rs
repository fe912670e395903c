//! A read-ahead buffer between a TLS session and its socket.
//!
//! rustls pulls ciphertext from the socket at most 4 KiB at a time (`read_tls` sizes its
//! deframer buffer as "what is buffered + 4 KiB"), so a full 16 KiB record costs four or five
//! `read` system calls. [`ReadAhead`] sits under the TLS stream and reads the socket in one
//! call of up to [`MAX`] bytes, then serves rustls's small reads from memory: on a bulk stream
//! that is one system call per several records instead of several per record.
//!
//! The buffer starts at [`MIN`] bytes and doubles (up to [`MAX`]) only after reads that filled
//! it, so an interactive or idle connection never holds a large one; a read that asks for at
//! least the buffer's size goes straight to the socket. Writes pass through untouched
//! (vectored included: rustls writes several records with one `writev`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First buffer size: more than rustls's 4 KiB reads, so they are served from it.
pub const MIN: usize = 8 * 1024;

/// Largest buffer size: sixteen full TLS records, as much as the byte pump writes at once
/// ([`crate::copy::MAX_BUF`]).
pub const MAX: usize = crate::copy::MAX_BUF;

/// An `AsyncRead + AsyncWrite` stream whose reads go through a growing buffer.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Allocated on the first buffered read; `buf.len()` is the current capacity.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.pos
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.end {
            let capacity = this.buf.len().max(MIN);
            if out.remaining() >= capacity {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; MIN];
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            (this.pos, this.end) = (0, n);
            if n == this.buf.len() && n < MAX {
                // The socket had at least this much: a bulk stream. Grow for the next fill.
                this.buf.resize((n * 2).min(MAX), 0);
            }
        }
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let (mut w, r) = duplex(8 * MAX);
        let data: Vec<u8> = (0..4 * MAX as u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut ra = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        let mut max_buffered = 0;
        loop {
            let n = ra.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            max_buffered = max_buffered.max(ra.buffered());
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == data, "same bytes in the same order");
        // After the first fills the buffer grew to MAX: one read from the pipe served many.
        assert!(max_buffered >= MAX - 4096, "{max_buffered}");
        assert_eq!(ra.buf.len(), MAX);
    }

    #[tokio::test]
    async fn an_interactive_stream_keeps_the_small_buffer() {
        let (mut w, r) = duplex(1 << 16);
        let mut ra = ReadAhead::new(r);
        assert!(ra.buf.is_empty(), "nothing allocated before the first read");
        for i in 0..50u8 {
            w.write_all(&[i; 100]).await.unwrap();
            let mut b = [0u8; 4096];
            let n = ra.read(&mut b).await.unwrap();
            assert_eq!(&b[..n], &[i; 100][..]);
        }
        assert_eq!(ra.buf.len(), MIN);
        // Writes go straight through.
        let (mut a, b) = duplex(64);
        let mut ra = ReadAhead::new(b);
        ra.write_all(b"pong").await.unwrap();
        let mut back = [0u8; 4];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
    }

    #[tokio::test]
    async fn large_reads_bypass_the_buffer() {
        let (mut w, r) = duplex(1 << 16);
        w.write_all(&[9u8; 30_000]).await.unwrap();
        let mut ra = ReadAhead::new(r);
        let mut big = vec![0u8; MIN];
        let n = ra.read(&mut big).await.unwrap();
        assert_eq!(n, MIN);
        assert!(ra.buf.is_empty(), "read directly into the caller's buffer");
    }
}
