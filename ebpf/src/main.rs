//! meshproxy's transparent-mode eBPF programs (kernel side; the loader is
//! `proxy/src/transparent/`).
//!
//! - `mesh_connect4` (cgroup `connect4`): a TCP connect from the pod's cgroup is rewritten to
//!   the proxy's outbound listener unless excluded (proxy's own cgroup, uid, port, CIDR,
//!   loopback); the original destination is remembered under the socket cookie.
//! - `mesh_sock_ops` (cgroup `sock_ops`): when such a connect completes, the original
//!   destination is re-keyed by the client's local address, the key the proxy sees as its
//!   accepted connection's peer.
//! - `mesh_getpeername4` (cgroup `getpeername4`): the app still sees the original destination.
//! - `mesh_connect6` / `mesh_getpeername6`: the same for IPv6 connects, to the proxy's IPv6
//!   outbound listener (`MESH_OUTBOUND6`, on `::1`); `sock_ops` re-keys them as for IPv4.
//! - `mesh_sk_lookup` (netns `sk_lookup`): inbound TCP to the app's ports (not on loopback) is
//!   handed to the proxy's inbound mTLS listener held in a sockmap: the IPv4 one at
//!   `INBOUND_LISTENER_INDEX`, the IPv6 one (`[::]`, v6-only) at `INBOUND_LISTENER6_INDEX`.
//!
//! Every entry point is a thin wrapper over `try_*` and maps errors to the *safe* verdict: let
//! the syscall or packet through unchanged, never break the host's networking on an error path.

#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sk_lookup, sock_ops},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockMap, lpm_trie::Key as LpmKey},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext},
};
use mesh_ebpf_common::{
    ClientKey, ClientKey6, Config, EXCLUSION_ENTRIES, FLAG_ENABLED, FLAG_FAIL_CLOSED,
    FLAG_SKIP_LOOPBACK, INBOUND_LISTENER_INDEX, INBOUND_LISTENER6_INDEX, ORIG_DST_ENTRIES, OrigDst,
    OrigDst6, Outbound6, STAT_COUNT, STAT_EXCLUDED, STAT_INBOUND_REFUSED, STAT_INBOUND_STEERED,
    STAT_ORIG_RECORDED, STAT_REDIRECTED, STAT_REDIRECTED6,
};

/// `bpf_sock_addr` verdicts: 1 lets the syscall proceed.
const ALLOW: i32 = 1;
/// `sk_lookup` verdict: continue (with the assigned socket, if any).
const SK_PASS: u32 = 1;
/// `sk_lookup` verdict: drop the packet; for a TCP SYN no socket is found and the kernel
/// answers with a reset (the caller sees `ECONNREFUSED`).
const SK_DROP: u32 = 0;
/// `bpf_sk_assign` flag for `sk_lookup`: replace a socket an earlier program selected (while
/// a restarted proxy's programs and its predecessor's both run, both select the same one).
const BPF_SK_LOOKUP_F_REPLACE: u64 = 1;
const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `::1` as the four network-order words of a context's IPv6 field (read on a little-endian
/// target: the last word's bytes 00 00 00 01).
const IP6_LOOPBACK: [u32; 4] = [0, 0, 0, 0x0100_0000];
/// `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`: an active (connect) TCP socket got established.
const SOCK_OPS_ACTIVE_ESTABLISHED: u32 = 4;

// Map names must equal the MAP_* constants of mesh-ebpf-common (the loader opens them by name).
#[map]
static MESH_CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
static MESH_ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> =
    LruHashMap::with_max_entries(ORIG_DST_ENTRIES, 0);
#[map]
static MESH_ORIG_BY_CLIENT: LruHashMap<ClientKey, OrigDst> =
    LruHashMap::with_max_entries(ORIG_DST_ENTRIES, 0);
#[map]
static MESH_EXCLUDED_OUT_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(EXCLUSION_ENTRIES, 0);
#[map]
static MESH_EXCLUDED_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(EXCLUSION_ENTRIES, 0);
#[map]
static MESH_EXCLUDED_CIDRS4: LpmTrie<u32, u8> = LpmTrie::with_max_entries(EXCLUSION_ENTRIES, 0);
#[map]
static MESH_EXCLUDED_CIDRS6: LpmTrie<[u32; 4], u8> =
    LpmTrie::with_max_entries(EXCLUSION_ENTRIES, 0);
