//! Simulated pods for the transparent-mode tests: a pod is a network namespace plus a cgroup v2
//! directory, which is what a container runtime gives a Kubernetes pod.
//!
//! [`PodPair::create`] makes two pods joined by one veth pair on a private /24 inside those
//! namespaces (so test traffic never leaves namespaces the test created), and a cgroup under
//! the unified hierarchy for each. [`Pod::command`] starts a process *inside* a pod: it joins
//! the pod's cgroup (so the pod's cgroup eBPF programs see its sockets) and its network
//! namespace before `exec`. [`Capture`] records every frame on a pod's veth, to prove what
//! crossed the wire between the pods. [`Lan::create`] puts any number of such hosts on one
//! bridge, for the multi-host tests.
//!
//! Everything is removed on drop, in reverse order: processes started through the pod are
//! killed by PID, the cgroups are emptied and removed, the namespaces deleted (which deletes
//! the veth pair). All of it needs root; [`require_root`] says so in one line.
//!
//! `unsafe` is allowed here for syscalls std does not wrap: joining a cgroup and a namespace
//! between fork and exec (`pre_exec`), an `AF_PACKET` socket for the capture, and kill(2).
#![allow(
    unsafe_code,
    reason = "syscalls std does not wrap: setns, cgroup join in pre_exec, AF_PACKET, kill"
)]

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The cgroup v2 mount of this machine.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails with one clear line unless the test runs as root (network namespaces, cgroups and
/// eBPF all need it; CI runs as root).
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this test needs root (network namespaces, cgroups, eBPF); CI runs it as root");
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One simulated pod (a description: the [`PodPair`] that made it owns and removes it).
#[derive(Debug, Clone)]
pub struct Pod {
    /// `ip netns` name (also the cgroup directory name).
    pub name: String,
    /// The pod's address on the veth.
    pub ip: Ipv4Addr,
    /// The pod's end of the veth pair.
    pub veth: String,
    /// The pod's cgroup v2 directory.
    pub cgroup: PathBuf,
}

impl Pod {
    /// `port` on the pod's IPv4 address: where a client in another pod connects.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }

    /// Path of the network namespace file (what `--netns` takes).
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// A command that runs inside this pod: in its cgroup and its network namespace. Whatever
    /// is still running in the pod's cgroup when the pod goes away is killed by PID.
    pub fn command(&self, program: &str) -> anyhow::Result<Command> {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", self.cgroup.display()))?;
        let netns = File::open(self.netns_path())
            .with_context(|| format!("opening {}", self.netns_path().display()))?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs between fork and exec; it only makes two syscalls (write,
        // setns) on descriptors opened before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process itself.
                (&procs).write_all(b"0")?;
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a fresh thread that has entered this pod's network namespace (not its
    /// cgroup: a thread cannot be in another cgroup than its process). For sockets the test
    /// itself opens inside the pod, e.g. an app server.
    pub fn in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let netns = File::open(self.netns_path())?;
        std::thread::spawn(move || -> anyhow::Result<T> {
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in pod netns panicked"))?
    }

    /// PIDs currently in the pod's cgroup.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        cgroup_pids(&self.cgroup)
    }

    /// Creates the pod's network namespace, with its loopback up.
    fn add_netns(&self) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.name])?;
        ip(&["-n", &self.name, "link", "set", "lo", "up"])
    }

    /// Gives the pod's end of the veth its `/24` address and brings it up.
    fn veth_up(&self) -> anyhow::Result<()> {
        let cidr = format!("{}/24", self.ip);
        ip(&["-n", &self.name, "addr", "add", &cidr, "dev", &self.veth])?;
        ip(&["-n", &self.name, "link", "set", &self.veth, "up"])
    }

    fn teardown(&self) {
        empty_and_remove(&self.cgroup);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn cgroup_pids(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the fail-closed capture a `meshproxy run --transparent` pinned for `cgroup`
/// (`/sys/fs/bpf/mesh/cgroup-<inode>/`, as `meshproxy transparent remove` does), so no test
/// leaves programs attached or loaded; its lock file too. Nothing pinned: nothing to do.
pub fn unpin_capture(cgroup: &Path) {
    use meshproxy::transparent::{pins, preflight};
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(cgroup).map(|m| m.ino()) else {
        return;
    };
    let pod = pins::PodPins::for_cgroup(ino);
    if pod.exists() {
        let _ = pod.remove();
    }
    let _ = std::fs::remove_file(preflight::lock_path(ino));
    let _ = std::fs::remove_file(meshproxy::handoff::socket_path(&pod.id));
}

/// Everything still in a cgroup the test made was started by the test: kill it by PID, then
/// wait (bounded) until the cgroup is empty so it can be removed, with any capture pinned for
/// it ([`unpin_capture`]).
fn empty_and_remove(cgroup: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cgroup_pids(cgroup);
        for pid in &pids {
            // SAFETY: kill(2) by PID, no memory involved.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if pids.is_empty() {
            unpin_capture(cgroup);
        }
        if (pids.is_empty() && std::fs::remove_dir(cgroup).is_ok())
            || !cgroup.exists()
            || Instant::now() >= deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup v2 directory of the test's own, outside every pod, for processes that must not
/// share the test's cgroup (e.g. proxies in a cgroup that is neither a pod's nor one of
/// their ancestors). Whatever still runs in it is killed by PID on drop, then it is removed.
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn create(hint: &str) -> anyhow::Result<Self> {
        require_root()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(CGROUP2_ROOT).join(format!(
            "mesh-test-{hint}-{}x{n}",
            std::process::id() % 100_000
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// Makes `cmd`'s process join this cgroup between fork and exec.
    pub fn join_on_exec(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", self.path.display()))?;
        // SAFETY: the closure runs between fork and exec; it makes one write(2) on a
        // descriptor opened before the fork and allocates nothing.
        unsafe {
            cmd.pre_exec(move || (&procs).write_all(b"0"));
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        empty_and_remove(&self.path);
    }
}

/// Two pods joined by a veth pair: `a` is `10.X.Y.1/24`, `b` is `10.X.Y.2/24`.
pub struct PodPair {
    pub a: Pod,
    pub b: Pod,
}

impl PodPair {
    /// Creates both namespaces, the veth pair, addresses, loopback, and both cgroups. Names
    /// include the test process's PID and a counter, so parallel tests never collide.
    pub fn create() -> anyhow::Result<Self> {
        require_root()?;
        if !Path::new(CGROUP2_ROOT).join("cgroup.procs").exists() {
            bail!("no cgroup v2 hierarchy at {CGROUP2_ROOT}");
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("mt{}x{n}", pid % 100_000);
        let net = (
            100 + (pid % 100) as u8,
            ((pid / 100) as u8).wrapping_add(n as u8 * 7),
        );
        let mk = |side: &str, host: u8| Pod {
            name: format!("{tag}{side}"),
            ip: Ipv4Addr::new(10, net.0, net.1, host),
            veth: format!("{tag}{side}v"),
            cgroup: Path::new(CGROUP2_ROOT).join(format!("mesh-test-{tag}{side}")),
        };
        let pair = PodPair {
            a: mk("a", 1),
            b: mk("b", 2),
        };
        // From here on, Drop cleans up whatever was made.
        for p in [&pair.a, &pair.b] {
            p.add_netns()?;
            std::fs::create_dir(&p.cgroup)
                .with_context(|| format!("creating cgroup {}", p.cgroup.display()))?;
        }
        ip(&[
            "link",
            "add",
            &pair.a.veth,
            "netns",
            &pair.a.name,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b.veth,
            "netns",
            &pair.b.name,
        ])?;
        pair.a.veth_up()?;
        pair.b.veth_up()?;
        Ok(pair)
    }
}

impl Drop for PodPair {
    fn drop(&mut self) {
        self.a.teardown();
        self.b.teardown();
    }
}

/// Hosts on one Ethernet segment, for the multi-host tests: a "switch" network namespace
/// holding a bridge, and one [`Pod`] per host (its own namespace and cgroup) joined to the
/// bridge by a veth pair, each with its own address on a private `10.213.X.0/24` (X from the
/// test's PID). Nothing is added to the root namespace: the veth ends are created directly in
/// the host and switch namespaces, so the hosts reach each other and nothing else.
///
/// Dropping it removes everything: each host's processes are killed by PID (its cgroup), its
/// cgroup and namespace removed, then the switch namespace (the veth pairs go with them).
pub struct Lan {
    pub hosts: Vec<Pod>,
    tag: String,
    switch: String,
}

impl Lan {
    /// Creates the switch and one host per `(name, last address byte)`. Host names are
    /// suffixes (at most 3 characters, they end up in interface names) of a tag with the
    /// test's PID and a counter, so parallel tests never collide.
    pub fn create(hosts: &[(&str, u8)]) -> anyhow::Result<Self> {
        require_root()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("ml{}x{n}", pid % 100_000);
        let subnet = ((pid + n * 37) % 250) as u8;
        let mut lan = Lan {
            hosts: Vec::new(),
            switch: format!("{tag}sw"),
            tag: tag.clone(),
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &lan.switch])?;
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"])?;
        for (name, last) in hosts {
            let host = Pod {
                name: format!("{tag}{name}"),
                ip: Ipv4Addr::new(10, 213, subnet, *last),
                veth: format!("{tag}{name}"),
                cgroup: Path::new(CGROUP2_ROOT).join(format!("mesh-test-{tag}{name}")),
            };
            host.add_netns()?;
            lan.hosts.push(host.clone());
            std::fs::create_dir(&host.cgroup)
                .with_context(|| format!("creating cgroup {}", host.cgroup.display()))?;
            let port = format!("{}p", host.veth);
            ip(&[
                "link",
                "add",
                &host.veth,
                "netns",
                &host.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.switch,
            ])?;
            ip(&[
                "-n",
                &lan.switch,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ])?;
            host.veth_up()?;
        }
        Ok(lan)
    }

    /// The host created under `name`; panics on a name [`Lan::create`] was not given.
    pub fn host(&self, name: &str) -> &Pod {
        let full = format!("{}{name}", self.tag);
        self.hosts
            .iter()
            .find(|h| h.name == full)
            .unwrap_or_else(|| panic!("no host {name} on this LAN"))
    }
}

impl Lan {
    /// Every namespace file and cgroup directory it made: what must be gone once it is dropped.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut all = vec![Path::new("/var/run/netns").join(&self.switch)];
        for h in &self.hosts {
            all.extend([h.netns_path(), h.cgroup.clone()]);
        }
        all
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            h.teardown();
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// Every frame seen on one pod's veth while the capture runs (`AF_PACKET`, all protocols).
pub struct Capture {
    stop: Arc<AtomicUsize>,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Upper bound on what one capture keeps, so a runaway test cannot eat the machine.
const CAPTURE_LIMIT: usize = 256 << 20;

impl Capture {
    /// Starts capturing on `pod`'s veth.
    pub fn start(pod: &Pod) -> anyhow::Result<Self> {
        let ifname = pod.veth.clone();
        let fd = pod.in_netns(move || open_packet_socket(&ifname))??;
        let stop = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (s, f) = (stop.clone(), frames.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut kept = 0usize;
            while s.load(Ordering::Relaxed) == 0 && kept < CAPTURE_LIMIT {
                // SAFETY: fd is a valid socket owned by this thread; buf is writable.
                let n = unsafe {
                    libc::recv(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n > 0 {
                    kept += n as usize;
                    f.lock().unwrap().push(buf[..n as usize].to_vec());
                }
                // n < 0 is the 100 ms receive timeout: loop and check `stop`.
            }
        });
        Ok(Self {
            stop,
            frames,
            thread: Some(thread),
        })
    }

    /// Stops and returns the frames seen.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(1, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.frames.lock().unwrap())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True when `needle` occurs in any frame.
pub fn frames_contain(frames: &[Vec<u8>], needle: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

/// An `AF_PACKET` socket bound to `ifname` in the calling thread's network namespace, with a
/// 100 ms receive timeout.
fn open_packet_socket(ifname: &str) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if raw < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll and the length matches it.
    let rc = unsafe {
        libc::bind(
            raw,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        bail!(
            "binding AF_PACKET to {ifname}: {}",
            std::io::Error::last_os_error()
        );
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: tv is a valid timeval and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// A network namespace joined to the host's by a veth pair, for host-mode tests (a proxy that
/// captures the whole host): the host end is `198.18.X.1/24`, the namespace end
/// `198.18.X.2/24`. The host gets a route for that /24, so it comes from the benchmarking range
/// (RFC 2544, 198.18.0.0/15), which no real network the machine may be on uses.
/// [`HostLink::far`] describes the namespace end as a [`Pod`] (with no cgroup of its own) so
/// the pod helpers (servers inside it) work there. Dropping it deletes the namespace, which
/// deletes the veth pair with it.
pub struct HostLink {
    pub far: Pod,
    pub host_ip: Ipv4Addr,
    host_veth: String,
}

impl HostLink {
    pub fn create() -> anyhow::Result<Self> {
        require_root()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("mh{}x{n}", pid % 100_000);
        let net = (pid.wrapping_add(n * 7) % 256) as u8;
        let link = HostLink {
            far: Pod {
                name: tag.clone(),
                ip: Ipv4Addr::new(198, 18, net, 2),
                veth: format!("{tag}n"),
                cgroup: PathBuf::new(),
            },
            host_ip: Ipv4Addr::new(198, 18, net, 1),
            host_veth: format!("{tag}h"),
        };
        // From here on, Drop cleans up whatever was made.
        link.far.add_netns()?;
        ip(&[
            "link",
            "add",
            &link.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &link.far.veth,
            "netns",
            &link.far.name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", link.host_ip),
            "dev",
            &link.host_veth,
        ])?;
        ip(&["link", "set", &link.host_veth, "up"])?;
        link.far.veth_up()?;
        Ok(link)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.far.name]);
        // Normally gone with the namespace; left only if the namespace never got its end.
        let _ = ip(&["link", "del", &self.host_veth]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::TcpListener;

    use super::*;

    /// A process started in pod A is in A's cgroup and netns, reaches pod B over the veth, the
    /// capture on B's veth sees its bytes, and drop removes namespaces and cgroups.
    #[test]
    fn pods_connect_over_veth_and_clean_up() {
        let pair = PodPair::create().expect("create pods");
        let (b_ip, a_cgroup) = (pair.b.ip, pair.a.cgroup.clone());
        let listener = pair
            .b
            .in_netns(move || TcpListener::bind((b_ip, 0)))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let cap = Capture::start(&pair.b).unwrap();
        let script = format!(
            "import socket,sys\n\
             print(open('/proc/self/cgroup').read().strip().splitlines()[-1])\n\
             s=socket.create_connection(('{b_ip}',{port}),timeout=10)\n\
             s.sendall(b'pod-marker-5e1f')\ns.close()\n"
        );
        let mut cmd = pair.a.command("python3").unwrap();
        let out = cmd.args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cg = String::from_utf8_lossy(&out.stdout);
        let name = a_cgroup.file_name().unwrap().to_string_lossy().into_owned();
        assert!(cg.trim().ends_with(&name), "client ran in cgroup {cg:?}");
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pod-marker-5e1f");
        let frames = cap.finish();
        assert!(
            frames_contain(&frames, b"pod-marker-5e1f"),
            "capture missed the bytes"
        );
        let (ns, cgroup) = (pair.a.netns_path(), pair.a.cgroup.clone());
        drop(pair);
        assert!(!ns.exists(), "netns left behind");
        assert!(!cgroup.exists(), "cgroup left behind");
    }
}
