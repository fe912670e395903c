//! Child processes of the `proxy_chain` harness (meshd, meshproxy, stunnel, HAProxy): spawn with
//! stderr in a log file and stdout lines on a channel, wait for a line or a listening port with
//! a deadline, read a process's CPU time and resident memory from `/proc`, and stop it by PID
//! (SIGTERM, then SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running child process, stopped (by its PID only) when dropped.
pub struct Child {
    pub name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
    lines: Receiver<String>,
}

impl Child {
    /// Spawns `cmd` with stdin closed, stderr appended to `log` and stdout read line by line.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let err = std::fs::File::create(log).with_context(|| format!("creating {log:?}"))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            lines: rx,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The last `n` lines of the child's stderr log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// An error naming the child, with the tail of its log.
    pub fn failure(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: {what}\n--- last lines of {} ---\n{}",
            self.name,
            self.log.display(),
            self.log_tail(30)
        )
    }

    /// Whether the child has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits (at most `timeout`) for a stdout line containing `needle`; returns that line.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.exited() {
                        return Err(self.failure(format!("exited before printing {needle:?}")));
                    }
                    if left.is_zero() {
                        return Err(self.failure(format!("no {needle:?} line within {timeout:?}")));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.failure(format!("stdout closed before {needle:?}")));
                }
            }
        }
    }

    /// Waits (at most `timeout`) until every port in `ports` has a listening socket on
    /// 127.0.0.1 (read from `/proc/net/tcp`, so nothing connects to the child to find out).
    pub fn wait_listening(&mut self, ports: &[u16], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let listening = listening_ports();
            if ports.iter().all(|p| listening.contains(p)) {
                return Ok(());
            }
            if self.exited() {
                return Err(self.failure("exited before listening"));
            }
            if Instant::now() >= deadline {
                return Err(
                    self.failure(format!("ports {ports:?} not listening within {timeout:?}"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait at most [`STOP_GRACE`], then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Local ports with a TCP socket in LISTEN state on 127.0.0.1 or 0.0.0.0.
fn listening_ports() -> Vec<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            let (ip, port) = local.split_once(':')?;
            let ok_ip = ip == "0100007F" || ip == "00000000";
            (state == "0A" && ok_ip).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

/// A free loopback TCP port (bound, then released; the tiny race is acceptable here).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 if unknown).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of process `pid` (all its threads), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `VmRSS` of process `pid` in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Voluntary plus involuntary context switches of every thread of process `pid`.
pub fn ctx_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// Number of threads of process `pid`.
pub fn threads_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes sent over the loopback interface so far (`/sys/class/net/lo/statistics/tx_bytes`).
pub fn loopback_tx_bytes() -> Option<u64> {
    std::fs::read_to_string("/sys/class/net/lo/statistics/tx_bytes")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The first executable named `name` on `PATH` (also `/usr/sbin` and `/sbin`, where Debian puts
/// HAProxy).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