#[map]
static MESH_INBOUND_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(EXCLUSION_ENTRIES, 0);
#[map]
static MESH_INBOUND_LISTENER: SockMap = SockMap::with_max_entries(2, 0);
#[map]
static MESH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
#[map]
static MESH_OUTBOUND6: Array<Outbound6> = Array::with_max_entries(1, 0);
#[map]
static MESH_ORIG6_BY_COOKIE: LruHashMap<u64, OrigDst6> =
    LruHashMap::with_max_entries(ORIG_DST_ENTRIES, 0);
#[map]
static MESH_ORIG6_BY_CLIENT: LruHashMap<ClientKey6, OrigDst6> =
    LruHashMap::with_max_entries(ORIG_DST_ENTRIES, 0);

/// Per-CPU counter bump (no atomic RMW on this target; the loader sums the CPUs).
#[inline(always)]
fn count(stat: u32) {
    if let Some(p) = MESH_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, one at a time.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn config() -> Option<Config> {
    let c = *MESH_CONFIG.get(0)?;
    if c.flags & FLAG_ENABLED == 0 {
        None
    } else {
        Some(c)
    }
}

/// The original destination `map` holds for the socket of `ctx` (by its cookie).
#[inline(always)]
fn orig_by_cookie<C: EbpfContext, V: Copy>(ctx: &C, map: &LruHashMap<u64, V>) -> Result<V, ()> {
    // SAFETY: the socket-cookie helper is valid for every program type here (sock_addr and
    // sock_ops).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once.
    Ok(*unsafe { map.get(&cookie) }.ok_or(())?)
}

/// Reads an IPv6 address field of a context with one volatile 4-byte load per word: the
/// verifier rejects the wider loads an array copy compiles to.
///
/// SAFETY: `words` must point at a readable field of the verifier-checked context.
#[inline(always)]
unsafe fn read_ip6(words: *const [u32; 4]) -> [u32; 4] {
    // SAFETY: as the caller promises.
    unsafe {
        [
            core::ptr::read_volatile(&(*words)[0]),
            core::ptr::read_volatile(&(*words)[1]),
            core::ptr::read_volatile(&(*words)[2]),
            core::ptr::read_volatile(&(*words)[3]),
        ]
    }
}

/// Writes an IPv6 address field of a context with one volatile 4-byte store per word, so LLVM
/// cannot merge them into a wider store the verifier rejects.
///
/// SAFETY: `words` must point at a writable field of the verifier-checked context.
#[inline(always)]
unsafe fn write_ip6(words: *mut [u32; 4], ip6: [u32; 4]) {
    // SAFETY: as the caller promises.
    unsafe {
        core::ptr::write_volatile(&mut (*words)[0], ip6[0]);
        core::ptr::write_volatile(&mut (*words)[1], ip6[1]);
        core::ptr::write_volatile(&mut (*words)[2], ip6[2]);
        core::ptr::write_volatile(&mut (*words)[3], ip6[3]);
    }
}

/// The proxy's own sockets: never redirected (no loops).
#[inline(always)]
fn from_proxy(cfg: &Config) -> bool {
    // SAFETY: helper without arguments, valid for cgroup sock_addr programs.
    cfg.proxy_cgroup_id != 0 && unsafe { bpf_get_current_cgroup_id() } == cfg.proxy_cgroup_id
}

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    let _ = try_connect4(&ctx);
    ALLOW
}

