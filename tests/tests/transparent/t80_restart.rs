//! Issue 14, acceptance 2: restarts under load lose nothing. An unmodified client in pod A
//! opens new connections to B's app (well over 200/s, each one a full mutual-TLS chain
//! through both proxies) while 20 long-lived connections stream through them; meanwhile B's
//! proxy is replaced 5 times in a row (each new `meshproxy run` takes the listeners over from
//! the running one, which then drains). Not one new connection may be refused or reset, and
//! every long-lived one must echo back exactly what it sent (SHA-256).

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;

const APP_PORT: u16 = 8080;
const RESTARTS: usize = 5;
/// How long the load runs: enough for 5 restarts (each new proxy is ready in well under a
/// second) with load before, between and after them.
const LOAD_SECONDS: f64 = 12.0;

/// New connections in four threads (each: connect, send, read the echo to EOF, close), and
/// `streams` long-lived connections that send 4 KiB every 20 ms for the whole run while
/// reading the echo. Prints one JSON object at the end.
const LOAD_PY: &str = r#"
import hashlib, json, socket, sys, threading, time, random
host, port, seconds, streams = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + seconds
lock = threading.Lock()
res = {"new_ok": 0, "new_failed": 0, "errors": [], "streams_ok": 0, "streams_failed": []}

def new_conns():
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            s.close()
            ok = data == b"ping"
            err = None if ok else "short echo %r" % data
        except Exception as e:
            ok, err = False, type(e).__name__ + ": " + str(e)
        with lock:
            if ok:
                res["new_ok"] += 1
            else:
                res["new_failed"] += 1
                if len(res["errors"]) < 10:
                    res["errors"].append(err)

def stream(i):
    rnd = random.Random(i)
    sent, got = hashlib.sha256(), hashlib.sha256()
    n_sent = [0]
    try:
        s = socket.create_connection((host, port), timeout=30)
        def reader():
            n = 0
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got.update(d)
                n += 1
        t = threading.Thread(target=reader)
        t.start()
        while time.monotonic() < deadline:
            chunk = rnd.randbytes(4096)
            sent.update(chunk)
            s.sendall(chunk)
            n_sent[0] += len(chunk)
            time.sleep(0.02)
        s.shutdown(socket.SHUT_WR)
        t.join(60)
        ok = sent.hexdigest() == got.hexdigest()
        with lock:
            if ok:
                res["streams_ok"] += 1
            else:
                res["streams_failed"].append("stream %d: echo differs after %d bytes" % (i, n_sent[0]))
    except Exception as e:
        with lock:
            res["streams_failed"].append("stream %d: %s: %s" % (i, type(e).__name__, e))

threads = [threading.Thread(target=new_conns) for _ in range(4)]
threads += [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
start = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join(120)
res["seconds"] = time.monotonic() - start
print(json.dumps(res))
"#;

#[test]
fn five_restarts_under_load_refuse_nothing_and_streams_complete() {
    let scene = Scene::start("allow", APP_PORT);
    let (pods, http) = (&scene.pods, scene.http);
    let flags = ["--drain-timeout", "60s"];
    let proxy_a = Proxy::start(http, "svc-a", &pods.a, &flags);
    let mut proxies_b = vec![Proxy::start(http, "svc-b", &pods.b, &flags)];
    let dst = pods.b.addr(APP_PORT);
    assert_echoed(&client(&pods.a, dst, "warm"), "warm", &[&proxy_a]);

    let mut load = pods
        .a
        .command("python3")
        .expect("command in pod")
        .args([
            "-c",
            LOAD_PY,
            &dst.ip().to_string(),
            &dst.port().to_string(),
            &LOAD_SECONDS.to_string(),
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the load client");
    let started = Instant::now();
    // Load alone for a moment, then the restarts, each once the previous proxy serves.
    let mut took = Vec::new();
    while started.elapsed() < Duration::from_secs(1) {
        assert!(load.try_wait().unwrap().is_none(), "the load ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..RESTARTS {
        let t = Instant::now();
        let next = Proxy::start(http, "svc-b", &pods.b, &flags);
        took.push(t.elapsed());
        let prev = proxies_b.last().unwrap();
        assert!(
            next.log()
                .contains("received the listeners of the running proxy"),
            "{}",
            next.log()
        );
        // The predecessor drains (it was told once the new one served).
        mesh_tests::process::eventually("the old proxy drains", Duration::from_secs(10), || {
            prev.log()
                .contains("a new proxy took over the listeners")
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", prev.log()));
        proxies_b.push(next);
    }
    assert!(
        started.elapsed() < Duration::from_secs_f64(LOAD_SECONDS),
        "restarts took too long ({took:?}) to all fall within the load"
    );
    let status = mesh_tests::process::eventually(
        "the load client finishes",
        Duration::from_secs(120),
        || load.try_wait().ok().flatten(),
    )
    .unwrap();
    let mut out = String::new();
    load.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    load.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{out}{err}");
    let r: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let b_logs: Vec<&Proxy> = proxies_b.iter().collect();
    let rate = r["new_ok"].as_f64().unwrap() / r["seconds"].as_f64().unwrap();
    println!(
        "restart under load: {r} ({rate:.0} new connections/s; restarts ready after {took:?})"
    );
    assert_eq!(r["new_failed"], 0, "{r}{}", logs(&b_logs));
    assert!(rate >= 200.0, "only {rate:.0} new connections/s: {r}");
    assert_eq!(r["streams_ok"], 20, "{r}{}", logs(&b_logs));
    // Each old proxy exits once its last stream has ended.
    for p in &mut proxies_b[..RESTARTS] {
        p.wait_exit(Duration::from_secs(20));
    }
}
