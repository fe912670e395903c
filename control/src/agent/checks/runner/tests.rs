//! Runner tests against real listeners on 127.0.0.1. Synchronisation is by awaiting the update
//! channel (or the test server's request log) with a deadline, never by sleeping.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::error::TryRecvError;

use super::*;
use crate::agent::checks::CheckDefinition;

const DEADLINE: Duration = Duration::from_secs(10);

/// No minimum interval and no stagger, so tests can probe every 50–100 ms from the start.
fn runner() -> CheckRunner {
    CheckRunner::new(RunnerConfig {
        min_interval: Duration::ZERO,
        initial_stagger: false,
    })
}

fn validated(def: serde_json::Value) -> ValidatedCheck {
    serde_json::from_value::<CheckDefinition>(def)
        .expect("definition parses")
        .to_validated()
        .expect("definition is valid")
}

async fn next(rx: &mut mpsc::Receiver<CheckUpdate>) -> CheckUpdate {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no check update before the deadline")
        .expect("update channel closed")
}

/// Waits for the next update and asserts its status and output.
async fn expect_update(rx: &mut mpsc::Receiver<CheckUpdate>, status: HealthStatus, output: &str) {
    let u = next(rx).await;
    assert_eq!((u.status, u.output.as_str()), (status, output));
}

/// What an expired TTL check says when its last output was `last`.
fn expired_after(last: &str) -> String {
    format!("TTL expired (last output before timeout follows): {last}")
}

/// A loopback HTTP/1.1 server answering one request per connection from a script (the last
/// response repeats). Every request is logged on `requests` before it is answered; requests
/// from number `gate_from` on wait for a permit on `gate`, which lets a test know that all
/// earlier probes have been fully evaluated.
struct TestServer {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<String>,
    gate: Arc<Semaphore>,
}

impl TestServer {
    async fn start(responses: Vec<(u16, String)>, gate_from: usize) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (log, requests) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let server_gate = gate.clone();
        tokio::spawn(async move {
            for n in 0usize.. {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let request = read_request(&mut stream).await;
                let _ = log.send(request);
                if n >= gate_from {
                    let Ok(permit) = server_gate.acquire().await else {
                        return;
                    };
                    permit.forget();
                }
                let (code, body) = &responses[n.min(responses.len() - 1)];
                let reason = http::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("");
                let response = format!(
                    "HTTP/1.1 {code} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        TestServer {
            addr,
            requests,
            gate,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    async fn next_request(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.requests.recv())
            .await
            .expect("no request before the deadline")
            .expect("server stopped")
    }
}

/// Reads the request head and a `content-length` body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn http_def(url: &str) -> serde_json::Value {
    json!({"Name": "web", "HTTP": url, "Interval": "50ms", "Timeout": "2s"})
}

#[tokio::test]
async fn tcp_passing_then_critical_when_listener_goes_away() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let def = validated(json!({"TCP": addr.to_string(), "Interval": "100ms", "Timeout": "1s"}));
    let _handle = runner().spawn("tcp".into(), def, tx);

    let u = next(&mut rx).await;
    assert_eq!(u.check_id, "tcp");
    assert_eq!(u.status, HealthStatus::Passing);
    assert_eq!(u.output, format!("TCP connect {addr}: Success"));

    drop(listener);
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Critical, "{u:?}");
    assert!(
        u.output.starts_with(&format!("TCP connect {addr}: ")),
        "{u:?}"
    );
    assert!(!u.output.ends_with("Success"), "{u:?}");
}

