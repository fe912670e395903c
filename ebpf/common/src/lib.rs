//! Types shared by meshproxy's eBPF programs (`mesh-ebpf`) and its user-space loader
//! (`meshproxy::transparent`): map names, map keys and values, and the layout of the one
//! configuration record.
//!
//! Both sides compile this one definition, so a field added here cannot silently disagree in
//! size or order between kernel and user space (the failure mode of duplicated structs). All
//! types are `#[repr(C)]`, `Copy` and padding-free (explicit `_reserved` fields), with `u32`
//! flags instead of `bool`, as the verifier and `aya::Pod` require. The `user` feature adds the
//! `aya::Pod` impls the loader needs; the eBPF build leaves it off and stays `no_std` without
//! aya.
//!
//! Byte orders follow the kernel context each value comes from (see the field docs): the
//! programs copy them without conversion, and the loader converts once.

#![no_std]

/// Layout version of the maps: bumped whenever a map's key or value layout, type or size
/// changes. Maps are pinned under names carrying it (`abi<N>_<MAP>`), so a proxy built with
/// another layout never reuses maps it would misread; it pins its own and prunes the others.
pub const MAPS_ABI: u32 = 2;

/// Array map (one [`Config`] at index 0) written by the loader before attaching.
pub const MAP_CONFIG: &str = "MESH_CONFIG";
/// LRU hash: socket cookie (`u64`) of a redirected app socket → its [`OrigDst`].
pub const MAP_ORIG_BY_COOKIE: &str = "MESH_ORIG_BY_COOKIE";
/// LRU hash: the redirected app socket's local address ([`ClientKey`]) → its [`OrigDst`].
/// The proxy looks the accepted connection's peer address up here.
pub const MAP_ORIG_BY_CLIENT: &str = "MESH_ORIG_BY_CLIENT";
/// Hash: destination port (`u16`, host order) → 1: outbound connects to it are not redirected.
pub const MAP_EXCLUDED_OUT_PORTS: &str = "MESH_EXCLUDED_OUT_PORTS";
/// Hash: uid (`u32`) → 1: connects by processes of this uid are not redirected.
pub const MAP_EXCLUDED_UIDS: &str = "MESH_EXCLUDED_UIDS";
/// LPM trie: IPv4 prefix (address in network byte order) → 1: not redirected.
pub const MAP_EXCLUDED_CIDRS4: &str = "MESH_EXCLUDED_CIDRS4";
/// LPM trie: IPv6 prefix (the address's 16 bytes in network order, as four `u32` words) → 1:
/// not redirected.
pub const MAP_EXCLUDED_CIDRS6: &str = "MESH_EXCLUDED_CIDRS6";
/// Hash: local port (`u16`, host order) → 1: inbound connections to it go to the proxy.
pub const MAP_INBOUND_PORTS: &str = "MESH_INBOUND_PORTS";
/// Sockmap with the proxy's inbound (mTLS) listening sockets at [`INBOUND_LISTENER_INDEX`]
/// (IPv4) and [`INBOUND_LISTENER6_INDEX`] (IPv6).
pub const MAP_INBOUND_LISTENER: &str = "MESH_INBOUND_LISTENER";
/// Per-CPU array of `u64` counters, indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "MESH_STATS";
/// Array map (one [`Outbound6`] at index 0): the proxy's IPv6 outbound listener. Its own map
/// rather than more [`Config`] fields, so an object and a loader of the IPv4-only layout still
/// disagree loudly (missing map) instead of silently (short record).
pub const MAP_OUTBOUND6: &str = "MESH_OUTBOUND6";
/// LRU hash: socket cookie (`u64`) of a redirected IPv6 app socket → its [`OrigDst6`].
pub const MAP_ORIG6_BY_COOKIE: &str = "MESH_ORIG6_BY_COOKIE";
/// LRU hash: the redirected IPv6 app socket's local address ([`ClientKey6`]) → [`OrigDst6`].
pub const MAP_ORIG6_BY_CLIENT: &str = "MESH_ORIG6_BY_CLIENT";

/// Program names (the Rust function names in `mesh-ebpf`), as the loader finds them.
pub const PROG_CONNECT4: &str = "mesh_connect4";
pub const PROG_GETPEERNAME4: &str = "mesh_getpeername4";
pub const PROG_SOCK_OPS: &str = "mesh_sock_ops";
pub const PROG_SK_LOOKUP: &str = "mesh_sk_lookup";
pub const PROG_CONNECT6: &str = "mesh_connect6";
pub const PROG_GETPEERNAME6: &str = "mesh_getpeername6";

