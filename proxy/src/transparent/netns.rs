//! Sockets inside the pod's network namespace while the proxy process stays in the host's.
//!
//! This is ztunnel's in-pod model: the proxy keeps talking to the agent on the host's
//! 127.0.0.1, but every pod-facing socket (the outbound and mTLS listeners, connects to other
//! pods' proxies and to the local app) is *created* in the pod's namespace, so pod-to-pod
//! traffic really crosses the pod's interface. A socket's namespace is fixed when it is
//! created; `setns` only affects the calling thread, so creation happens on one dedicated
//! thread that entered the namespace, and the socket is then used from any thread.
//!
//! [`Netns::socket_factory`] is the [`SocketFactory`] the proxy's wiring hands to the data
//! path's listeners and connections (the admin listener keeps the host's factory).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};

use super::error::TransparentError;
use crate::transport::{MakeSocket, SocketFactory};

/// An open network namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    file: Arc<File>,
    path: PathBuf,
    /// Requests to the thread that lives inside the namespace and creates the sockets.
    maker: mpsc::Sender<SocketRequest>,
}

type SocketRequest = (Domain, mpsc::SyncSender<io::Result<Socket>>);

impl Netns {
    /// Opens the namespace file (`/run/netns/NAME` or `/proc/PID/ns/net`).
    pub fn open(path: &Path) -> Result<Self, TransparentError> {
        let file = File::open(path).map_err(|source| TransparentError::BadNetns {
            path: path.display().to_string(),
            source,
        })?;
        let file = Arc::new(file);
        let maker = spawn_maker(file.clone()).map_err(|source| TransparentError::BadNetns {
            path: path.display().to_string(),
            source,
        })?;
        let ns = Self {
            file,
            path: path.to_path_buf(),
            maker,
        };
        // Fail now, with the path in the message, rather than on the first connection.
        ns.socket(Domain::IPV4)
            .map_err(|source| TransparentError::BadNetns {
                path: path.display().to_string(),
                source,
            })?;
        Ok(ns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sockets of the data path created inside this namespace.
    pub fn socket_factory(&self) -> SocketFactory {
        SocketFactory::in_namespace(Arc::new(self.clone()))
    }

    /// A non-blocking, close-on-exec TCP socket created inside the namespace (a round trip
    /// to the namespace's socket thread: a few microseconds, no thread spawn per socket).
    pub fn socket(&self, domain: Domain) -> io::Result<Socket> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.maker
            .send((domain, tx))
            .map_err(|_| io::Error::other("the netns socket thread is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("the netns socket thread is gone"))?
    }
}

impl MakeSocket for Netns {
    fn tcp_socket(&self, domain: Domain) -> io::Result<Socket> {
        self.socket(domain)
    }
}

/// Starts the thread that enters the namespace once and then creates sockets on request.
/// It ends when every [`Netns`] clone (every sender) is dropped.
fn spawn_maker(file: Arc<File>) -> io::Result<mpsc::Sender<SocketRequest>> {
    let (tx, rx) = mpsc::channel::<SocketRequest>();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("meshproxy-netns".into())
        .spawn(move || {
            let entered = setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
            let failed = entered.is_err();
            let _ = ready_tx.send(entered);
            if failed {
                return;
            }
            for (domain, reply) in rx {
                let _ = reply.send(Socket::new(
                    domain,
                    Type::STREAM.nonblocking().cloexec(),
                    Some(Protocol::TCP),
                ));
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other("the netns socket thread died"))??;
    Ok(tx)
}

/// The cookie of the network namespace `socket` was created in (`SO_NETNS_COOKIE`, Linux
/// 5.14): the value `bpf_get_netns_cookie` returns for the namespace's sockets, which is how
/// the `--sockmap` programs recognise the pod's sockets (a namespace's inode is not
/// available to them).
#[allow(
    unsafe_code,
    reason = "getsockopt(SO_NETNS_COOKIE) has no safe wrapper in nix 0.31 or socket2"
)]
pub fn netns_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    use nix::libc;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `socket` is an open descriptor for the whole call (borrowed); `cookie` and
    // `len` are live locals, and the kernel writes at most `len` (8) bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::Error::other(format!(
            "SO_NETNS_COOKIE returned {len} bytes, expected 8"
        )));
    }
    Ok(cookie)
}
