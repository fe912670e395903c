//! Loading, configuring and attaching the eBPF programs with aya.
//!
//! Two steps, so the proxy refuses to start before binding anything when the environment is
//! wrong, yet attaches only once its listeners exist: [`Prepared::prepare`] runs the preflight
//! checks, takes the per-cgroup lock and loads every program (the verifier runs here);
//! [`Prepared::attach`] fills the maps and creates the `bpf_link`s.
//!
//! Fail closed (the default): the maps are opened from, or created and pinned in, the pod's
//! bpffs directory ([`super::pins`]) before the programs are loaded, so a restarted proxy's
//! programs share its predecessor's maps; each link is pinned there once attached, replacing
//! the predecessor's. The capture then outlives this process (connections are refused while no
//! proxy serves the pod). If attaching fails, the links not yet pinned go with this process,
//! and the predecessor's pinned ones (if any) stay: the pod is never left uncaptured.
//! `--fail-open`: nothing is pinned; the links belong to this process's file descriptors, so
//! the kernel detaches them when it exits for any reason (SIGKILL included).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;

use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, SockMap, lpm_trie::Key};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Program, ProgramError, SkLookup, SockOps};
use aya::{Ebpf, EbpfError, EbpfLoader};
use mesh_ebpf_common as common;
use tokio::net::TcpListener;

use super::args::TransparentConfig;
use super::error::TransparentError;
use super::netns::Netns;
use super::pins::{PodPins, PodRecord};
use super::preflight::{self, Cgroup};
use crate::transport::SocketFactory;

/// Programs loaded into the kernel and checked by the verifier, not attached yet.
pub struct Prepared {
    config: TransparentConfig,
    ebpf: Ebpf,
    cgroup: Cgroup,
    proxy_cgroup_id: u64,
    netns: Option<Netns>,
    lock: File,
    object: PathBuf,
    /// Where the capture is pinned; `None` with `--fail-open`.
    pins: Option<PodPins>,
}

/// The maps shared with a predecessor through their pins: all of them.
const PINNED_MAPS: [&str; 13] = [
    common::MAP_CONFIG,
    common::MAP_ORIG_BY_COOKIE,
    common::MAP_ORIG_BY_CLIENT,
    common::MAP_EXCLUDED_OUT_PORTS,
    common::MAP_EXCLUDED_UIDS,
    common::MAP_EXCLUDED_CIDRS4,
    common::MAP_EXCLUDED_CIDRS6,
    common::MAP_INBOUND_PORTS,
    common::MAP_INBOUND_LISTENER,
    common::MAP_STATS,
    common::MAP_OUTBOUND6,
    common::MAP_ORIG6_BY_COOKIE,
    common::MAP_ORIG6_BY_CLIENT,
];

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("cgroup", &self.cgroup.path)
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

/// Attached programs. Dropping this detaches everything and releases the lock.
#[derive(Debug)]
pub struct Attached {
    kernel: Kernel,
    /// The links are pinned (not `--fail-open`).
    pinned: bool,
    cgroup: PathBuf,
    netns: Option<PathBuf>,
    /// The outbound listener redirected IPv4 connects go to (shown in the "ready" line).
    pub outbound: SocketAddrV4,
    /// The IPv6 outbound listener IPv6 connects go to (`None`: they go out unchanged).
    outbound6: Option<SocketAddrV6>,
    inbound_ports: Vec<u16>,
    /// The pod's caller-address routing, once set up (see [`super::source`]).
    pub(super) caller: Option<CallerRouting>,
}

/// The caller-address routing set up in a pod's namespace, and the connects that use it.
#[derive(Debug)]
pub struct CallerRouting {
    pub netns: Netns,
    pub source: Arc<super::source::CallerAddress>,
}