#[tokio::test]
async fn http_status_codes_map_to_health() {
    for (code, want, reason, body) in [
        (200, HealthStatus::Passing, "200 OK", "hello"),
        (204, HealthStatus::Passing, "204 No Content", ""),
        (
            429,
            HealthStatus::Warning,
            "429 Too Many Requests",
            "slow down",
        ),
        (
            500,
            HealthStatus::Critical,
            "500 Internal Server Error",
            "boom",
        ),
        (
            301,
            HealthStatus::Critical,
            "301 Moved Permanently",
            "moved",
        ),
    ] {
        let server = TestServer::start(vec![(code, body.into())], usize::MAX).await;
        let (tx, mut rx) = mpsc::channel(16);
        let _handle = runner().spawn("web".into(), validated(http_def(&server.url())), tx);
        let u = next(&mut rx).await;
        assert_eq!(u.status, want, "{code}: {u:?}");
        assert_eq!(
            u.output,
            format!("HTTP GET {}: {reason} Output: {body}", server.url()),
            "{code}"
        );
    }
}

#[tokio::test]
async fn http_connection_refused_is_critical() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    drop(listener);
    let (tx, mut rx) = mpsc::channel(16);
    let _handle = runner().spawn("web".into(), validated(http_def(&url)), tx);
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Critical, "{u:?}");
    assert!(u.output.starts_with(&format!("HTTP GET {url}: ")), "{u:?}");
    assert!(u.output.to_lowercase().contains("refused"), "{u:?}");
}

#[tokio::test]
async fn http_timeout_is_critical() {
    // Never answers: every request waits on a gate that is never opened.
    let server = TestServer::start(vec![(200, String::new())], 0).await;
    let (tx, mut rx) = mpsc::channel(16);
    let mut def = http_def(&server.url());
    def["Timeout"] = json!("200ms");
    let _handle = runner().spawn("web".into(), validated(def), tx);
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Critical);
    assert_eq!(
        u.output,
        format!("HTTP GET {}: timed out after 200ms", server.url())
    );
}

#[tokio::test]
async fn http_sends_method_headers_and_body() {
    let mut server = TestServer::start(vec![(200, "ok".into())], usize::MAX).await;
    let (tx, mut rx) = mpsc::channel(16);
    let mut def = http_def(&server.url());
    def["Method"] = json!("POST");
    def["Header"] = json!({"X-Token": ["a", "b"], "Host": ["svc.example"]});
    def["Body"] = json!("ping");
    let _handle = runner().spawn("web".into(), validated(def), tx);
    let request = server.next_request().await.to_lowercase();
    assert!(
        request.starts_with("post /health http/1.1\r\n"),
        "{request}"
    );
    for line in [
        "x-token: a\r\n",
        "x-token: b\r\n",
        "host: svc.example\r\n",
        "user-agent: consul health check\r\n",
    ] {
        assert!(request.contains(line), "{line:?} missing from {request}");
    }
    assert!(request.ends_with("\r\n\r\nping"), "{request}");
    assert!(next(&mut rx).await.output.starts_with("HTTP POST"));
}

#[tokio::test]
async fn http_output_body_is_truncated_to_4k() {
    let server = TestServer::start(vec![(200, "x".repeat(10_000))], usize::MAX).await;
    let (tx, mut rx) = mpsc::channel(16);
    let _handle = runner().spawn("web".into(), validated(http_def(&server.url())), tx);
    let u = next(&mut rx).await;
    let prefix = format!("HTTP GET {}: 200 OK Output: ", server.url());
    assert_eq!(u.output.len(), prefix.len() + OUTPUT_MAX_SIZE);
    assert!(u.output.starts_with(&prefix));
}

#[tokio::test]
async fn failures_before_critical_holds_the_first_failure() {
    let mut server = TestServer::start(
        vec![
            (200, "up".into()),
            (500, "down".into()),
            (500, "down".into()),
        ],
        2,
    )
    .await;
    let (tx, mut rx) = mpsc::channel(16);
    let mut def = http_def(&server.url());
    def["FailuresBeforeCritical"] = json!(2);
    let _handle = runner().spawn("web".into(), validated(def), tx);

    assert_eq!(next(&mut rx).await.status, HealthStatus::Passing);
    for _ in 0..3 {
        server.next_request().await;
    }
    // The third request has arrived, so the first failure (second request) has been evaluated:
    // it must not have produced an update.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    server.gate.add_permits(1);
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Critical, "{u:?}");
    assert!(u.output.contains("500 Internal Server Error Output: down"));
}

