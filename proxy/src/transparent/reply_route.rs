//! The pod's routing that lets the proxy connect to the app *from the caller's address*
//! (issue 14 point 4, see [`super::source`]): the app's replies to that address must come
//! back to the proxy inside the pod instead of leaving through the pod's interface.
//!
//! How, in the pod's network namespace (set up by the proxy when it attaches with `--netns`,
//! removed by `meshproxy transparent remove` and at exit with `--fail-open`):
//! - the proxy's app-side socket carries [`MARK`] (`SO_MARK`) next to `IP_TRANSPARENT`;
//! - `net.ipv4.tcp_fwmark_accept = 1` (IPv4 and IPv6): a socket the app accepts takes the
//!   mark of the SYN that opened it, so the app's connection from the proxy is marked too
//!   (on loopback the mark survives; packets from the pod's interface carry none, so nothing
//!   else in the pod changes), and with it every packet the app sends on it;
//! - rule `fwmark MARK lookup TABLE` (IPv4 and IPv6) and, in [`TABLE`], `local default dev
//!   lo`: marked packets are delivered locally, to the proxy's transparent socket.
//!
//! Marking the connection rather than matching the app's port keeps every other packet on
//! the main table: the proxy's own inbound connections (whose local port is the app's, as
//! `sk_lookup` keeps the destination) and the kernel's resets for refused connections. This
//! is the mark-and-local-table scheme of Istio's TPROXY mode and ztunnel's in-pod mode, with
//! the mark riding the accepted socket instead of iptables' CONNMARK.
//!
//! Netlink from Rust (`netlink-packet-route` on a `netlink-sys` socket made on the
//! namespace's thread) rather than the `ip` binary: no dependency on iproute2 being installed
//! on the node, no `ip netns` name needed for a `/proc/PID/ns/net` path, and errors come back
//! as errnos.
//!
//! Shared by every proxy of the pod: setting up is idempotent (a replacing proxy adds
//! nothing twice) and removal is what the capture's removal does. Removal also sets
//! `tcp_fwmark_accept` back to 0 (the kernel's default) when the rule was there.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};

use super::netns::Netns;

const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
const EAFNOSUPPORT: i32 = nix::errno::Errno::EAFNOSUPPORT as i32;

/// `SO_MARK` of the proxy's app-side sockets (and so of the app's connections from them).
pub const MARK: u32 = 0x6d65_7368; // "mesh"
/// The routing table holding `local default dev lo`.
pub const TABLE: u32 = 0x6d65; // 28005
/// Priority of the `fwmark` rule: before `main` (32766), after `local` (0).
pub const PRIORITY: u32 = 0x6d65;
const _: () = assert!(PRIORITY > 0 && PRIORITY < 32766);
/// The sysctl that gives an accepted socket the mark of its SYN.
const FWMARK_ACCEPT: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";
/// `ifindex` of `lo` in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Which families the routing is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub fn has(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }
}

/// Sets the routing up in `netns` (idempotent). A family whose routing fails is left out
/// (the pod may have IPv6 disabled) and says why; `Err` only when neither works.
pub fn install(netns: &Netns) -> io::Result<Families> {
    netns.run(install_here)?
}

/// Removes what [`install`] set up in `netns` (what is already gone is fine).
pub fn remove(netns: &Netns) -> io::Result<()> {
    netns.run(remove_here)?
}

/// Each family's `(family, default destination)`.
const FAMILIES: [(AddressFamily, IpAddr); 2] = [
    (AddressFamily::Inet, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    (AddressFamily::Inet6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
];

fn install_here() -> io::Result<Families> {
    let nl = Netlink::open()?;
    std::fs::write(FWMARK_ACCEPT, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("setting {FWMARK_ACCEPT}: {e}")))?;
    let mut done = Families::default();
    let mut last = None;
    for (family, any) in FAMILIES {
        let r = nl
            .request(
                RouteNetlinkMessage::NewRoute(local_route(family, any)),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .and_then(|()| {
                // EEXIST: a proxy before this one added it.
                match nl.request(
                    RouteNetlinkMessage::NewRule(rule(family)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ) {
                    Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
                    r => r,
                }
            });
        match (r, any) {
            (Ok(()), IpAddr::V4(_)) => done.v4 = true,
            (Ok(()), IpAddr::V6(_)) => done.v6 = true,
            (Err(e), _) => {
                tracing::debug!(?family, error = %e, "caller-address routing not set up for this family");
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) if done == Families::default() => Err(e),
        _ => Ok(done),
    }
}

fn remove_here() -> io::Result<()> {
    let nl = Netlink::open()?;
    let mut had_rule = false;
    for (family, any) in FAMILIES {
        // A rule is deleted one copy at a time; there is at most one (added with EXCL).
        match nl.request(RouteNetlinkMessage::DelRule(rule(family)), 0) {
            Ok(()) => had_rule = true,
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
        match nl.request(RouteNetlinkMessage::DelRoute(local_route(family, any)), 0) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if had_rule {
        std::fs::write(FWMARK_ACCEPT, "0")?;
    }
    Ok(())
}

/// Errors of deleting what is not there (or a family the pod does not have).
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOENT | ESRCH | EAFNOSUPPORT))
}

/// `fwmark MARK lookup TABLE pref PRIORITY`.
fn rule(family: AddressFamily) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Priority(PRIORITY),
        RuleAttribute::FwMark(MARK),
        RuleAttribute::FwMask(u32::MAX),
        RuleAttribute::Table(TABLE),
    ];
    m
}

/// `local default dev lo table TABLE`.
fn local_route(family: AddressFamily, any: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.destination_prefix_length = 0;
    m.header.table = 0; // the table is the attribute (it does not fit in a byte)
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Host;
    m.header.kind = RouteType::Local;
    let dst = match any {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    m.attributes = vec![
        RouteAttribute::Destination(dst),
        RouteAttribute::Oif(LOOPBACK_IFINDEX),
        RouteAttribute::Table(TABLE),
    ];
    m
}

/// A route netlink socket in the calling thread's namespace, one request at a time.
struct Netlink {
    socket: Socket,
}

impl Netlink {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        Ok(Self { socket })
    }

    /// Sends `msg` with `flags` (plus request and ack) and waits for the kernel's answer.
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = 1;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        // The answer to a request with NLM_F_ACK is one error message (code 0: done).
        let (reply, _) = self.socket.recv_from_full()?;
        let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        match answer.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_say_which_addresses_they_cover() {
        let v4only = Families {
            v4: true,
            v6: false,
        };
        assert!(v4only.has(Ipv4Addr::new(10, 0, 0, 1).into()));
        assert!(!v4only.has(Ipv6Addr::LOCALHOST.into()));
    }

    #[test]
    fn the_rule_and_route_name_the_mark_and_table() {
        let r = rule(AddressFamily::Inet6);
        assert!(r.attributes.contains(&RuleAttribute::FwMark(MARK)));
        assert!(r.attributes.contains(&RuleAttribute::Table(TABLE)));
        let l = local_route(AddressFamily::Inet, Ipv4Addr::UNSPECIFIED.into());
        assert_eq!(l.header.kind, RouteType::Local);
        assert!(l.attributes.contains(&RouteAttribute::Table(TABLE)));
    }
}
