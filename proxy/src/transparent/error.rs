//! Why transparent mode refuses to start, in one type every piece of it returns (preflight,
//! the loader, the namespace sockets). Its own module, below all of them, so none of them
//! imports the module that wires them.

/// Why transparent mode refuses to start. Each variant renders as one line saying which
/// precondition failed; nothing is left attached when any of them is returned.
#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    #[error(
        "transparent mode needs root (CAP_BPF and CAP_NET_ADMIN); this process (uid {uid}) lacks {missing}"
    )]
    NotPrivileged { uid: u32, missing: &'static str },
    #[error("the kernel has no usable BPF support: {detail}")]
    NoBpf { detail: String },
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("--cgroup {path}: {reason}")]
    BadCgroup { path: String, reason: String },
    #[error(
        "cannot open this process's own cgroup v2 directory ({reason}); its connects must be told apart from the captured ones"
    )]
    OwnCgroup { reason: String },
    #[error("--netns {path}: cannot open the network namespace")]
    BadNetns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another meshproxy already runs in transparent mode on cgroup {cgroup} (lock {lock} is held)"
    )]
    AlreadyRunning { cgroup: String, lock: String },
    #[error("creating the lock file {lock} failed")]
    Lock {
        lock: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "eBPF object not found (tried {tried}); run `cargo xtask build-ebpf` or pass --ebpf-object PATH"
    )]
    ObjectMissing { tried: String },
    #[error("loading the eBPF object {path} failed")]
    Object {
        path: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object {path} has no program {name:?} (built from another version?)")]
    MissingProgram { path: String, name: &'static str },
    #[error("the eBPF object has no map {name:?} (built from another version?)")]
    MissingMap { name: &'static str },
    #[error("the kernel's verifier rejected program {name}: {detail}")]
    Verifier { name: &'static str, detail: String },
    #[error("attaching {name} to {target} failed")]
    Attach {
        name: &'static str,
        target: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("writing eBPF map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("the outbound listener {addr} is not IPv4; transparent mode redirects IPv4 only")]
    NotIpv4 { addr: std::net::SocketAddr },
    #[error("creating a socket in the pod's network namespace failed")]
    Netns(#[source] std::io::Error),
    #[error("{what} {path} failed: {reason}")]
    Pin {
        what: String,
        path: String,
        reason: String,
    },
    #[error(
        "a meshproxy (pid {pid}) still serves cgroup {cgroup}: stop it first (its capture is removed only once no proxy holds the pod)"
    )]
    StillServed { pid: u32, cgroup: String },
    #[error("nothing is pinned for {what} (see `meshproxy transparent status`)")]
    NotPinned { what: String },
}
