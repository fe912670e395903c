//! A load client for restart tests (issue 14, acceptance 2): an unmodified Python program that
//! opens new connections at a high rate (each: connect, send, read the echo to EOF, close)
//! while long-lived connections stream through the same path, counting every failure and
//! checking each stream's echo by SHA-256. Used by the transparent-mode and the sidecar
//! restart tests, so both judge "nothing lost" the same way.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::eventually;

/// New connections in four threads (each: connect, send, read the echo to EOF, close), and
/// `streams` long-lived connections that send 4 KiB every 20 ms for the whole run while
/// reading the echo. Prints one JSON object at the end.
pub const LOAD_PY: &str = r#"
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

/// A running load client; [`Load::finish`] collects its counts.
pub struct Load {
    child: Child,
}

impl Load {
    /// Starts `python3` (`cmd`, already placed in its namespace and cgroup) against `dst`
    /// for `seconds`, with `streams` long-lived connections.
    pub fn start(mut cmd: Command, dst: SocketAddr, seconds: f64, streams: usize) -> Self {
        let child = cmd
            .args([
                "-c",
                LOAD_PY,
                &dst.ip().to_string(),
                &dst.port().to_string(),
                &seconds.to_string(),
                &streams.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the load client");
        Self { child }
    }

    /// Whether the client still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Lets the load run alone for `d` (before the restarts begin); `false` if the client
    /// ended first.
    pub fn alone_for(&mut self, d: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < d {
            if !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits (bounded) for the end and returns the counts: `new_ok`, `new_failed`, `errors`,
    /// `streams_ok`, `streams_failed`, `seconds`, and `rate` (new connections per second).
    pub fn finish(mut self) -> Value {
        let status = eventually("the load client finishes", Duration::from_secs(120), || {
            self.child.try_wait().ok().flatten()
        })
        .expect("the load client ends");
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "load client failed: {out}{err}");
        let mut r: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        let rate = r["new_ok"].as_f64().unwrap_or(0.0) / r["seconds"].as_f64().unwrap_or(1.0);
        r["rate"] = rate.into();
        r
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nothing lost: no failed new connection, at least `min_rate` new connections per second,
/// and all `streams` long-lived connections echoed intact. `context` (logs) goes with a failure.
pub fn assert_nothing_lost(r: &Value, min_rate: f64, streams: u64, context: &str) {
    assert_eq!(r["new_failed"], 0, "{r}{context}");
    let rate = r["rate"].as_f64().unwrap_or(0.0);
    assert!(rate >= min_rate, "only {rate:.0} new connections/s: {r}");
    assert_eq!(r["streams_ok"], streams, "{r}{context}");
}
