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
use std::os::fd::AsFd;
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
    /// Work for the thread that lives inside the namespace (creating sockets, netlink).
    maker: mpsc::Sender<Job>,
}

/// Something to run on the namespace's thread.
type Job = Box<dyn FnOnce() + Send>;

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
        self.run(move || {
            Socket::new(
                domain,
                Type::STREAM.nonblocking().cloexec(),
                Some(Protocol::TCP),
            )
        })?
    }

    /// Runs `f` on the thread inside the namespace and returns its result: whatever must be
    /// created there (sockets, a netlink socket for the pod's routing, a `/proc/sys/net` file).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let gone = || io::Error::other("the netns socket thread is gone");
        let (tx, rx) = mpsc::sync_channel(1);
        self.maker
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }
}

impl MakeSocket for Netns {
    fn tcp_socket(&self, domain: Domain) -> io::Result<Socket> {
        self.socket(domain)
    }
}

/// Starts the thread that enters the namespace once and then runs jobs (creates sockets) on
/// request.
/// It ends when every [`Netns`] clone (every sender) is dropped.
fn spawn_maker(file: Arc<File>) -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
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
            for job in rx {
                job();
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other("the netns socket thread died"))??;
    Ok(tx)
}
