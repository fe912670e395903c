//! Runs validated checks: one tokio task per check, owned by a [`CheckHandle`].
//!
//! Probing checks (TCP, HTTP) follow Consul's loop: wait a random stagger within the interval
//! so checks registered together do not probe in lockstep, then probe, report, sleep `Interval`,
//! repeat. The next probe starts only after the previous one finished, and each probe is bounded
//! by `Timeout`, so a slow service never piles up probes. `SuccessBeforePassing`,
//! `FailuresBeforeWarning` and `FailuresBeforeCritical` are applied as in Consul's
//! `StatusHandler`. TTL checks are passive: the status set through the pass/warn/fail API holds
//! until `TTL` passes without an update, then the check goes critical.
//!
//! A check restored from the agent's data directory ([`Resume`], see `agent::persist`) starts
//! from the status and output it had before the restart instead of its initial status, and a
//! TTL check keeps the deadline it had: a restart of the agent does not flap its checks.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::definition::{CheckKind, HttpCheck, TcpCheck, ValidatedCheck};
use super::{CheckError, CheckUpdate, MIN_INTERVAL, OUTPUT_MAX_SIZE};
use crate::duration::format_duration;
use crate::error_chain::error_chain;
use crate::model::HealthStatus;

/// Knobs of the runner itself (not of a check).
///
/// Defaults are Consul's. Consul raises an `Interval` below 1s to 1s with a warning rather than
/// rejecting the check; so does this runner, against `min_interval`. Tests lower `min_interval`
/// and turn off the stagger to run quickly and deterministically.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Shortest interval a probing check runs at (Consul: 1s).
    pub min_interval: Duration,
    /// Wait a random time in `[0, interval)` before the first probe (Consul does).
    pub initial_stagger: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            min_interval: MIN_INTERVAL,
            initial_stagger: true,
        }
    }
}

/// Starts check tasks with a shared [`RunnerConfig`].
#[derive(Debug, Clone, Default)]
pub struct CheckRunner {
    config: RunnerConfig,
}

/// Starts `def` with Consul's default [`RunnerConfig`]; see [`CheckRunner::spawn`].
pub fn spawn(id: String, def: ValidatedCheck, updates: mpsc::Sender<CheckUpdate>) -> CheckHandle {
    CheckRunner::default().spawn(id, def, updates)
}

impl CheckRunner {
    pub fn new(config: RunnerConfig) -> Self {
        CheckRunner { config }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Starts running `def` as check `id` on the current tokio runtime.
    ///
    /// Every change of status or output is sent on `updates` (the first result always is). A TTL
    /// check reports its initial status at once. The task stops when the handle is dropped or
    /// when `updates` is closed.
    pub fn spawn(
        &self,
        id: String,
        def: ValidatedCheck,
        updates: mpsc::Sender<CheckUpdate>,
    ) -> CheckHandle {
        self.spawn_from(id, def, updates, None)
    }

    /// Like [`spawn`](Self::spawn), for a check restored after an agent restart: it starts from
    /// `resume` instead of the definition's initial status. A probing check keeps that status
    /// until its first probe (after the usual stagger) says otherwise, counted against its
    /// thresholds as usual; a TTL check keeps it until `resume.ttl_left` passes without an
    /// update. A TTL check that is already critical with no time left stays critical (with its
    /// output) until the next update, as it would have without the restart.
    pub fn spawn_resumed(
        &self,
        id: String,
        def: ValidatedCheck,
        updates: mpsc::Sender<CheckUpdate>,
        resume: Resume,
    ) -> CheckHandle {
        self.spawn_from(id, def, updates, Some(resume))
    }

    fn spawn_from(
        &self,
        id: String,
        def: ValidatedCheck,
        updates: mpsc::Sender<CheckUpdate>,
        resume: Option<Resume>,
    ) -> CheckHandle {
        let reporter = Reporter {
            check_id: id.clone(),
            tx: updates,
            last: None,
        };
        let thresholds = Thresholds::new(&def);
        let (initial, ttl_left) = match resume {
            Some(r) => ((r.status, r.output), Some(r.ttl_left)),
            None => ((def.initial_status, String::new()), None),
        };
        let (ttl_tx, task) = match def.kind {
            CheckKind::Ttl { ttl } => {
                let (tx, rx) = watch::channel(None);
                let task = tokio::spawn(run_ttl(reporter, initial, ttl, ttl_left, rx));
                (Some(tx), task)
            }
            CheckKind::Tcp(tcp) => {
                let interval = self.effective_interval(&id, tcp.interval);
                let probe = Probe::Tcp(tcp);
                (
                    None,
                    self.spawn_probe(reporter, initial, thresholds, interval, probe),
                )
            }
            CheckKind::Http(http) => {
                let interval = self.effective_interval(&id, http.interval);
                let probe = Probe::Http(Box::new(HttpProbe::new(*http)));
                (
                    None,
                    self.spawn_probe(reporter, initial, thresholds, interval, probe),
                )
            }
        };
        CheckHandle {
            check_id: id,
            ttl: ttl_tx,
            task,
        }
    }

    fn spawn_probe(
        &self,
        reporter: Reporter,
        initial: (HealthStatus, String),
        thresholds: Thresholds,
        interval: Duration,
        probe: Probe,
    ) -> JoinHandle<()> {
        let stagger = if self.config.initial_stagger && !interval.is_zero() {
            rand::rng().random_range(Duration::ZERO..interval)
        } else {
            Duration::ZERO
        };
        tokio::spawn(run_probe(
            reporter, initial, thresholds, interval, stagger, probe,
        ))
    }

    fn effective_interval(&self, id: &str, interval: Duration) -> Duration {
        if interval < self.config.min_interval {
            tracing::warn!(
                check_id = id,
                interval = %format_duration(interval),
                min = %format_duration(self.config.min_interval),
                "check interval below the minimum; using the minimum"
            );
            self.config.min_interval
        } else {
            interval
        }
    }
}

/// Where a restored check resumes: its status and output before the agent restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub status: HealthStatus,
    pub output: String,
    /// TTL checks: time left before the TTL runs out (zero: it ran out while the agent was
    /// down, or before). Ignored for probing checks.
    pub ttl_left: Duration,
}