/// What [`Attached`] holds in the kernel: the loaded object (and the links it owns), the
/// attach lock, and the maps user space reads.
struct Kernel {
    /// Held for the links it owns.
    _ebpf: Ebpf,
    lock: File,
    /// Entries are removed once read, so a later connection that reuses the client port
    /// without being redirected (one aimed at the listener itself) cannot inherit them.
    orig_by_client: std::sync::Mutex<HashMap<MapData, common::ClientKey, common::OrigDst>>,
    /// The same for IPv6 connects.
    orig6_by_client: std::sync::Mutex<HashMap<MapData, common::ClientKey6, common::OrigDst6>>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").finish_non_exhaustive()
    }
}

/// Counters the programs keep (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub redirected: u64,
    pub excluded: u64,
    pub inbound_steered: u64,
    pub orig_recorded: u64,
    /// IPv6 connects redirected (included in `redirected`).
    pub redirected6: u64,
    /// Inbound connections to captured ports dropped because no proxy listened (fail
    /// closed): kept in the pinned map, so the next proxy shows what was refused while the
    /// pod had none.
    pub inbound_refused: u64,
}

impl Stats {
    /// Every counter with its metric label, for `/metrics`.
    pub fn events(&self) -> [(&'static str, u64); 6] {
        [
            ("redirected", self.redirected),
            ("redirected6", self.redirected6),
            ("excluded", self.excluded),
            ("inbound_steered", self.inbound_steered),
            ("orig_recorded", self.orig_recorded),
            ("inbound_refused", self.inbound_refused),
        ]
    }
}

/// In attach order: the connect programs last, once what they record is re-keyed and hidden.
const CGROUP_PROGRAMS: [&str; 5] = [
    common::PROG_SOCK_OPS,
    common::PROG_GETPEERNAME4,
    common::PROG_GETPEERNAME6,
    common::PROG_CONNECT4,
    common::PROG_CONNECT6,
];

fn is_enosys(e: &EbpfError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(38)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The verifier's reason: the last line of its log that is not one of the statistics it
/// ends with ("processed N insns ...", "stack depth ...", "verification time ...").
pub fn verifier_reason(log: &str) -> String {
    const STATISTICS: [&str; 3] = ["processed ", "stack depth", "verification time"];
    log.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !STATISTICS.iter().any(|s| l.starts_with(s)))
        .map_or_else(|| "no verifier log".to_string(), str::to_string)
}

fn load_error(name: &'static str, e: ProgramError) -> TransparentError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => TransparentError::Verifier {
            name,
            detail: format!("{io_error}: {}", verifier_reason(&verifier_log.to_string())),
        },
        other => TransparentError::Verifier {
            name,
            detail: other.to_string(),
        },
    }
}

