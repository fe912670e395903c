//! The rest of a request body the proxy answers itself (403, 502) instead of forwarding, on
//! HTTP/1.1 (issue 10 point 4).
//!
//! HTTP/1.1 frames requests back to back on one connection, so the next request starts only
//! after the last byte of this one's body. hyper, when the service drops an unread body, reads
//! what is already buffered and otherwise stops reading and closes after the response, but
//! that response does not say `Connection: close`: the client believes the connection is
//! still usable and its next request on it fails. RFC 9112 §9.6 and RFC 9110 §15.5 leave the
//! server two honest choices, and nginx (`ngx_http_discard_request_body`) and Envoy (local
//! replies before end of request) use both, by size:
//!
//! - a small rest is read and discarded before the response is sent, and the connection stays
//!   open ([`Leftover::Drained`]);
//! - a large or slow one, a declared length over the bound, or a client waiting for
//!   `100 Continue` (it has not sent the body, and reading would invite it to), is not read:
//!   the response carries `Connection: close` ([`Leftover::Close`]), hyper closes after it,
//!   and [`super::linger`] keeps reading until the client has seen it, so the close is a FIN,
//!   never a reset that could destroy the response.
//!
//! The bounds: [`DRAIN_MAX_BYTES`] (64 KiB) is what a typical form post or JSON body is, and
//! within the first TCP receive window on loopback and LANs, so draining it costs about as
//! much as the response; swallowing more is worse than a reconnect (TLS resumption makes that
//! one round trip). [`DRAIN_MAX_TIME`] (1 s) bounds how much a slow client can delay its own
//! 403 and how long it can hold the connection's task. HTTP/2 needs none of this: the
//! response ends the stream and hyper resets the rest of the request stream (`NO_ERROR`,
//! RFC 9113 §8.1) without touching the connection's other streams.

use std::time::Duration;

use http::header::{CONNECTION, EXPECT, HeaderValue};
use http::{HeaderMap, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;

/// Largest rest of a body read and discarded to keep the connection.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// Longest the response waits for the rest of the body.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(1);

/// Bounds of [`drain`] (the constants above, smaller in unit tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DRAIN_MAX_BYTES,
            max_time: DRAIN_MAX_TIME,
        }
    }
}

/// Why the connection closes after a response the proxy wrote itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the request declares {remaining} more body bytes, over the {limit}-byte drain bound")]
    DeclaredTooLarge { remaining: u64, limit: u64 },
    #[error("more than {limit} body bytes were still arriving")]
    TooLarge { limit: u64 },
    #[error("the body did not end within {limit:?}")]
    TooSlow { limit: Duration },
    #[error("the client waits for 100 Continue before sending its body")]
    ExpectContinue,
    #[error("reading the request body failed: {message}")]
    Read { message: String },
    #[error("the request body was handed to the application and may be unread")]
    Forwarded,
}

/// What became of the rest of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// Nothing was left, or it was read within the bounds: the connection stays usable.
    Drained { bytes: u64 },
    /// The response must say `Connection: close`.
    Close(CloseReason),
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and discards the rest of `body` within `limits`.
pub async fn drain<B>(mut body: B, headers: &HeaderMap, limits: Limits) -> Leftover
where
    B: HttpBody + Unpin,
    B::Error: std::fmt::Display,
{
    if body.is_end_stream() {
        return Leftover::Drained { bytes: 0 };
    }
    if expects_continue(headers) {
        return Leftover::Close(CloseReason::ExpectContinue);
    }
    if let Some(remaining) = body.size_hint().exact()
        && remaining > limits.max_bytes
    {
        return Leftover::Close(CloseReason::DeclaredTooLarge {
            remaining,
            limit: limits.max_bytes,
        });
    }
    let read = async {
        let mut bytes = 0u64;
        // Bounded by `max_bytes` (every data frame counts) and by the timeout around it.
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CloseReason::Read {
                message: e.to_string(),
            })?;
            if let Some(d) = frame.data_ref() {
                bytes += bytes::Buf::remaining(d) as u64;
                if bytes > limits.max_bytes {
                    return Err(CloseReason::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
            }
        }
        Ok(bytes)
    };
    match tokio::time::timeout(limits.max_time, read).await {
        Ok(Ok(bytes)) => Leftover::Drained { bytes },
        Ok(Err(reason)) => Leftover::Close(reason),
        Err(_) => Leftover::Close(CloseReason::TooSlow {
            limit: limits.max_time,
        }),
    }
}

