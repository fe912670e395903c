//! Hitless restart and upgrade: a running proxy hands its listening sockets to its successor.
//!
//! Every proxy serves an offer on a unix socket under `/run/meshproxy` named for what it
//! serves (`handoff-cgroup-<inode>.sock` for a transparent pod, `handoff-sidecar-<id>.sock`
//! otherwise). A new proxy for the same pod or sidecar connects there before binding
//! anything, receives the listeners (and, in transparent mode, the pod's lock) with
//! `SCM_RIGHTS`, builds itself on them, and says `ready` once it serves. Only then does the
//! old proxy stop accepting and drain its live connections (up to `--drain-timeout`) and exit.
//! The sockets never close in between: a connection in a listener's backlog is accepted by
//! whichever process calls `accept` next, so none is refused, and the transparent capture's
//! sockmap slot keeps the same listener. Like Envoy's hot restart, without shared memory.
//!
//! Who may take them: the socket file is 0600 in a root directory and the offer checks the
//! peer's uid (`SO_PEERCRED`) against its own; anyone else is refused and logged.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};
use serde::{Deserialize, Serialize};

/// Where offers live (with the transparent-mode locks).
pub const DIR: &str = "/run/meshproxy";
/// The most descriptors one handoff carries.
const MAX_FDS: usize = 32;
/// How long a successor may take from connecting to `ready` (its start waits for its
/// certificate and intentions: up to a minute).
const READY_WAIT: Duration = Duration::from_secs(90);

/// Why a handoff failed. The successor then starts on its own (binding may fail while the
/// predecessor holds the ports, which says so).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("handoff socket {path}: {reason}")]
    Protocol { path: String, reason: String },
}

/// The offer's path for `key` (`cgroup-<inode>` or `sidecar-<id>`; anything outside
/// `[A-Za-z0-9._-]` becomes `_`, so a service id cannot name another path).
pub fn socket_path(key: &str) -> PathBuf {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(DIR).join(format!("handoff-{safe}.sock"))
}

/// What travels with the descriptors: who offers them, and each one's role, in order.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    pid: u32,
    /// The offer's key (pod or sidecar + agent): a successor takes over only its own.
    key: String,
    roles: Vec<String>,
}

/// Listeners (and the lock) received from a predecessor, taken one by one as the new proxy
/// builds itself; [`Inherited::ready`] then lets the predecessor drain.
#[derive(Debug)]
pub struct Inherited {
    from_pid: u32,
    fds: Mutex<HashMap<String, OwnedFd>>,
    conn: Mutex<Option<UnixStream>>,
}

impl Inherited {
    /// Descriptors by role as a predecessor would have sent them (tests of the code that takes
    /// them over, without a second process).
    #[cfg(test)]
    pub(crate) fn for_test(fds: Vec<(String, OwnedFd)>) -> Self {
        Self {
            from_pid: 0,
            fds: Mutex::new(fds.into_iter().collect()),
            conn: Mutex::new(None),
        }
    }

    /// The predecessor's pid.
    pub fn from_pid(&self) -> u32 {
        self.from_pid
    }

    /// The descriptor of `role`, if the predecessor had one.
    pub fn take(&self, role: &str) -> Option<OwnedFd> {
        self.fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(role)
    }

    /// The listener of `role` if it is bound to `want` (a port of 0 matches any port), as a
    /// tokio listener; `None` otherwise (the settings changed: the new proxy binds afresh and
    /// the old listener closes with its process).
    pub fn listener(
        &self,
        role: &str,
        want: std::net::SocketAddr,
    ) -> Option<tokio::net::TcpListener> {
        let fd = self.take(role)?;
        let l = std::net::TcpListener::from(fd);
        let have = l.local_addr().ok()?;
        let matches = have.ip() == want.ip() && (want.port() == 0 || want.port() == have.port());
        if !matches {
            tracing::info!(%role, inherited = %have, configured = %want, "not reusing an inherited listener: the address changed");
            return None;
        }
        l.set_nonblocking(true).ok()?;
        tokio::net::TcpListener::from_std(l).ok()
    }

