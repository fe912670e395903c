//! The caller's real address at the app (issue 14 point 4): in a pod (`--transparent
//! --netns`), the proxy connects to the app from the calling pod's address, so the app's
//! `getpeername` (access logs, rate limits, allow-lists) sees who called, as with ztunnel's
//! in-pod mode, instead of the proxy's `127.0.0.1`.
//!
//! The socket is bound to the caller's IP (port 0) with `IP_TRANSPARENT` and marked; the
//! pod's routing ([`super::reply_route`]) brings the app's replies back to it. [`plan`]
//! decides, purely, when and to which address; [`CallerAddress`] is the
//! [`CallerSource`] the inbound connects use, which falls back to the usual connect (from
//! loopback) where the kernel refuses, saying so once per address family.
//!
//! The target is the registration's app address: its loopback stands for the loopback of the
//! caller's family (`127.0.0.1` or `::1`: an IPv6 caller reaches the app over IPv6, if it
//! listens there), so an app listening on loopback only keeps working.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use super::reply_route::{Families, MARK};
use crate::transport::{CallerSource, SourcePlan};

/// How to reach the app at `app_host:app_port` from `client`'s address, for a connection
/// that came in on `local`, given the families whose routing is set up. `None`: connect as
/// usual (a loopback or unusable caller, an app address of the other family or a name, no app
/// port).
///
/// An app registered at the very address the caller dialled (the pod's own) is reached on
/// loopback: a connect to that address would be steered back to the proxy by `sk_lookup`
/// (inside the pod it arrives with the address's interface as its ingress, like a caller's).
pub fn plan(
    client: SocketAddr,
    local: Option<IpAddr>,
    app_host: &str,
    app_port: u16,
    usable: Families,
) -> Option<SourcePlan> {
    let caller = client.ip().to_canonical();
    if app_port == 0
        || caller.is_loopback()
        || caller.is_unspecified()
        || caller.is_multicast()
        || !usable.has(caller)
    {
        return None;
    }
    let app = app_host.parse::<IpAddr>().ok()?.to_canonical();
    let dialled = local.is_some_and(|l| l.to_canonical() == app);
    let target = match (app.is_loopback() || dialled, caller) {
        (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (false, _) if app.is_ipv4() == caller.is_ipv4() => app,
        (false, _) => return None,
    };
    Some(SourcePlan {
        bind: SocketAddr::new(caller, 0),
        target: SocketAddr::new(target, app_port),
        mark: MARK,
    })
}

/// Whether a failed connect from the caller's address means "never for this family" (the
/// kernel refuses the socket options or the bind, or the replies do not come back: the
/// routing is gone) or only this once (the app is not listening on that address, e.g. not on
/// `::1`).
pub fn refused_for_good(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// The [`CallerSource`] of a pod whose routing is set up for `families`.
#[derive(Debug)]
pub struct CallerAddress {
    families: Families,
    /// Per family (IPv4, IPv6): given up after the kernel refused.
    off: [AtomicBool; 2],
    /// Per family: the fallback was logged.
    warned: [AtomicBool; 2],
}

impl CallerAddress {
    pub fn new(families: Families) -> Self {
        Self {
            families,
            off: Default::default(),
            warned: Default::default(),
        }
    }
}

fn slot(addr: SocketAddr) -> usize {
    usize::from(addr.is_ipv6())
}

impl CallerSource for CallerAddress {
    fn plan(
        &self,
        client: SocketAddr,
        local: Option<SocketAddr>,
        host: &str,
        port: u16,
    ) -> Option<SourcePlan> {
        let p = plan(client, local.map(|l| l.ip()), host, port, self.families)?;
        (!self.off[slot(p.bind)].load(Ordering::Relaxed)).then_some(p)
    }

    fn failed(&self, plan: &SourcePlan, error: &io::Error) {
        let i = slot(plan.bind);
        let for_good = refused_for_good(error);
        if for_good {
            self.off[i].store(true, Ordering::Relaxed);
        }
        if !self.warned[i].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target = %plan.target, error = %error, from_now_on = for_good,
                "transparent mode: the app cannot be reached from the caller's address; it sees the proxy's loopback address instead (logged once per address family)"
            );
        } else {
            tracing::debug!(target = %plan.target, error = %error, "connect from the caller's address failed; connecting from loopback");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Families = Families { v4: true, v6: true };

    /// Caller, app host -> (bind, target).
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
    );

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pod_callers_reach_the_app_from_their_address() {
        let cases: &[Case] = &[
            (
                "10.1.0.2:40000",
                "127.0.0.1",
                Some(("10.1.0.2:0", "127.0.0.1:8080")),
            ),
            (
                "[fd00::2]:40000",
                "127.0.0.1",
                Some(("[fd00::2]:0", "[::1]:8080")),
            ),
            (
                "[fd00::2]:40000",
                "::1",
                Some(("[fd00::2]:0", "[::1]:8080")),
            ),
            (
                "10.1.0.2:40000",
                "10.1.0.9",
                Some(("10.1.0.2:0", "10.1.0.9:8080")),
            ),
            // IPv4-mapped: an IPv4 caller.
            (
                "[::ffff:10.1.0.2]:1",
                "127.0.0.1",
                Some(("10.1.0.2:0", "127.0.0.1:8080")),
            ),
            // The app's address is of the other family, or a name: as usual.
            ("[fd00::2]:40000", "10.1.0.9", None),
            ("10.1.0.2:40000", "localhost", None),
            // A local caller (no pod netns) or no caller address at all.
            ("127.0.0.1:40000", "127.0.0.1", None),
            ("[::1]:40000", "::1", None),
            ("0.0.0.0:0", "127.0.0.1", None),
        ];
        for (client, host, want) in cases {
            let got = plan(sa(client), None, host, 8080, BOTH);
            let want = want.map(|(b, t)| SourcePlan {
                bind: sa(b),
                target: sa(t),
                mark: MARK,
            });
            assert_eq!(got, want, "{client} -> {host}");
        }
        assert_eq!(plan(sa("10.1.0.2:1"), None, "127.0.0.1", 0, BOTH), None);
    }

    #[test]
    fn an_app_at_the_dialled_address_is_reached_on_loopback() {
        let pod: IpAddr = "10.1.0.9".parse().unwrap();
        let p = plan(sa("10.1.0.2:1"), Some(pod), "10.1.0.9", 80, BOTH).unwrap();
        assert_eq!(p.target, sa("127.0.0.1:80"));
        let other: IpAddr = "10.1.0.8".parse().unwrap();
        let p = plan(sa("10.1.0.2:1"), Some(other), "10.1.0.9", 80, BOTH).unwrap();
        assert_eq!(p.target, sa("10.1.0.9:80"));
        let pod6: IpAddr = "fd00::9".parse().unwrap();
        let p = plan(sa("[fd00::2]:1"), Some(pod6), "fd00::9", 80, BOTH).unwrap();
        assert_eq!(p.target, sa("[::1]:80"));
    }

    #[test]
    fn only_families_with_routing_are_preserved() {
        let v4 = Families {
            v4: true,
            v6: false,
        };
        assert!(plan(sa("10.1.0.2:1"), None, "127.0.0.1", 80, v4).is_some());
        assert_eq!(plan(sa("[fd00::2]:1"), None, "127.0.0.1", 80, v4), None);
    }

    #[test]
    fn a_kernel_refusal_turns_the_family_off_an_app_refusal_does_not() {
        let c = CallerAddress::new(BOTH);
        let v6 = c.plan(sa("[fd00::2]:1"), None, "127.0.0.1", 80).unwrap();
        c.failed(&v6, &io::ErrorKind::ConnectionRefused.into());
        assert!(c.plan(sa("[fd00::2]:1"), None, "127.0.0.1", 80).is_some());
        let v4 = c.plan(sa("10.1.0.2:1"), None, "127.0.0.1", 80).unwrap();
        c.failed(&v4, &io::Error::from_raw_os_error(1)); // EPERM
        assert_eq!(c.plan(sa("10.1.0.2:1"), None, "127.0.0.1", 80), None);
        assert!(c.plan(sa("[fd00::2]:1"), None, "127.0.0.1", 80).is_some());
        assert!(refused_for_good(&io::ErrorKind::TimedOut.into()));
    }
}