/// A pass/warn/fail update for a TTL check.
#[derive(Debug, Clone)]
struct TtlUpdate {
    status: HealthStatus,
    note: String,
}

/// Owns a running check: dropping it stops the check.
#[derive(Debug)]
pub struct CheckHandle {
    check_id: String,
    ttl: Option<watch::Sender<Option<TtlUpdate>>>,
    task: JoinHandle<()>,
}

impl CheckHandle {
    pub fn check_id(&self) -> &str {
        &self.check_id
    }

    /// Whether this is a TTL check (takes [`ttl_update`](Self::ttl_update)).
    pub fn is_ttl(&self) -> bool {
        self.ttl.is_some()
    }

    /// Sets a TTL check's status and output (`/v1/agent/check/{pass,warn,fail}/:id?note=` or
    /// `/v1/agent/check/update/:id`) and restarts its TTL timer. The note is truncated to 4 KiB
    /// as Consul truncates output. Updates are applied in order; if several arrive before the
    /// task runs, only the last one is reported.
    pub fn ttl_update(
        &self,
        status: HealthStatus,
        note: impl Into<String>,
    ) -> Result<(), CheckError> {
        let tx = self.ttl.as_ref().ok_or_else(|| CheckError::NotTtl {
            check_id: self.check_id.clone(),
        })?;
        tx.send(Some(TtlUpdate {
            status,
            note: truncate_output(note.into()),
        }))
        .map_err(|_| CheckError::Stopped {
            check_id: self.check_id.clone(),
        })
    }

    /// Whether the task has ended (its update channel was closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for CheckHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends an update only when (status, output) changed since the last one sent.
struct Reporter {
    check_id: String,
    tx: mpsc::Sender<CheckUpdate>,
    last: Option<(HealthStatus, String)>,
}

/// The agent dropped its receiver: the check has nobody to report to and stops.
struct Closed;

impl Reporter {
    async fn report(&mut self, status: HealthStatus, output: &str) -> Result<(), Closed> {
        if self
            .last
            .as_ref()
            .is_some_and(|(s, o)| *s == status && o == output)
        {
            return Ok(());
        }
        let update = CheckUpdate {
            check_id: self.check_id.clone(),
            status,
            output: output.to_string(),
        };
        self.tx.send(update).await.map_err(|_| Closed)?;
        self.last = Some((status, output.to_string()));
        Ok(())
    }
}

/// `ttl_left`: for a restored check, the time left of the TTL it had before the restart.
async fn run_ttl(
    mut reporter: Reporter,
    initial: (HealthStatus, String),
    ttl: Duration,
    ttl_left: Option<Duration>,
    mut rx: watch::Receiver<Option<TtlUpdate>>,
) {
    let (status, mut last_output) = initial;
    if reporter.report(status, &last_output).await.is_err() {
        return;
    }
    // Consul starts the timer at registration, restarts it on every update and, once it has
    // fired, leaves the check critical until the next update.
    let mut deadline = match ttl_left {
        None => Some(Instant::now() + ttl),
        // Expired before the restart: its output already says so; do not expire it again.
        Some(left) if left.is_zero() && status == HealthStatus::Critical => None,
        Some(left) => Some(Instant::now() + left),
    };
    loop {
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let (status, output) = tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return; // handle dropped
                }
                let Some(update) = rx.borrow_and_update().clone() else { continue };
                deadline = Some(Instant::now() + ttl);
                last_output = update.note;
                (update.status, last_output.clone())
            }
            () = expired => {
                deadline = None;
                (HealthStatus::Critical, expired_output(&last_output))
            }
        };
        if reporter.report(status, &output).await.is_err() {
            return;
        }
    }
}

/// Consul's `CheckTTL.getExpiredOutput`: keep what the service last said.
fn expired_output(last_output: &str) -> String {
    if last_output.is_empty() {
        "TTL expired".to_string()
    } else {
        format!("TTL expired (last output before timeout follows): {last_output}")
    }
}