impl Prepared {
    /// Preflight checks, the lock (taken, or `inherited` from the proxy this one takes over
    /// from), and loading (verifying) every program.
    pub fn prepare(
        config: &TransparentConfig,
        inherited: Option<File>,
    ) -> Result<Self, TransparentError> {
        preflight::check_privileges()?;
        let (cgroup, own_cgroup) = preflight::check_cgroup(config.cgroup.as_deref())?;
        let proxy_cgroup_id = own_cgroup.id;
        let netns = config.netns.as_deref().map(Netns::open).transpose()?;
        let object = preflight::find_object(config.ebpf_object.as_deref())?;
        let mut lock = match inherited {
            Some(lock) => lock,
            None => preflight::take_lock(&cgroup)?,
        };
        let pins = PodPins::for_cgroup(cgroup.id);
        let pins = if config.fail_open {
            if pins.exists() {
                tracing::warn!(
                    pod = %pins.id,
                    "--fail-open: removing the fail-closed capture an earlier proxy left pinned"
                );
                pins.remove()?;
            }
            None
        } else {
            pins.create()?;
            Some(pins)
        };
        let record = PodRecord {
            pid: std::process::id(),
            cgroup: cgroup.path.clone(),
            netns: netns.as_ref().map(|n| n.path().to_path_buf()),
            fail_open: config.fail_open,
        };
        record
            .write_to(&mut lock)
            .map_err(|source| TransparentError::Lock {
                lock: preflight::lock_path(cgroup.id).display().to_string(),
                source,
            })?;
        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&str, PathBuf)> = pins
            .iter()
            .flat_map(|p| PINNED_MAPS.iter().map(|m| (*m, p.map_path(m))))
            .collect();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load_file(&object).map_err(|source| {
            if is_enosys(&source) {
                TransparentError::NoBpf {
                    detail: source.to_string(),
                }
            } else {
                TransparentError::Object {
                    path: object.display().to_string(),
                    source: Box::new(source),
                }
            }
        })?;
        let missing = |name| TransparentError::MissingProgram {
            path: object.display().to_string(),
            name,
        };
        for name in [
            common::PROG_CONNECT4,
            common::PROG_GETPEERNAME4,
            common::PROG_CONNECT6,
            common::PROG_GETPEERNAME6,
        ] {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name).ok_or_else(|| missing(name))?;
            p.load().map_err(|e| load_error(name, e))?;
        }
        let p: &mut SockOps = program(&mut ebpf, common::PROG_SOCK_OPS)
            .ok_or_else(|| missing(common::PROG_SOCK_OPS))?;
        p.load().map_err(|e| load_error(common::PROG_SOCK_OPS, e))?;
        if netns.is_some() {
            let p: &mut SkLookup = program(&mut ebpf, common::PROG_SK_LOOKUP)
                .ok_or_else(|| missing(common::PROG_SK_LOOKUP))?;
            p.load()
                .map_err(|e| load_error(common::PROG_SK_LOOKUP, e))?;
        }
        Ok(Self {
            config: config.clone(),
            ebpf,
            cgroup,
            proxy_cgroup_id,
            netns,
            lock,
            object,
            pins,
        })
    }

    /// The pod's network namespace, if `--netns` was given.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Where the data path's sockets are created: in the pod's namespace with `--netns`, else
    /// in the proxy's own.
    pub fn socket_factory(&self) -> SocketFactory {
        self.netns
            .as_ref()
            .map_or_else(SocketFactory::host, Netns::socket_factory)
    }

    /// Fills the maps and attaches. `outbound_listener` is the bound outbound listener (in
    /// the pod's namespace with `--netns`) and `outbound6` its IPv6 twin's address if one could be bound (without it IPv6
    /// connects are not redirected); `inbound` is the mTLS listener that gets the app's
    /// `app_ports` (minus the excluded ones) when `--netns` was given, and `inbound6` its
    /// IPv6 twin (`[::]`, v6-only), which gets them over IPv6 (without it IPv6 connections to
    /// those ports are not steered).
    pub fn attach(
        mut self,
        outbound_listener: &TcpListener,
        outbound6: Option<SocketAddr>,
        inbound: &TcpListener,
        inbound6: Option<&TcpListener>,
        app_ports: &[u16],
    ) -> Result<Attached, TransparentError> {
        let outbound = outbound_listener
            .local_addr()
            .map_err(TransparentError::Netns)?;
        let outbound = match outbound {
            SocketAddr::V4(a) => a,
            // An unspecified IPv4 bind is reachable on loopback.
            SocketAddr::V6(_) => return Err(TransparentError::NotIpv4 { addr: outbound }),
        };
        let target_ip = if outbound.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST
        } else {
            *outbound.ip()
        };
        let cfg = common::Config {
            outbound_ip4: u32::from_ne_bytes(target_ip.octets()),
            outbound_port: u32::from(outbound.port().to_be()),
            proxy_cgroup_id: self.proxy_cgroup_id,
            flags: common::FLAG_ENABLED
                | common::FLAG_SKIP_LOOPBACK
                | if self.pins.is_some() {
                    common::FLAG_FAIL_CLOSED
                } else {
                    0
                },
            _reserved: 0,
        };
        let map_err = |name| {
            move |source| TransparentError::Map {
                name,
                source: Box::new(source),
            }
        };
        // Maps opened from a predecessor's pins hold its settings: each set is replaced.
        {
            let m = map_mut(&mut self.ebpf, common::MAP_EXCLUDED_OUT_PORTS)?;
            replace_keys(m, &self.config.exclude_outbound_ports)
                .map_err(map_err(common::MAP_EXCLUDED_OUT_PORTS))?;
        }
        {
            let m = map_mut(&mut self.ebpf, common::MAP_EXCLUDED_UIDS)?;
            replace_keys(m, &self.config.exclude_uids)
                .map_err(map_err(common::MAP_EXCLUDED_UIDS))?;
        }
        {
            let m = map_mut(&mut self.ebpf, common::MAP_EXCLUDED_CIDRS4)?;
            let keys: Vec<Key<u32>> = self
                .config
                .exclude_cidrs
                .iter()
                .filter_map(|c| match c.addr {
                    IpAddr::V4(a) => Some(Key::new(
                        u32::from(c.prefix),
                        u32::from_ne_bytes(a.octets()),
                    )),
                    IpAddr::V6(_) => None,
                })
                .collect();
            replace_prefixes(m, &keys).map_err(map_err(common::MAP_EXCLUDED_CIDRS4))?;
        }
        {
            let m = map_mut(&mut self.ebpf, common::MAP_EXCLUDED_CIDRS6)?;
            let keys: Vec<Key<[u32; 4]>> = self
                .config
                .exclude_cidrs
                .iter()
                .filter_map(|c| match c.addr {
                    IpAddr::V6(a) => Some(Key::new(u32::from(c.prefix), ip6_words(&a))),
                    IpAddr::V4(_) => None,
                })
                .collect();
            replace_prefixes(m, &keys).map_err(map_err(common::MAP_EXCLUDED_CIDRS6))?;
        }
        let mut inbound_ports: Vec<u16> = app_ports
            .iter()
            .copied()
            .filter(|p| *p != 0 && !self.config.exclude_inbound_ports.contains(p))
            .collect();
        inbound_ports.sort_unstable();
        inbound_ports.dedup();
        if self.netns.is_some() {
            {
                let m = map_mut(&mut self.ebpf, common::MAP_INBOUND_PORTS)?;
                replace_keys(m, &inbound_ports).map_err(map_err(common::MAP_INBOUND_PORTS))?;
            }
            let mut m: SockMap<&mut MapData> =
                map_mut(&mut self.ebpf, common::MAP_INBOUND_LISTENER)?;
            m.set(common::INBOUND_LISTENER_INDEX, inbound, 0)
                .map_err(map_err(common::MAP_INBOUND_LISTENER))?;
            if let Some(inbound6) = inbound6 {
                m.set(common::INBOUND_LISTENER6_INDEX, inbound6, 0)
                    .map_err(map_err(common::MAP_INBOUND_LISTENER))?;
            }
        }
        let outbound6 = match outbound6 {
            Some(SocketAddr::V6(a)) => {
                let ip = if a.ip().is_unspecified() {
                    Ipv6Addr::LOCALHOST
                } else {
                    *a.ip()
                };
                Some(SocketAddrV6::new(ip, a.port(), 0, 0))
            }
            _ => None,
        };
        {
            // Written either way: a predecessor's record may say enabled.
            let mut m: Array<&mut MapData, common::Outbound6> =
                map_mut(&mut self.ebpf, common::MAP_OUTBOUND6)?;
            let rec = outbound6.map_or(common::Outbound6::default(), |a| common::Outbound6 {
                ip6: ip6_words(a.ip()),
                port: u32::from(a.port().to_be()),
                enabled: 1,
            });
            m.set(0, rec, 0).map_err(map_err(common::MAP_OUTBOUND6))?;
        }
        {
            let mut m: Array<&mut MapData, common::Config> =
                map_mut(&mut self.ebpf, common::MAP_CONFIG)?;
            m.set(0, cfg, 0).map_err(map_err(common::MAP_CONFIG))?;
        }

        let attach_err = |name, target: &str| {
            let target = target.to_string();
            move |source| TransparentError::Attach {
                name,
                target,
                source: Box::new(source),
            }
        };

        // connect4 last: by then sock_ops records what it redirects.
        let target = self.cgroup.path.display().to_string();
        let cgroup_programs: &[&'static str] = if self.config.external_outbound_capture {
            &[]
        } else {
            &CGROUP_PROGRAMS
        };
        let pins = self.pins.as_ref();
        for &name in cgroup_programs {
            let fd = &self.cgroup.dir;
            match self.ebpf.program_mut(name) {
                Some(Program::SockOps(p)) => {
                    let id = p
                        .attach(fd, CgroupAttachMode::Single)
                        .map_err(attach_err(name, &target))?;
                    if let Some(pins) = pins {
                        let link = p.take_link(id).map_err(attach_err(name, &target))?;
                        pin(pins, name, link, &target)?;
                    }
                }
                Some(Program::CgroupSockAddr(p)) => {
                    let id = p
                        .attach(fd, CgroupAttachMode::Single)
                        .map_err(attach_err(name, &target))?;
                    if let Some(pins) = pins {
                        let link = p.take_link(id).map_err(attach_err(name, &target))?;
                        pin(pins, name, link, &target)?;
                    }
                }
                _ => {
                    return Err(TransparentError::MissingProgram {
                        path: self.object.display().to_string(),
                        name,
                    });
                }
            }
        }
        if let Some(ns) = &self.netns {
            let p: &mut SkLookup = program(&mut self.ebpf, common::PROG_SK_LOOKUP).ok_or(
                TransparentError::MissingProgram {
                    path: self.object.display().to_string(),
                    name: common::PROG_SK_LOOKUP,
                },
            )?;
            let target = ns.path().display().to_string();
            let id = p
                .attach(ns.file())
                .map_err(attach_err(common::PROG_SK_LOOKUP, &target))?;
            if let Some(pins) = pins {
                let link = p
                    .take_link(id)
                    .map_err(attach_err(common::PROG_SK_LOOKUP, &target))?;
                pin(pins, common::PROG_SK_LOOKUP, link, &target)?;
            }
        }
        if let Some(pins) = pins {
            // A predecessor's links for programs this start does not attach (other flags),
            // and maps of another layout version, go now: this start's links replaced the rest.
            let mut attached: Vec<&str> = cgroup_programs.to_vec();
            if self.netns.is_some() {
                attached.push(common::PROG_SK_LOOKUP);
            }
            pins.prune_links(&attached);
            pins.prune_other_abis();
        }
        let orig_by_client =
            std::sync::Mutex::new(take_map(&mut self.ebpf, common::MAP_ORIG_BY_CLIENT)?);
        let orig6_by_client =
            std::sync::Mutex::new(take_map(&mut self.ebpf, common::MAP_ORIG6_BY_CLIENT)?);
        let stats = take_map(&mut self.ebpf, common::MAP_STATS)?;
        Ok(Attached {
            pinned: self.pins.is_some(),
            kernel: Kernel {
                _ebpf: self.ebpf,
                lock: self.lock,
                orig_by_client,
                orig6_by_client,
                stats,
            },
            cgroup: self.cgroup.path,
            netns: self.netns.map(|n| n.path().to_path_buf()),
            outbound: SocketAddrV4::new(target_ip, outbound.port()),
            outbound6,
            inbound_ports,
            caller: None,
        })
    }
}

