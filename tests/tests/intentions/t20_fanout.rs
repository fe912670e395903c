//! t20: watch fan-out in proportion to what changed (issue 17). One agent-shaped `Watch`
//! stream over the real gRPC port watches the intentions of 0, 100 or 1,000 destinations while
//! intentions are written one at a time (each to one watched destination, over 1,000 stored
//! intentions). Each write must reach the stream as exactly one event, for its destination,
//! and a write to an unwatched destination as none. It prints the writes per second and the
//! process CPU time per write for each watcher count (the same run, so comparable), which is
//! the measurement issue 17 asks for.

use std::time::{Duration, Instant};

use mesh_control::proto::catalog_client::CatalogClient;
use mesh_control::proto::{Topic, TopicKind, WatchEvent, WatchSet};
use mesh_tests::inproc::intention_cmd;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

/// Intentions stored before measuring (each to its own destination).
const STORED: usize = 1000;
/// Writes timed per watcher count.
const WRITES: usize = 300;

/// This process's user + system CPU time (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesized command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// Waits for the next event of the stream, at most 20 s.
async fn next(rx: &mut mpsc::UnboundedReceiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20 s")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intention_writes_wake_only_their_destination_and_keep_their_rate() {
    let (h, _dir) = super::start().await;
    let server = h.server.clone();
    for i in 0..STORED {
        server
            .write(intention_cmd(&format!("src-{i}"), &format!("dst-{i}")))
            .await
            .unwrap();
    }
    let channel = Endpoint::from_shared(format!("http://{}", h.rpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for watched in [0usize, 100, 1000] {
        let topics: Vec<Topic> = (0..watched)
            .map(|i| Topic {
                kind: TopicKind::TopicIntentions as i32,
                name: format!("dst-{i}"),
                passing_only: false,
                min_index: 0,
            })
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut stream = CatalogClient::new(channel.clone())
            .watch(WatchSet { topics })
            .await
            .unwrap()
            .into_inner();
        let reader = tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        // The first value of every topic.
        for _ in 0..watched {
            next(&mut rx).await;
        }
        let (wall, cpu) = (Instant::now(), cpu_time());
        for k in 0..WRITES {
            let dst = k % watched.max(1);
            server
                .write(intention_cmd(
                    &format!("w{watched}-{k}"),
                    &format!("dst-{dst}"),
                ))
                .await
                .unwrap();
        }
        let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
        if watched > 0 {
            // One event per write, each for the topic written to, in order.
            for k in 0..WRITES {
                let e = next(&mut rx).await;
                assert_eq!(e.topic as usize, k % watched, "event {k} of {watched}");
            }
        }
        // A write to a destination nobody watches wakes no topic: the next event is the one
        // for the watched write after it.
        server
            .write(intention_cmd("unwatched", "dst-unwatched"))
            .await
            .unwrap();
        if watched > 0 {
            server.write(intention_cmd("last", "dst-0")).await.unwrap();
            assert_eq!(next(&mut rx).await.topic, 0);
        }
        assert!(rx.try_recv().is_err(), "an event no write asked for");
        reader.abort();
        rows.push((
            watched,
            WRITES as f64 / wall.as_secs_f64(),
            cpu / WRITES as u32,
        ));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "intention writes with watched destinations ({STORED} stored intentions), load {load}"
    );
    for (watched, rate, cpu) in &rows {
        println!("  {watched:>5} watched: {rate:>7.0} writes/s, {cpu:?} CPU per write");
    }
    h.shutdown().await;
}
