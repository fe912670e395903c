//! The public (mutual-TLS) listeners a proxy opens: one in agent mode, one or several named
//! ones in static mode. Several listeners are one identity with several public ports, each
//! mapped to its own application (what an Envoy sidecar with several inbound listeners is):
//! every one serves through the same [`crate::inbound`] path, the same certificates and the same
//! intentions; only the application differs.
//!
//! Kept apart from the wiring in `app` because each listener is keyed by its name in three
//! places that must agree: its handoff role (so a successor takes over the right socket), the
//! ready line and `/config`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::handoff::Inherited;
use crate::inbound::LocalApp;
use crate::transport::{SocketFactory, TransportError};

/// Handoff role of the unnamed public listener, and the prefix of named ones.
pub const ROLE_PUBLIC: &str = "public";

/// Where a public listener's connections go, as its feed publishes it.
pub type LocalAppRx = watch::Receiver<Option<Arc<LocalApp>>>;

/// A public listener to open.
#[derive(Debug)]
pub struct InboundPlan {
    /// `None`: the single unnamed listener (agent mode, static mode's one-object form).
    pub name: Option<String>,
    pub bind: SocketAddr,
    pub local_app: LocalAppRx,
}

/// A public listener once bound.
#[derive(Debug)]
pub struct BoundInbound {
    pub name: Option<String>,
    /// The address actually bound (differs from the configured one when that has port 0).
    pub addr: SocketAddr,
    pub local_app: LocalAppRx,
}

/// The handoff role of the listener named `name`: `public` for the unnamed one (the role every
/// earlier proxy offered, so a restart across versions keeps its socket) and `public:<name>`
/// for a named one, so a successor takes over each listener by name, never by position.
pub fn role(name: Option<&str>) -> String {
    match name {
        None => ROLE_PUBLIC.to_string(),
        Some(n) => format!("{ROLE_PUBLIC}:{n}"),
    }
}

/// The listener of `role` inherited from a predecessor if it is bound to `addr`, else a new
/// one bound there.
pub async fn open(
    inherited: Option<&Inherited>,
    sockets: &SocketFactory,
    role: &str,
    addr: SocketAddr,
) -> Result<TcpListener, TransportError> {
    match inherited.and_then(|i| i.listener(role, addr)) {
        Some(l) => Ok(l),
        None => sockets.bind(addr).await,
    }
}

/// The ready line's ` inbound.<name>=<addr>` for every named listener (the unnamed one is
/// `public=` alone, as before).
pub fn ready_fields(bound: &[BoundInbound]) -> String {
    bound
        .iter()
        .filter_map(|b| Some(format!(" inbound.{}={}", b.name.as_deref()?, b.addr)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(name: Option<&str>, port: u16) -> BoundInbound {
        BoundInbound {
            name: name.map(str::to_string),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            local_app: watch::channel(None).1,
        }
    }

    #[test]
    fn roles_keep_the_unnamed_listener_as_public_and_key_the_others_by_name() {
        assert_eq!(role(None), "public");
        assert_eq!(role(Some("iperf")), "public:iperf");
        assert_eq!(role(Some("http")), "public:http");
        // Not the IPv6 twin's role, nor an upstream's.
        assert_ne!(role(Some("6")), "public6");
        assert!(!role(Some("db")).starts_with("upstream:"));
    }

    #[test]
    fn ready_fields_name_every_named_listener() {
        assert_eq!(ready_fields(&[bound(None, 21000)]), "");
        assert_eq!(
            ready_fields(&[bound(Some("iperf"), 21000), bound(Some("http"), 21001)]),
            " inbound.iperf=127.0.0.1:21000 inbound.http=127.0.0.1:21001"
        );
    }

    /// A successor takes each named listener over by role: the one bound where the plan says,
    /// whatever the order; a listener whose address changed is bound afresh.
    #[tokio::test]
    async fn a_successor_takes_each_listener_by_its_role() {
        let iperf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (iperf_addr, http_addr) = (iperf.local_addr().unwrap(), http.local_addr().unwrap());
        let inherited = Inherited::for_test(vec![
            (role(Some("http")), http.into()),
            (role(Some("iperf")), iperf.into()),
        ]);
        let sockets = SocketFactory::host();
        let l = open(Some(&inherited), &sockets, &role(Some("iperf")), iperf_addr)
            .await
            .unwrap();
        assert_eq!(l.local_addr().unwrap(), iperf_addr);
        // http moved to port 0 on another address: a new listener, not the inherited one.
        let moved = SocketAddr::from(([127, 0, 0, 2], 0));
        let l = open(Some(&inherited), &sockets, &role(Some("http")), moved)
            .await
            .unwrap();
        assert_ne!(l.local_addr().unwrap(), http_addr);
        assert_eq!(l.local_addr().unwrap().ip(), moved.ip());
    }
}
