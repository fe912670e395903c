//! The one accept loop of every data-path listener: the public mTLS listener, each upstream
//! listener and transparent mode's outbound listeners (as linkerd2-proxy's
//! `linkerd/app/core/src/serve.rs` serves every proxy listener).
//!
//! It exists so that what every listener must do the same way is written once: accept until
//! draining starts, back off after a failed accept instead of spinning, hold a drain guard and
//! the open-connection gauge for the whole life of each connection, and count how each one
//! ended. A listener differs only in the per-connection handler it passes in.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::copy::{CopyError, Transferred};
use crate::drain;
use crate::metrics::{ConnResult, Direction, Metrics};
use crate::transport;

/// Pause after a failed accept. Accept errors are typically EMFILE/ENFILE: retrying at once
/// would spin on the same error until a connection closes.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How one connection ended and the bytes it carried: what a listener's handler returns and
/// [`serve`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub result: ConnResult,
    pub transferred: Transferred,
}

impl From<ConnResult> for Outcome {
    /// A connection that ended before the byte pump ran: nothing transferred.
    fn from(result: ConnResult) -> Self {
        Self {
            result,
            transferred: Transferred::default(),
        }
    }
}

impl From<Result<Transferred, CopyError>> for Outcome {
    /// The byte pump's end: `Ok` with all it copied, or `Error` with what it copied first.
    fn from(pumped: Result<Transferred, CopyError>) -> Self {
        match pumped {
            Ok(transferred) => Self {
                result: ConnResult::Ok,
                transferred,
            },
            Err(e) => Self {
                result: ConnResult::Error,
                transferred: e.transferred(),
            },
        }
    }
}

/// Accepts on `listener` until `drain` signals, running `handle` with a clone of `ctx` for
/// each connection in a task of its own, its socket options set (`transport::tune_listener`
/// once, `transport::tune_accepted` per connection). `name` names the listener in log lines;
/// `direction` labels its metrics.
pub async fn serve<N, C, H, F>(
    listener: TcpListener,
    name: N,
    direction: Direction,
    metrics: Arc<Metrics>,
    mut drain: drain::Watch,
    ctx: C,
    handle: H,
) where
    N: fmt::Display,
    C: Clone,
    H: Fn(C, TcpStream, SocketAddr) -> F,
    F: Future<Output = Outcome> + Send + 'static,
{
    let tuning = transport::tune_listener(&listener);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => break,
        };
        match accepted {
            Ok((tcp, client)) => {
                if let Err(e) = transport::tune_accepted(&tcp, client, tuning) {
                    tracing::debug!(%client, error = %e, "socket options");
                }
                let guard = drain.guard();
                let metrics = metrics.clone();
                let conn = handle(ctx.clone(), tcp, client);
                tokio::spawn(async move {
                    let _guard = guard;
                    let _active = metrics.open(direction);
                    let Outcome {
                        result,
                        transferred,
                    } = conn.await;
                    let Transferred { a_to_b, b_to_a } = transferred;
                    metrics.connection_closed(direction, result, a_to_b, b_to_a);
                });
            }
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    tracing::info!(
        listener = %name, addr = ?listener.local_addr().ok(),
        "listener stopped (draining)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_carry_what_was_copied() {
        let t = Transferred {
            a_to_b: 5,
            b_to_a: 7,
        };
        let none = Transferred::default();
        let early = Outcome::from(ConnResult::Denied);
        assert_eq!(
            (early.result, early.transferred),
            (ConnResult::Denied, none)
        );
        let ok = Outcome::from(Ok::<_, CopyError>(t));
        assert_eq!((ok.result, ok.transferred), (ConnResult::Ok, t));
        let failed = Outcome::from(Err::<Transferred, _>(CopyError::Read {
            side: crate::copy::Side::A,
            a_to_b: 5,
            b_to_a: 7,
            source: std::io::ErrorKind::ConnectionReset.into(),
        }));
        assert_eq!((failed.result, failed.transferred), (ConnResult::Error, t));
    }
}