/// Pins `link` of program `name` as the pod's (see [`PodPins::pin_link`]).
fn pin<L>(pins: &PodPins, name: &'static str, link: L, target: &str) -> Result<(), TransparentError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let link = FdLink::try_from(link).map_err(|e| TransparentError::Pin {
        what: format!(
            "taking {name}'s link on {target} (the kernel attached it without a bpf_link)"
        ),
        path: pins.dir.display().to_string(),
        reason: e.to_string(),
    })?;
    pins.pin_link(name, link)
}

/// Makes the set map `m` hold exactly `keys` (value 1): a map reopened from a predecessor's
/// pin loses what this start no longer sets.
fn replace_keys<K: aya::Pod + PartialEq>(
    mut m: HashMap<&mut MapData, K, u8>,
    keys: &[K],
) -> Result<(), aya::maps::MapError> {
    for k in &stale(m.keys().filter_map(Result::ok), keys, |a, b| a == b) {
        m.remove(k)?;
    }
    keys.iter().try_for_each(|k| m.insert(k, 1, 0))
}

/// [`replace_keys`] for a prefix trie.
fn replace_prefixes<K: aya::Pod + PartialEq>(
    mut m: LpmTrie<&mut MapData, K, u8>,
    keys: &[Key<K>],
) -> Result<(), aya::maps::MapError> {
    let same = |a: &Key<K>, b: &Key<K>| a.prefix_len() == b.prefix_len() && a.data() == b.data();
    for k in &stale(m.keys().filter_map(Result::ok), keys, same) {
        m.remove(k)?;
    }
    keys.iter().try_for_each(|k| m.insert(k, 1, 0))
}

