//! Graceful shutdown: stop accepting, let live connections finish, bounded by a deadline.
//!
//! [`Drain`] holds the signal; listeners hold a [`Watch`] and stop accepting when it fires;
//! each connection holds a [`Guard`] (a clone of an `mpsc::Sender` that is never sent on).
//! When every listener and connection has dropped its sender, the receiver sees the channel
//! close: that is "all connections finished", without counting or locking.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Owner of the drain signal.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    live_tx: Option<mpsc::Sender<()>>,
    live_rx: mpsc::Receiver<()>,
}

/// Held by listeners: tells them to stop, and hands out connection guards.
#[derive(Debug, Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    live: mpsc::Sender<()>,
}

/// Held by each connection until it ends.
#[derive(Debug)]
pub struct Guard {
    _live: mpsc::Sender<()>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished in time.
    Complete,
    /// The deadline passed with connections still open.
    TimedOut,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (tx, rx) = mpsc::channel(1);
        Self {
            signal,
            live_tx: Some(tx),
            live_rx: rx,
        }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            signal: self.signal.subscribe(),
            live: self
                .live_tx
                .clone()
                .expect("watch() is only called before drain()"),
        }
    }

    /// A receiver that turns `true` when draining starts (for readiness).
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Signals every listener to stop and waits up to `timeout` for all guards to drop.
    pub async fn drain(mut self, timeout: Duration) -> DrainOutcome {
        self.signal.send_replace(true);
        self.live_tx = None;
        match tokio::time::timeout(timeout, self.live_rx.recv()).await {
            // `recv` only returns `None` once every sender is gone; nobody sends.
            Ok(_) => DrainOutcome::Complete,
            Err(_) => DrainOutcome::TimedOut,
        }
    }
}

impl Watch {
    /// Resolves when draining starts.
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|d| *d).await;
    }

    pub fn guard(&self) -> Guard {
        Guard {
            _live: self.live.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_guards_then_completes() {
        let d = Drain::new();
        let mut w = d.watch();
        let g = w.guard();
        let listener = tokio::spawn(async move {
            w.signaled().await;
        });
        let conn = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(g);
        });
        assert_eq!(
            d.drain(Duration::from_secs(5)).await,
            DrainOutcome::Complete
        );
        listener.await.unwrap();
        conn.await.unwrap();
    }

    #[tokio::test]
    async fn times_out_with_a_stuck_connection() {
        let d = Drain::new();
        let g = d.watch().guard();
        assert_eq!(
            d.drain(Duration::from_millis(50)).await,
            DrainOutcome::TimedOut
        );
        drop(g);
    }
}