#[tokio::test]
async fn updates_are_sent_only_on_change() {
    let mut server = TestServer::start(vec![(200, "same".into())], 3).await;
    let (tx, mut rx) = mpsc::channel(16);
    let _handle = runner().spawn("web".into(), validated(http_def(&server.url())), tx);
    assert_eq!(next(&mut rx).await.status, HealthStatus::Passing);
    for _ in 0..4 {
        server.next_request().await;
    }
    // Three identical results evaluated, one update.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn ttl_starts_critical_takes_updates_and_expires() {
    let (tx, mut rx) = mpsc::channel(16);
    let handle = runner().spawn("ttl".into(), validated(json!({"TTL": "1s"})), tx);
    assert!(handle.is_ttl());

    expect_update(&mut rx, HealthStatus::Critical, "").await;

    handle
        .ttl_update(HealthStatus::Passing, "all good")
        .unwrap();
    expect_update(&mut rx, HealthStatus::Passing, "all good").await;

    // No further update: the TTL runs out.
    expect_update(&mut rx, HealthStatus::Critical, &expired_after("all good")).await;

    // An update after expiry revives it.
    handle.ttl_update(HealthStatus::Warning, "").unwrap();
    expect_update(&mut rx, HealthStatus::Warning, "").await;
}

#[tokio::test]
async fn ttl_expires_without_updates() {
    let (tx, mut rx) = mpsc::channel(16);
    let def = validated(json!({"TTL": "200ms", "Status": "passing"}));
    let _handle = runner().spawn("ttl".into(), def, tx);
    assert_eq!(next(&mut rx).await.status, HealthStatus::Passing);
    expect_update(&mut rx, HealthStatus::Critical, "TTL expired").await;
}

/// A TTL check restored after a restart keeps its status and output, and expires at the
/// deadline it had (`ttl_left`), not a full TTL later.
#[tokio::test]
async fn resumed_ttl_keeps_status_and_deadline() {
    let (tx, mut rx) = mpsc::channel(16);
    let def = validated(json!({"TTL": "1h"}));
    let resume = Resume {
        status: HealthStatus::Passing,
        output: "fine".into(),
        ttl_left: Duration::from_millis(200),
    };
    let started = Instant::now();
    let _handle = runner().spawn_resumed("ttl".into(), def, tx, resume);
    expect_update(&mut rx, HealthStatus::Passing, "fine").await;
    expect_update(&mut rx, HealthStatus::Critical, &expired_after("fine")).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(30),
        "expired after {took:?}, not at the persisted deadline"
    );
}

/// A TTL check that had expired before the restart stays critical with its output (no second
/// expiry), and an update revives it.
#[tokio::test]
async fn resumed_expired_ttl_stays_critical_until_updated() {
    let (tx, mut rx) = mpsc::channel(16);
    let resume = Resume {
        status: HealthStatus::Critical,
        output: "TTL expired".into(),
        ttl_left: Duration::ZERO,
    };
    let handle = runner().spawn_resumed("ttl".into(), validated(json!({"TTL": "1h"})), tx, resume);
    expect_update(&mut rx, HealthStatus::Critical, "TTL expired").await;
    handle.ttl_update(HealthStatus::Passing, "back").unwrap();
    expect_update(&mut rx, HealthStatus::Passing, "back").await;
}

/// A probing check restored as passing stays passing until a probe says otherwise, and the
/// failure thresholds count from the restart.
#[tokio::test]
async fn resumed_probe_keeps_status_until_thresholds_say_otherwise() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let def = validated(json!({
        "TCP": addr.to_string(), "Interval": "50ms", "FailuresBeforeCritical": 2,
        "FailuresBeforeWarning": 2,
    }));
    let resume = Resume {
        status: HealthStatus::Passing,
        output: format!("TCP connect {addr}: Success"),
        ttl_left: Duration::ZERO,
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _handle = runner().spawn_resumed("tcp".into(), def, tx, resume);
    // First failed probe: below the threshold, so the restored status is reported unchanged.
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Passing);
    assert!(u.output.ends_with("Success"), "{}", u.output);
    let u = next(&mut rx).await;
    assert_eq!(u.status, HealthStatus::Critical, "{}", u.output);
}

