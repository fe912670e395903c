//! Failing checks: two instances of `web` on one agent, `web-1` with a TCP check against a
//! listener the test owns and `web-2` with an HTTP check against a tiny HTTP server the test
//! owns. Closing the listener takes only `web-1` out of `?passing`; making the server answer 500
//! takes `web-2` out too, each within interval + timeout + sync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use mesh_control::agent::checks::RunnerConfig;
use mesh_tests::eventually::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{InprocEnv, health_ids, ok, try_call};

/// Interval (1s) + probe timeout (1s) + anti-entropy and a Raft commit, rounded up for a loaded
/// machine.
const FAIL_BOUND: Duration = Duration::from_secs(10);

/// Accepts connections and closes them (what a TCP check needs).
async fn tcp_listener() -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    (addr, task)
}

/// Answers every request with the status in `status` (no keep-alive).
async fn http_server(status: Arc<AtomicU16>) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let status = status.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                // Read the request head (bounded by the buffer size), then answer.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < buf.len() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let code = status.load(Ordering::SeqCst);
                let body = format!("status {code}");
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

async fn passing(server: SocketAddr) -> Result<Vec<String>, String> {
    let r = try_call(server, "GET", "/v1/health/service/web?passing", None).await?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    Ok(health_ids(&r.json()))
}

async fn wait_passing(server: SocketAddr, want: &[&str]) -> Duration {
    let start = Instant::now();
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("?passing instances of web to be {want:?}"),
        Duration::from_secs(20),
        || {
            let want = want.clone();
            async move {
                let ids = passing(server).await?;
                if ids == want {
                    Ok(())
                } else {
                    Err(format!("{ids:?}"))
                }
            }
        },
    )
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tcp_and_http_checks_leave_passing() {
    let env = InprocEnv::start("client-checks", |c| {
        c.checks = RunnerConfig {
            min_interval: Duration::from_secs(1),
            initial_stagger: false,
        };
    })
    .await;
    let (a, s) = (env.http, env.server_http);
    let (tcp_addr, tcp_task) = tcp_listener().await;
    let status = Arc::new(AtomicU16::new(200));
    let (http_addr, http_task) = http_server(status.clone()).await;

    let web1 = format!(
        r#"{{"ID":"web-1","Name":"web","Port":{},
            "Check":{{"TCP":"{tcp_addr}","Interval":"1s","Timeout":"1s"}}}}"#,
        tcp_addr.port()
    );
    let web2 = format!(
        r#"{{"ID":"web-2","Name":"web","Port":{},
            "Check":{{"HTTP":"http://{http_addr}/health","Interval":"1s","Timeout":"1s"}}}}"#,
        http_addr.port()
    );
    ok(a, "PUT", "/v1/agent/service/register", Some(&web1)).await;
    ok(a, "PUT", "/v1/agent/service/register", Some(&web2)).await;
    wait_passing(s, &["web-1", "web-2"]).await;

    // Close the TCP listener: only web-1 fails.
    tcp_task.abort();
    let _ = tcp_task.await;
    let took = wait_passing(s, &["web-2"]).await;
    eprintln!("t50: web-1 left ?passing {took:?} after its listener closed");
    assert!(
        took <= FAIL_BOUND,
        "web-1 left ?passing {took:?} after its listener closed (bound {FAIL_BOUND:?})"
    );
    let checks = ok(a, "GET", "/v1/agent/checks", None).await.json();
    assert_eq!(checks["service:web-1"]["Status"], "critical", "{checks}");
    assert_eq!(checks["service:web-2"]["Status"], "passing", "{checks}");

    // The HTTP server answers 500: web-2 fails too.
    status.store(500, Ordering::SeqCst);
    let took = wait_passing(s, &[]).await;
    eprintln!("t50: web-2 left ?passing {took:?} after its server began answering 500");
    assert!(
        took <= FAIL_BOUND,
        "web-2 left ?passing {took:?} after its server began answering 500 (bound {FAIL_BOUND:?})"
    );
    // Both are still registered, with the failing checks' output in the catalog.
    let all = ok(s, "GET", "/v1/health/service/web", None).await.json();
    assert_eq!(health_ids(&all), ["web-1", "web-2"], "{all}");
    let out = all.to_string();
    assert!(
        out.contains("500"),
        "HTTP check output names the status: {out}"
    );

    http_task.abort();
    let _ = http_task.await;
    env.shutdown().await;
}