    /// Tells the predecessor this proxy serves: it stops accepting and drains.
    pub fn ready(&self) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = conn {
            if let Err(e) = c.write_all(b"ready\n") {
                tracing::warn!(error = %e, pid = self.from_pid, "telling the previous proxy to drain failed; it keeps serving until stopped");
            } else {
                tracing::info!(
                    pid = self.from_pid,
                    "took over from the previous proxy; it drains now"
                );
            }
        }
        let left: Vec<String> = self
            .fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(r, _)| r)
            .collect();
        if !left.is_empty() {
            tracing::info!(roles = ?left, "inherited listeners not used (closed here)");
        }
    }
}

/// Asks a running proxy at `path` for its listeners. `Ok(None)`: nobody serves there (no
/// file, or a stale one), so this proxy starts on its own.
#[allow(
    unsafe_code,
    reason = "descriptors received with SCM_RIGHTS arrive as raw fds (nix 0.31 has no owned form)"
)]
pub fn receive(path: &Path, key: &str) -> Result<Option<Inherited>, HandoffError> {
    let io = |source| HandoffError::Io {
        path: path.display().to_string(),
        source,
    };
    let conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(e)),
    };
    // Only a process of this user may hand listeners to this one (the directory is root's,
    // so this holds already; checked anyway, as the offer checks its peer).
    let me = nix::unistd::geteuid().as_raw();
    let uid = getsockopt(&conn, sockopt::PeerCredentials).map(|c| c.uid());
    if uid != Ok(me) {
        return Err(HandoffError::Protocol {
            path: path.display().to_string(),
            reason: format!("the offering process runs as uid {uid:?}, not {me}"),
        });
    }
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| io(e.into()))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| io(e.into()))? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    let header: Header = serde_json::from_slice(&buf[..n]).map_err(|e| HandoffError::Protocol {
        path: path.display().to_string(),
        reason: format!("bad header: {e}"),
    })?;
    if header.key != key {
        return Err(HandoffError::Protocol {
            path: path.display().to_string(),
            reason: format!("it offers {:?}, not {key:?}", header.key),
        });
    }
    if header.roles.len() != fds.len() {
        return Err(HandoffError::Protocol {
            path: path.display().to_string(),
            reason: format!("{} roles but {} descriptors", header.roles.len(), fds.len()),
        });
    }
    conn.set_read_timeout(None).map_err(io)?;
    tracing::info!(pid = header.pid, roles = ?header.roles, "received the listeners of the running proxy");
    Ok(Some(Inherited {
        from_pid: header.pid,
        fds: Mutex::new(header.roles.into_iter().zip(fds).collect()),
        conn: Mutex::new(Some(conn)),
    }))
}

/// This proxy's listeners as offered to a successor (duplicates of the accept loops'
/// descriptors). [`Offer::withdraw`] closes them: a proxy draining on SIGTERM must let its
/// listeners close, so that new connections are refused rather than left in a backlog.
#[derive(Debug, Clone, Default)]
pub struct Offer(Arc<Mutex<Vec<(String, OwnedFd)>>>);

impl Offer {
    pub fn new(items: Vec<(String, OwnedFd)>) -> Self {
        Self(Arc::new(Mutex::new(items)))
    }

    /// Closes the offered duplicates and removes the offer's file.
    pub fn withdraw(&self, path: &Path) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let _ = std::fs::remove_file(path);
    }
}

/// Serves `offer` at `path` until a successor takes over, then returns (the caller drains).
/// Runs on a thread of its own; without a usable socket it logs why and parks (nothing to
/// take over then).
pub fn offer(path: &Path, key: &str, offer: &Offer) {
    if let Err(e) = serve_offer(path, key, offer) {
        tracing::warn!(error = %e, "no listener handoff: a restart of this proxy will not be hitless");
        // Never return: without an offer there is nothing to take over.
        loop {
            std::thread::park();
        }
    }
}