/// Adds `Connection: close` to `resp` when `leftover` says so.
pub fn announce<B>(resp: &mut Response<B>, leftover: &Leftover) {
    if matches!(leftover, Leftover::Close(_)) {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// `resp`, written by the proxy instead of forwarding `req`: on HTTP/1.x the rest of the body
/// is drained within the bounds, or the response announces the close.
pub async fn answer_unforwarded<B, R>(req: Request<B>, mut resp: Response<R>) -> Response<R>
where
    B: HttpBody + Unpin,
    B::Error: std::fmt::Display,
{
    if req.version() >= Version::HTTP_2 {
        return resp;
    }
    let (parts, body) = req.into_parts();
    let leftover = drain(body, &parts.headers, Limits::default()).await;
    if let Leftover::Close(reason) = &leftover {
        tracing::debug!(method = %parts.method, path = %parts.uri.path(), %reason, "closing the connection after the response");
    }
    announce(&mut resp, &leftover);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Frame;

    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

    fn limits() -> Limits {
        Limits {
            max_bytes: 16,
            max_time: Duration::from_millis(200),
        }
    }

    /// A body fed by the test through a channel (nothing sent yet = still arriving).
    struct ChannelBody(tokio::sync::mpsc::Receiver<Chunk>);

    impl HttpBody for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Chunk>> {
            self.0.poll_recv(cx)
        }
    }

    fn channel_body() -> (tokio::sync::mpsc::Sender<Chunk>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (tx, ChannelBody(rx))
    }

    #[tokio::test]
    async fn an_ended_or_small_body_is_drained() {
        let h = HeaderMap::new();
        let empty = Full::new(Bytes::new());
        assert_eq!(
            drain(empty, &h, limits()).await,
            Leftover::Drained { bytes: 0 }
        );
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello "))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"world"))))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(
            drain(body, &h, limits()).await,
            Leftover::Drained { bytes: 11 }
        );
    }

    #[tokio::test]
    async fn a_large_slow_or_expecting_body_closes() {
        let h = HeaderMap::new();
        let big = Full::new(Bytes::from(vec![0u8; 17]));
        assert_eq!(
            drain(big, &h, limits()).await,
            Leftover::Close(CloseReason::DeclaredTooLarge {
                remaining: 17,
                limit: 16
            })
        );
        let (tx, body) = channel_body();
        for _ in 0..3 {
            tx.send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
                .await
                .unwrap();
        }
        assert_eq!(
            drain(body, &h, limits()).await,
            Leftover::Close(CloseReason::TooLarge { limit: 16 })
        );
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        // `tx` stays open: the rest never comes.
        assert_eq!(
            drain(body, &h, limits()).await,
            Leftover::Close(CloseReason::TooSlow {
                limit: Duration::from_millis(200)
            })
        );
        drop(tx);
        let mut h = HeaderMap::new();
        h.insert(EXPECT, HeaderValue::from_static("100-Continue"));
        let (_tx, body) = channel_body();
        assert_eq!(
            drain(body, &h, limits()).await,
            Leftover::Close(CloseReason::ExpectContinue)
        );
    }

    #[test]
    fn close_is_announced_only_when_needed() {
        let mut r = Response::new(());
        announce(&mut r, &Leftover::Drained { bytes: 3 });
        assert!(r.headers().get(CONNECTION).is_none());
        announce(&mut r, &Leftover::Close(CloseReason::ExpectContinue));
        assert_eq!(r.headers()[CONNECTION], "close");
    }
}
