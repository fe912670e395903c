//! Waiting for a condition with a deadline instead of sleeping.
//!
//! Tests never sleep to let something happen: they poll the condition every [`POLL`] until it
//! holds or the deadline passes, and then fail naming what was awaited and the last thing seen.
//! Every poll loop is bounded both in time (the deadline) and in count (`timeout / POLL + 1`
//! rounds), and one slow probe cannot overrun the deadline because it is itself timed out.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Interval between two probes.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `probe` until it answers `Ok(value)` and returns the value; panics after `timeout`
/// with `what` and the last `Err` the probe gave (its description of the state it saw).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_eventually(timeout, probe).await {
        Ok(v) => v,
        Err(last) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}"),
    }
}

/// Like [`eventually`], but returns the last observation instead of panicking.
pub async fn try_eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let max_rounds = timeout.as_millis() / POLL.as_millis() + 1;
    let mut last = String::from("(condition never evaluated)");
    for _ in 0..max_rounds {
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(seen)) => last = seen,
            Err(_) => {
                last = format!("{last} (the last probe itself did not finish before the deadline)");
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        // A sleep inside a bounded poll loop: the pause between two probes.
        tokio::time::sleep(POLL).await;
    }
    Err(last)
}

/// [`eventually`] for a synchronous yes/no condition; `describe` is evaluated on failure to say
/// what the state was.
pub async fn eventually_true(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) {
    eventually(what, timeout, || {
        let ok = cond();
        let seen = if ok { String::new() } else { describe() };
        async move { if ok { Ok(()) } else { Err(seen) } }
    })
    .await
}
