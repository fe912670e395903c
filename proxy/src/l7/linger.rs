//! Lingering close of an HTTP/1.1 connection the proxy closes while the client may still be
//! sending (RFC 9112 §9.6, nginx's `lingering_close`).
//!
//! When the server closes a TCP socket with unread bytes in its receive buffer, the kernel
//! answers with a reset instead of a FIN, and a reset that reaches the client before it has
//! read the response destroys that response in the client's buffer. That is the case after a
//! `Connection: close` answer to a request whose body is still arriving (see [`super::body`]).
//! So when hyper shuts the connection down cleanly (response written, close_notify and FIN
//! sent), [`Io`] hands the stream back to [`super::server::serve`], which reads and discards
//! whatever still arrives until the client closes or [`LINGER_TIME`] passes, and only then
//! drops it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// How long a closed connection keeps reading. The client stops sending once it reads the
/// `Connection: close` response, one round trip after it was sent; the bytes already in
/// flight are at most a few socket buffers. 2 s covers both with a wide margin on a loaded
/// machine, and bounds what a client that never stops can cost.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// The connection's stream as hyper sees it; returned through [`Io::new`]'s receiver after a
/// clean shutdown.
pub struct Io<I> {
    inner: Option<I>,
    shut_down: bool,
    back: Option<oneshot::Sender<I>>,
}

impl<I> Io<I> {
    /// Wraps `inner`; the receiver gets it back when it is dropped after a clean shutdown.
    pub fn new(inner: I) -> (Self, oneshot::Receiver<I>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner: Some(inner),
                shut_down: false,
                back: Some(tx),
            },
            rx,
        )
    }

    fn inner(&mut self) -> io::Result<&mut I> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<I> Drop for Io<I> {
    fn drop(&mut self) {
        if self.shut_down
            && let (Some(inner), Some(back)) = (self.inner.take(), self.back.take())
        {
            // The receiver is gone when the connection's task was cancelled: drop at once.
            let _ = back.send(inner);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Io<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.inner()?).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Io<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(self.inner()?).poll_shutdown(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.shut_down = true;
        }
        r
    }
}

/// Reads and discards from `io` until EOF, an error, or `limit`; returns the bytes discarded.
pub async fn linger<I: AsyncRead + Unpin>(mut io: I, limit: Duration) -> u64 {
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded by `limit`.
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
            discarded += n as u64;
        }
    })
    .await;
    discarded
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn returned_after_a_clean_shutdown_only() {
        let (a, _b) = tokio::io::duplex(64);
        let (io, rx) = Io::new(a);
        drop(io);
        assert!(rx.await.is_err(), "never shut down: not handed back");

        let (a, mut b) = tokio::io::duplex(64);
        let (mut io, rx) = Io::new(a);
        io.write_all(b"response").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let back = rx.await.expect("handed back after shutdown");
        // The client still sends, then closes: everything is read, then EOF ends the linger.
        b.write_all(b"rest of the body").await.unwrap();
        drop(b);
        assert_eq!(linger(back, Duration::from_secs(5)).await, 16);
    }
}