/// The keys of `current` that are not in `wanted`.
fn stale<K>(
    current: impl Iterator<Item = K>,
    wanted: &[K],
    same: impl Fn(&K, &K) -> bool,
) -> Vec<K> {
    current
        .filter(|k| !wanted.iter().any(|w| same(k, w)))
        .collect()
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Option<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    ebpf.program_mut(name).and_then(|p| p.try_into().ok())
}

/// The map `name`, borrowed from `ebpf`, as the typed map `T`.
fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, TransparentError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    typed(name, ebpf.map_mut(name))
}

/// The map `name`, taken out of `ebpf` (to be held apart from it), as the typed map `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, TransparentError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    typed(name, ebpf.take_map(name))
}

/// `map` (`None`: the object has no map `name`) as the typed map `T`.
fn typed<M, T>(name: &'static str, map: Option<M>) -> Result<T, TransparentError>
where
    T: TryFrom<M, Error = aya::maps::MapError>,
{
    let m = map.ok_or(TransparentError::MissingMap { name })?;
    T::try_from(m).map_err(|source| TransparentError::Map {
        name,
        source: Box::new(source),
    })
}

impl Attached {
    /// Whether the capture is pinned (fail closed) and so outlives this process.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The pod's lock (offered to the successor, see `crate::handoff`).
    pub fn lock(&self) -> &File {
        &self.kernel.lock
    }

    /// Where inbound connects to the app come from: the caller's address once the pod's
    /// routing is set up.
    pub fn caller_source(&self) -> Option<Arc<dyn crate::transport::CallerSource>> {
        let c = self.caller.as_ref()?;
        Some(c.source.clone())
    }

    /// Removes the pod's caller-address routing (`--fail-open` at exit: the capture goes with
    /// this process). Not when a successor took the pod over.
    pub fn remove_caller_routing(&self) {
        if let Some(c) = &self.caller {
            match super::reply_route::remove(&c.netns) {
                Ok(()) => tracing::info!("transparent mode: caller-address routing removed"),
                Err(e) => {
                    tracing::warn!(error = %e, "transparent mode: removing the caller-address routing failed")
                }
            }
        }
    }

    /// Says where the programs are attached (one line).
    pub fn log(&self) {
        tracing::info!(
            cgroup = %self.cgroup.display(),
            netns = ?self.netns,
            outbound = %self.outbound,
            outbound6 = ?self.outbound6,
            inbound_ports = ?self.inbound_ports,
            "transparent mode: eBPF programs attached"
        );
    }

    /// The original destination of a redirected connection, by the client's address as the
    /// proxy's accepted socket sees it (its peer).
    pub fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let port = u32::from(peer.port());
        match peer {
            SocketAddr::V4(p) => {
                let ip4 = u32::from_ne_bytes(p.ip().octets());
                take(
                    &self.kernel.orig_by_client,
                    &common::ClientKey { ip4, port },
                )
                .map(decode_orig)
            }
            SocketAddr::V6(p) => {
                let ip6 = ip6_words(p.ip());
                take(
                    &self.kernel.orig6_by_client,
                    &common::ClientKey6 { ip6, port },
                )
                .map(decode_orig6)
            }
        }
    }

    /// The programs' counters.
    pub fn stats(&self) -> Stats {
        let sum = |i: u32| -> u64 {
            self.kernel
                .stats
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        Stats {
            redirected: sum(common::STAT_REDIRECTED),
            excluded: sum(common::STAT_EXCLUDED),
            inbound_steered: sum(common::STAT_INBOUND_STEERED),
            orig_recorded: sum(common::STAT_ORIG_RECORDED),
            redirected6: sum(common::STAT_REDIRECTED6),
            inbound_refused: sum(common::STAT_INBOUND_REFUSED),
        }
    }
}

/// Reads the entry under `key` and removes it (see `Kernel::orig_by_client` for why).
fn take<K: aya::Pod, V: aya::Pod>(
    map: &std::sync::Mutex<HashMap<MapData, K, V>>,
    key: &K,
) -> Option<V> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    let value = map.get(key, 0).ok()?;
    let _ = map.remove(key);
    Some(value)
}