/// Index of the IPv4 inbound listener in [`MAP_INBOUND_LISTENER`].
pub const INBOUND_LISTENER_INDEX: u32 = 0;
/// Index of the IPv6 inbound listener (`[::]`, v6-only) in [`MAP_INBOUND_LISTENER`].
pub const INBOUND_LISTENER6_INDEX: u32 = 1;

/// Capacity of the original-destination maps (LRU: the oldest entries go first).
pub const ORIG_DST_ENTRIES: u32 = 65_536;
/// Capacity of each exclusion map (and of [`MAP_INBOUND_PORTS`]).
pub const EXCLUSION_ENTRIES: u32 = 256;

/// Counters in [`MAP_STATS`].
pub const STAT_REDIRECTED: u32 = 0;
pub const STAT_EXCLUDED: u32 = 1;
pub const STAT_INBOUND_STEERED: u32 = 2;
pub const STAT_ORIG_RECORDED: u32 = 3;
/// IPv6 connects redirected (also counted in [`STAT_REDIRECTED`]).
pub const STAT_REDIRECTED6: u32 = 4;
/// Inbound connections to a captured port refused because no proxy listener is in
/// [`MAP_INBOUND_LISTENER`] ([`FLAG_FAIL_CLOSED`]).
pub const STAT_INBOUND_REFUSED: u32 = 5;
pub const STAT_COUNT: u32 = 6;

/// [`Config::flags`]: do not redirect connects to 127.0.0.0/8 (the pod's own loopback).
pub const FLAG_SKIP_LOOPBACK: u32 = 1;
/// [`Config::flags`]: the record is complete; programs do nothing until it is set.
pub const FLAG_ENABLED: u32 = 2;
/// [`Config::flags`]: fail closed: an inbound connection to a captured port that cannot be
/// handed to the proxy's listener (none is in [`MAP_INBOUND_LISTENER`]: the proxy is gone) is
/// refused, never passed on to the app. Without it, it goes to whoever listens (`--fail-open`).
pub const FLAG_FAIL_CLOSED: u32 = 8;

/// What the loader tells the programs (index 0 of [`MAP_CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// IPv4 address of the proxy's outbound listener, network byte order (as `user_ip4`).
    pub outbound_ip4: u32,
    /// Port of the outbound listener, network byte order in the low 16 bits (as `user_port`).
    pub outbound_port: u32,
    /// cgroup v2 ID (inode) of the proxy's own cgroup: its connects are never redirected.
    /// 0 disables the check.
    pub proxy_cgroup_id: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub _reserved: u32,
}

/// An original destination, in the byte orders of `bpf_sock_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// IPv4 address, network byte order.
    pub ip4: u32,
    /// Port, network byte order in the low 16 bits.
    pub port: u32,
}

/// A client socket's local address as `sock_ops` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// IPv4 address, network byte order.
    pub ip4: u32,
    /// Port, host byte order.
    pub port: u32,
}

/// The proxy's IPv6 outbound listener (index 0 of [`MAP_OUTBOUND6`]); `connect6` does
/// nothing until `enabled` is 1 (no IPv6 listener: IPv6 connects go out unchanged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outbound6 {
    /// IPv6 address as `user_ip6`: four words, each in network byte order.
    pub ip6: [u32; 4],
    /// Port, network byte order in the low 16 bits (as `user_port`).
    pub port: u32,
    pub enabled: u32,
}

/// An IPv6 original destination, in the byte orders of `bpf_sock_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst6 {
    /// As `user_ip6`: four words, each in network byte order.
    pub ip6: [u32; 4],
    /// Port, network byte order in the low 16 bits.
    pub port: u32,
}

/// An IPv6 client socket's local address as `sock_ops` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientKey6 {
    /// As `local_ip6`: four words, each in network byte order.
    pub ip6: [u32; 4],
    /// Port, host byte order.
    pub port: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: as below.
    unsafe impl aya::Pod for super::Outbound6 {}
    // SAFETY: as below.
    unsafe impl aya::Pod for super::OrigDst6 {}
    // SAFETY: as below.
    unsafe impl aya::Pod for super::ClientKey6 {}
    // SAFETY: plain `#[repr(C)]` structs of integers with no padding (checked by the layout
    // test below), valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClientKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// No implicit padding: the sizes equal the sum of the fields.
    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<Config>(), 4 + 4 + 8 + 4 + 4);
        assert_eq!(size_of::<OrigDst>(), 8);
        assert_eq!(size_of::<ClientKey>(), 8);
        assert_eq!(size_of::<Outbound6>(), 16 + 4 + 4);
        assert_eq!(size_of::<OrigDst6>(), 16 + 4);
        assert_eq!(size_of::<ClientKey6>(), 16 + 4);
    }
}