#[tokio::test]
async fn ttl_update_is_only_for_ttl_checks() {
    let (tx, _rx) = mpsc::channel(16);
    let def = validated(json!({"TCP": "127.0.0.1:1", "Interval": "10s"}));
    let handle = runner().spawn("tcp".into(), def, tx);
    assert!(matches!(
        handle.ttl_update(HealthStatus::Passing, ""),
        Err(CheckError::NotTtl { .. })
    ));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_check() {
    let (tx, mut rx) = mpsc::channel(16);
    let def = validated(json!({"TTL": "1h"}));
    let handle = runner().spawn("ttl".into(), def, tx);
    next(&mut rx).await;
    drop(handle);
    // The task held the only sender; the channel closes once it is gone.
    let closed = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
    assert_eq!(closed, None);
}

#[test]
fn default_config_raises_interval_to_consuls_minimum() {
    let r = CheckRunner::default();
    assert_eq!(r.config().min_interval, Duration::from_secs(1));
    assert!(r.config().initial_stagger);
    assert_eq!(
        r.effective_interval("x", Duration::from_millis(100)),
        Duration::from_secs(1)
    );
    assert_eq!(
        r.effective_interval("x", Duration::from_secs(30)),
        Duration::from_secs(30)
    );
}

fn thresholds(success: u32, warn: u32, crit: u32) -> Thresholds {
    Thresholds {
        success_before_passing: success,
        failures_before_warning: warn,
        failures_before_critical: crit,
        successes: 0,
        failures: 0,
    }
}

fn observe(t: &mut Thresholds, s: HealthStatus) -> Option<HealthStatus> {
    t.observe(s, String::new()).map(|(s, _)| s)
}

#[test]
fn thresholds_follow_consuls_status_handler() {
    use HealthStatus::*;
    // Defaults (0/0/0): every result applies at once.
    let mut t = thresholds(0, 0, 0);
    assert_eq!(observe(&mut t, Critical), Some(Critical));
    assert_eq!(observe(&mut t, Passing), Some(Passing));

    // SuccessBeforePassing=2: consecutive successes; a failure resets the count.
    let mut t = thresholds(2, 0, 0);
    assert_eq!(observe(&mut t, Passing), None);
    assert_eq!(observe(&mut t, Critical), Some(Critical));
    assert_eq!(observe(&mut t, Passing), None);
    assert_eq!(observe(&mut t, Warning), Some(Warning)); // warning counts as success
    assert_eq!(observe(&mut t, Passing), Some(Passing));

    // FailuresBeforeWarning=1, FailuresBeforeCritical=3.
    let mut t = thresholds(0, 1, 3);
    assert_eq!(observe(&mut t, Critical), Some(Warning));
    assert_eq!(observe(&mut t, Critical), Some(Warning));
    assert_eq!(observe(&mut t, Critical), Some(Critical));
    assert_eq!(observe(&mut t, Passing), Some(Passing));
    assert_eq!(observe(&mut t, Critical), Some(Warning));
}

#[test]
fn truncate_output_respects_char_boundaries() {
    let s = "é".repeat(OUTPUT_MAX_SIZE); // 2 bytes each
    let t = truncate_output(s);
    assert_eq!(t.len(), OUTPUT_MAX_SIZE);
    let s = format!("a{}", "é".repeat(OUTPUT_MAX_SIZE));
    assert_eq!(truncate_output(s).len(), OUTPUT_MAX_SIZE - 1);
    assert_eq!(truncate_output("short".into()), "short");
}