/// `OrigDst` (bpf_sock_addr byte orders) to a socket address.
pub fn decode_orig(o: common::OrigDst) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(o.ip4.to_ne_bytes())),
        u16::from_be(o.port as u16),
    )
}

/// An IPv6 address as `bpf_sock_addr.user_ip6` holds it: four words in network byte order.
pub fn ip6_words(ip: &Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// `OrigDst6` (bpf_sock_addr byte orders) to a socket address.
pub fn decode_orig6(o: common::OrigDst6) -> SocketAddr {
    let mut b = [0u8; 16];
    for (i, w) in o.ip6.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), u16::from_be(o.port as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orig_dst_byte_orders() {
        // What connect4 stores for 10.1.2.3:8080: user_ip4 and user_port as the kernel has
        // them (network order in memory).
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let o = common::OrigDst {
            ip4: u32::from_ne_bytes(ip.octets()),
            port: u32::from(8080u16.to_be()),
        };
        assert_eq!(decode_orig(o), "10.1.2.3:8080".parse().unwrap());
    }

    #[test]
    fn orig_dst6_byte_orders() {
        let ip: Ipv6Addr = "fd00:77::2".parse().unwrap();
        let w = ip6_words(&ip);
        // The first word holds fd 00 00 77 in memory order, as the kernel stores it.
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0x00, 0x00, 0x77]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 2]);
        let o = common::OrigDst6 {
            ip6: w,
            port: u32::from(8080u16.to_be()),
        };
        assert_eq!(decode_orig6(o), "[fd00:77::2]:8080".parse().unwrap());
    }

    /// The shared map types have the sizes the eBPF side was compiled with (no padding).
    #[test]
    fn shared_layouts() {
        use std::mem::size_of;
        assert_eq!(size_of::<common::Config>(), 24);
        assert_eq!(size_of::<common::OrigDst>(), 8);
        assert_eq!(size_of::<common::ClientKey>(), 8);
    }

    #[test]
    fn verifier_reason_is_the_log_tail() {
        let log = "0: (61) r0 = *(u32 *)(r1 +4096)\ninvalid bpf_context access off=4096 size=4\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0\n\
                   stack depth 0\nverification time 12 usec\n";
        assert_eq!(
            verifier_reason(log),
            "invalid bpf_context access off=4096 size=4"
        );
        assert_eq!(verifier_reason(""), "no verifier log");
    }
}