async fn run_probe(
    mut reporter: Reporter,
    initial: (HealthStatus, String),
    mut thresholds: Thresholds,
    interval: Duration,
    stagger: Duration,
    probe: Probe,
) {
    tokio::time::sleep(stagger).await;
    let mut current = initial;
    loop {
        let (status, output) = probe.run().await;
        if let Some(next) = thresholds.observe(status, output) {
            current = next;
        }
        if reporter.report(current.0, &current.1).await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Consul's `StatusHandler`: a result changes the check only after enough consecutive results
/// of its kind. Warning counts as a success (as in Consul), and a failure that reached
/// `FailuresBeforeWarning` but not `FailuresBeforeCritical` shows as warning.
#[derive(Debug, Clone)]
struct Thresholds {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl Thresholds {
    fn new(def: &ValidatedCheck) -> Self {
        Thresholds {
            success_before_passing: def.success_before_passing,
            failures_before_warning: def.failures_before_warning,
            failures_before_critical: def.failures_before_critical,
            successes: 0,
            failures: 0,
        }
    }

    /// The new (status, output) of the check, or `None` to leave it as it is.
    fn observe(&mut self, status: HealthStatus, output: String) -> Option<(HealthStatus, String)> {
        if status == HealthStatus::Critical {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failures_before_critical {
                Some((HealthStatus::Critical, output))
            } else if self.failures >= self.failures_before_warning {
                Some((HealthStatus::Warning, output))
            } else {
                None
            }
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= self.success_before_passing).then_some((status, output))
        }
    }
}

enum Probe {
    Tcp(TcpCheck),
    Http(Box<HttpProbe>),
}

impl Probe {
    async fn run(&self) -> (HealthStatus, String) {
        match self {
            Probe::Tcp(tcp) => probe_tcp(tcp).await,
            Probe::Http(http) => http.run().await,
        }
    }
}

/// Consul's TCP check: a connect within the timeout is passing, anything else critical.
async fn probe_tcp(tcp: &TcpCheck) -> (HealthStatus, String) {
    let connect = tokio::net::TcpStream::connect(tcp.addr.as_str());
    match tokio::time::timeout(tcp.timeout, connect).await {
        Ok(Ok(_stream)) => (
            HealthStatus::Passing,
            format!("TCP connect {}: Success", tcp.addr),
        ),
        Ok(Err(e)) => (
            HealthStatus::Critical,
            format!("TCP connect {}: {e}", tcp.addr),
        ),
        Err(_) => (
            HealthStatus::Critical,
            format!(
                "TCP connect {}: timed out after {}",
                tcp.addr,
                format_duration(tcp.timeout)
            ),
        ),
    }
}

struct HttpProbe {
    check: HttpCheck,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpProbe {
    fn new(check: HttpCheck) -> Self {
        // One client per check with no idle connections kept, as Consul's HTTP check disables
        // keep-alives: a check should not hold a connection open to the service between probes.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        HttpProbe { check, client }
    }

    /// Consul's HTTP check: 2xx passing, 429 warning, anything else or an error critical; the
    /// output is `HTTP <method> <url>: <status line> Output: <body>`.
    async fn run(&self) -> (HealthStatus, String) {
        let c = &self.check;
        let prefix = format!("HTTP {} {}", c.method, c.url);
        match tokio::time::timeout(c.timeout, self.exchange()).await {
            Ok(Ok((code, body))) => {
                let status = match code.as_u16() {
                    200..=299 => HealthStatus::Passing,
                    429 => HealthStatus::Warning,
                    _ => HealthStatus::Critical,
                };
                let line = match code.canonical_reason() {
                    Some(reason) => format!("{} {reason}", code.as_u16()),
                    None => code.as_u16().to_string(),
                };
                (status, format!("{prefix}: {line} Output: {body}"))
            }
            Ok(Err(e)) => (HealthStatus::Critical, format!("{prefix}: {e}")),
            Err(_) => (
                HealthStatus::Critical,
                format!("{prefix}: timed out after {}", format_duration(c.timeout)),
            ),
        }
    }

    /// Sends the request and reads at most [`OUTPUT_MAX_SIZE`] bytes of the body.
    async fn exchange(&self) -> Result<(http::StatusCode, String), String> {
        let c = &self.check;
        let mut req = http::Request::new(Full::new(c.body.clone()));
        *req.method_mut() = c.method.clone();
        *req.uri_mut() = c.url.clone();
        *req.headers_mut() = c.headers.clone();
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| error_chain(&e))?;
        let code = resp.status();
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        // Stop at the limit instead of draining the body: a large or endless response must not
        // keep the probe busy until its timeout. Dropping the body closes the connection.
        while buf.len() < OUTPUT_MAX_SIZE {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("reading body: {}", error_chain(&e))),
                None => break,
            }
        }
        buf.truncate(OUTPUT_MAX_SIZE);
        Ok((code, String::from_utf8_lossy(&buf).into_owned()))
    }
}

/// Truncates to [`OUTPUT_MAX_SIZE`] bytes on a character boundary.
fn truncate_output(mut s: String) -> String {
    if s.len() > OUTPUT_MAX_SIZE {
        let mut end = OUTPUT_MAX_SIZE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests;