/// `Err` means "leave the connect alone".
#[inline(always)]
fn try_connect4(ctx: &SockAddrContext) -> Result<(), ()> {
    let cfg = config().ok_or(())?;
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the verifier-checked context pointer; these fields are readable.
    let (ty, ip4, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    if ty != SOCK_STREAM {
        return Err(());
    }
    if excluded(&cfg, ip4, port) {
        count(STAT_EXCLUDED);
        return Err(());
    }
    let proxy = OrigDst {
        ip4: cfg.outbound_ip4,
        port: cfg.outbound_port,
    };
    redirect(ctx, &MESH_ORIG_BY_COOKIE, OrigDst { ip4, port }, proxy)
}

/// connect4/6: remembers `orig` under the socket's cookie, then points the connect at `proxy`.
#[inline(always)]
fn redirect<O: Orig>(
    ctx: &SockAddrContext,
    map: &LruHashMap<u64, O>,
    orig: O,
    proxy: O,
) -> Result<(), ()> {
    // SAFETY: helper valid for cgroup sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    map.insert(&cookie, &orig, 0).map_err(|_| ())?;
    // SAFETY: `sock_addr` is the verifier-checked context of the connect hook `O` is for.
    unsafe { proxy.write_to(ctx.sock_addr) };
    count(STAT_REDIRECTED);
    Ok(())
}

#[inline(always)]
fn excluded(cfg: &Config, ip4: u32, port: u32) -> bool {
    if from_proxy(cfg) {
        return true;
    }
    // Already aimed at the proxy.
    if ip4 == cfg.outbound_ip4 && port == cfg.outbound_port {
        return true;
    }
    // 127.0.0.0/8: first octet in the lowest byte of the network-order word.
    if cfg.flags & FLAG_SKIP_LOOPBACK != 0 && (ip4 & 0xff) == 127 {
        return true;
    }
    if excluded_port_or_uid(port) {
        return true;
    }
    MESH_EXCLUDED_CIDRS4.get(LpmKey::new(32, ip4)).is_some()
}

/// The exclusions that do not depend on the address family.
#[inline(always)]
fn excluded_port_or_uid(port: u32) -> bool {
    let host_port = u16::from_be(port as u16);
    // SAFETY: value not kept past the call.
    if unsafe { MESH_EXCLUDED_OUT_PORTS.get(&host_port) }.is_some() {
        return true;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: as above.
    unsafe { MESH_EXCLUDED_UIDS.get(&uid) }.is_some()
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    let _ = try_connect6(&ctx);
    ALLOW
}

/// As [`try_connect4`], to the proxy's IPv6 outbound listener. `Err` means "leave it alone".
#[inline(always)]
fn try_connect6(ctx: &SockAddrContext) -> Result<(), ()> {
    let cfg = config().ok_or(())?;
    let out = *MESH_OUTBOUND6.get(0).ok_or(())?;
    if out.enabled == 0 {
        return Err(());
    }
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the verifier-checked context pointer; these fields are readable, each
    // `user_ip6` word with its own 4-byte load.
    let (ty, port, ip6) = unsafe { ((*sa).type_, (*sa).user_port, read_ip6(&(*sa).user_ip6)) };
    if ty != SOCK_STREAM {
        return Err(());
    }
    if excluded6(&cfg, &out, &ip6, port) {
        count(STAT_EXCLUDED);
        return Err(());
    }
    let proxy = OrigDst6 {
        ip6: out.ip6,
        port: out.port,
    };
    redirect(ctx, &MESH_ORIG6_BY_COOKIE, OrigDst6 { ip6, port }, proxy)?;
    count(STAT_REDIRECTED6);
    Ok(())
}

#[inline(always)]
fn excluded6(cfg: &Config, out: &Outbound6, ip6: &[u32; 4], port: u32) -> bool {
    if from_proxy(cfg) {
        return true;
    }
    if *ip6 == out.ip6 && port == out.port {
        return true;
    }
    let head_zero = ip6[0] == 0 && ip6[1] == 0;
    // ::1 (words in network order: the last word's lowest byte is the address's last byte).
    if cfg.flags & FLAG_SKIP_LOOPBACK != 0 && head_zero && ip6[2] == 0 && ip6[3] == 1u32.to_be() {
        return true;
    }
    // ::ffff:a.b.c.d (an IPv4 destination through an IPv6 socket): left alone; the proxy's
    // IPv6 listener is on ::1, which such a socket cannot pair with an IPv4 peer.
    if head_zero && ip6[2] == 0xffffu32.to_be() {
        return true;
    }
    if excluded_port_or_uid(port) {
        return true;
    }
    MESH_EXCLUDED_CIDRS6.get(LpmKey::new(128, *ip6)).is_some()
}

#[sock_ops]
pub fn mesh_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == SOCK_OPS_ACTIVE_ESTABLISHED {
        let _ = try_sock_ops(&ctx);
    }
    1
}

#[inline(always)]
fn try_sock_ops(ctx: &SockOpsContext) -> Result<(), ()> {
    let family = ctx.family();
    if family == AF_INET6 {
        return try_sock_ops6(ctx);
    }
    if family != AF_INET {
        return Err(());
    }
    let orig = orig_by_cookie(ctx, &MESH_ORIG_BY_COOKIE)?;
    let key = ClientKey {
        ip4: ctx.local_ip4(),
        port: ctx.local_port(),
    };
    MESH_ORIG_BY_CLIENT.insert(&key, &orig, 0).map_err(|_| ())?;
    count(STAT_ORIG_RECORDED);
    Ok(())
}

#[inline(always)]
fn try_sock_ops6(ctx: &SockOpsContext) -> Result<(), ()> {
    let orig = orig_by_cookie(ctx, &MESH_ORIG6_BY_COOKIE)?;
    // SAFETY: verifier-checked context pointer; a readable field.
    let ip6 = unsafe { read_ip6(&(*ctx.ops).local_ip6) };
    let key = ClientKey6 {
        ip6,
        port: ctx.local_port(),
    };
    MESH_ORIG6_BY_CLIENT
        .insert(&key, &orig, 0)
        .map_err(|_| ())?;
    count(STAT_ORIG_RECORDED);
    Ok(())
}

#[cgroup_sock_addr(getpeername6)]
pub fn mesh_getpeername6(ctx: SockAddrContext) -> i32 {
    let _ = try_getpeername(&ctx, &MESH_ORIG6_BY_COOKIE);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn mesh_getpeername4(ctx: SockAddrContext) -> i32 {
    let _ = try_getpeername(&ctx, &MESH_ORIG_BY_COOKIE);
    ALLOW
}

/// getpeername4/6: the app sees the original destination `map` holds for its socket.
#[inline(always)]
fn try_getpeername<O: Orig>(ctx: &SockAddrContext, map: &LruHashMap<u64, O>) -> Result<(), ()> {
    let orig = orig_by_cookie(ctx, map)?;
    // SAFETY: `sock_addr` is the verifier-checked context of the getpeername hook `O` is for.
    unsafe { orig.write_to(ctx.sock_addr) };
    Ok(())
}

/// An address of one family as a `sock_addr` hook of that family writes it (connect: the
/// proxy's listener; getpeername: the original destination).
trait Orig: Copy {
    /// SAFETY: `sa` must be the context of this family's connect or getpeername hook (its
    /// address fields are writable there).
    unsafe fn write_to(&self, sa: *mut bpf_sock_addr);
}

impl Orig for OrigDst {
    #[inline(always)]
    unsafe fn write_to(&self, sa: *mut bpf_sock_addr) {
        // SAFETY: writable context fields of connect4/getpeername4; one volatile 4-byte store
        // each so LLVM cannot merge them into a wider store the verifier rejects.
        unsafe {
            core::ptr::write_volatile(&mut (*sa).user_ip4, self.ip4);
            core::ptr::write_volatile(&mut (*sa).user_port, self.port);
        }
    }
}

impl Orig for OrigDst6 {
    #[inline(always)]
    unsafe fn write_to(&self, sa: *mut bpf_sock_addr) {
        // SAFETY: writable context fields of connect6/getpeername6; separate volatile stores.
        unsafe {
            write_ip6(&mut (*sa).user_ip6, self.ip6);
            core::ptr::write_volatile(&mut (*sa).user_port, self.port);
        }
    }
}

#[sk_lookup]
pub fn mesh_sk_lookup(ctx: SkLookupContext) -> u32 {
    try_sk_lookup(&ctx).unwrap_or(SK_PASS)
}

/// `Err`: not ours, the lookup goes on unchanged. `Ok` is the verdict for a connection to a
/// captured port: handed to the proxy's listener, or (fail closed, no listener: the proxy is
/// gone) refused.
#[inline(always)]
fn try_sk_lookup(ctx: &SkLookupContext) -> Result<u32, ()> {
    let l = ctx.lookup;
    // SAFETY: verifier-checked context pointer; readable fields.
    let (family, protocol, local_ip4, local_port) =
        unsafe { ((*l).family, (*l).protocol, (*l).local_ip4, (*l).local_port) };
    if protocol != IPPROTO_TCP {
        return Err(());
    }
    // Loopback stays with whoever listens there: the proxy reaches the app on 127.0.0.1 / ::1.
    let index = match family {
        AF_INET if (local_ip4 & 0xff) == 127 => return Err(()),
        AF_INET => INBOUND_LISTENER_INDEX,
        AF_INET6 => {
            // SAFETY: verifier-checked context pointer; readable field.
            let ip6 = unsafe { read_ip6(&(*l).local_ip6) };
            if ip6 == IP6_LOOPBACK {
                return Err(());
            }
            INBOUND_LISTENER6_INDEX
        }
        _ => return Err(()),
    };
    // SAFETY: value not kept past the call.
    if unsafe { MESH_INBOUND_PORTS.get(&(local_port as u16)) }.is_none() {
        return Err(());
    }
    // A closed listener leaves the sockmap by itself, so an empty slot means no proxy.
    if MESH_INBOUND_LISTENER
        .redirect_sk_lookup(ctx, index, BPF_SK_LOOKUP_F_REPLACE)
        .is_ok()
    {
        count(STAT_INBOUND_STEERED);
        return Ok(SK_PASS);
    }
    let fail_closed = MESH_CONFIG
        .get(0)
        .is_some_and(|c| c.flags & FLAG_FAIL_CLOSED != 0);
    if fail_closed {
        count(STAT_INBOUND_REFUSED);
        Ok(SK_DROP)
    } else {
        Err(())
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