fn serve_offer(path: &Path, key: &str, offer: &Offer) -> Result<(), HandoffError> {
    let io = |source| HandoffError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(DIR).map_err(io)?;
    // A predecessor's offer (it has handed over to us) or a stale file.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let me = nix::unistd::geteuid().as_raw();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let uid = getsockopt(&conn, sockopt::PeerCredentials).map(|c| c.uid());
        if uid != Ok(me) {
            tracing::warn!(peer_uid = ?uid, "refused a listener handoff to another user");
            continue;
        }
        let sent = {
            let items = offer.0.lock().unwrap_or_else(|p| p.into_inner());
            if items.is_empty() {
                // Withdrawn (draining): the successor starts on its own.
                continue;
            }
            let header = serde_json::to_vec(&Header {
                pid: std::process::id(),
                key: key.to_string(),
                roles: items.iter().map(|(r, _)| r.clone()).collect(),
            })
            .map_err(|e| io(std::io::Error::other(e)))?;
            let raw: Vec<RawFd> = items.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            sendmsg::<()>(
                conn.as_raw_fd(),
                &[IoSlice::new(&header)],
                &[ControlMessage::ScmRights(&raw)],
                MsgFlags::empty(),
                None,
            )
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "sending the listeners to a new proxy failed");
            continue;
        }
        tracing::info!("handed the listeners to a new proxy; serving until it is ready");
        let _ = conn.set_read_timeout(Some(READY_WAIT));
        let mut line = String::new();
        match BufReader::new(&conn).read_line(&mut line) {
            Ok(_) if line.trim() == "ready" => {
                // Our offer's file now belongs to the successor's (it binds its own).
                return Ok(());
            }
            other => {
                tracing::warn!(answer = ?other.map(|_| line.trim().to_string()), "the new proxy did not take over; still serving");
            }
        }
    }
    Ok(())
}

/// The offer's entry for the listener (or lock) `fd` in `role`: a duplicate, since the
/// original stays with its accept loop. `None` if the descriptor cannot be duplicated (it is
/// then not offered).
pub fn offered(role: impl Into<String>, fd: &impl AsFd) -> Option<(String, OwnedFd)> {
    let fd = fd.as_fd().try_clone_to_owned().ok()?;
    Some((role.into(), fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_directory() {
        assert_eq!(
            socket_path("sidecar-../../etc/x"),
            Path::new("/run/meshproxy/handoff-sidecar-.._.._etc_x.sock")
        );
        assert_eq!(
            socket_path("cgroup-42"),
            Path::new("/run/meshproxy/handoff-cgroup-42.sock")
        );
    }

    /// A real handoff over a unix socket: the successor accepts a connection queued on the
    /// listener it received, and the offer returns only after `ready`.
    #[test]
    fn listeners_pass_to_the_successor_which_accepts_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let items = vec![offered("public", &tcp).unwrap()];
        let offer_path = path.clone();
        let server =
            std::thread::spawn(move || serve_offer(&offer_path, "pod-1", &Offer::new(items)));
        // Bounded wait for the offer's thread to bind; a proxy for another pod is refused
        // (and the offer goes on serving).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match receive(&path, "pod-2") {
                Ok(None) => {}
                Ok(Some(_)) => panic!("another pod's proxy took the listeners"),
                Err(e) => {
                    assert!(e.to_string().contains("it offers \"pod-1\""), "{e}");
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no offer");
            std::thread::sleep(Duration::from_millis(5));
        }
        let inherited = loop {
            if let Some(i) = receive(&path, "pod-1").unwrap() {
                break i;
            }
            assert!(std::time::Instant::now() < deadline, "no offer");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(inherited.from_pid(), std::process::id());
        // A client connects before the successor accepts: it waits in the shared backlog.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let fd = inherited.take("public").unwrap();
        let l = std::net::TcpListener::from(fd);
        assert_eq!(l.local_addr().unwrap(), addr);
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(!server.is_finished());
        inherited.ready();
        server.join().unwrap().unwrap();
    }

    /// Another user cannot take the listeners: the offer's socket file is 0600, so an
    /// unmodified Python client run as uid 4242 is refused at connect (the test runs as root,
    /// as the suite does).
    #[test]
    fn another_user_cannot_connect_to_the_offer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("h.sock");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let items = vec![offered("public", &tcp).unwrap()];
        let offer_path = path.clone();
        std::thread::spawn(move || serve_offer(&offer_path, "pod-1", &Offer::new(items)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists()
            || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777 != 0o600
        {
            assert!(std::time::Instant::now() < deadline, "no offer");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242", "--clear-groups", "/usr/bin/python3", "-c"])
            .arg("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('connected')\nexcept Exception as e: print(type(e).__name__)")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(said.trim(), "PermissionError", "{out:?}");
    }

    #[test]
    fn no_offer_means_start_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            receive(&dir.path().join("none.sock"), "k")
                .unwrap()
                .is_none()
        );
        // A stale file nobody listens on.
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(receive(&stale, "k").unwrap().is_none());
    }
}
