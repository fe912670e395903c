//! Transparent mode (`meshproxy run --transparent`): applications join the mesh without a
//! change. eBPF programs (crate `ebpf/`, types shared through `mesh-ebpf-common`) send the
//! pod's outbound TCP connects to the proxy's outbound listener and hand inbound connections
//! for the app's ports to the proxy's mTLS listener; the proxy recovers each connection's
//! original destination, maps it to a mesh service through the catalog and opens mutual TLS
//! to that service's sidecar (or passes it through, or refuses it).
//!
//! Why eBPF rather than iptables: nothing to conflict with other rules, attach is atomic, and
//! everything is held by `bpf_link`s that belong to this process only (never pinned), so the
//! kernel detaches them when the proxy exits, even on SIGKILL.
//!
//! Pieces: [`args`] (flags and their validation), `error` ([`TransparentError`]), [`preflight`] (root, cgroup v2, the
//! single-instance lock; pure parsers with I/O at the edge), [`loader`] (aya: load, fill the
//! maps, attach), [`netns`] (creating sockets inside the pod's network namespace while the
//! proxy stays in the host's, as ztunnel's in-pod mode does), [`catalog`] (address → mesh
//! service index, pure), [`route`] (the per-connection decision, pure), [`outbound`]
//! (the outbound listener's data path), [`source`] (inbound connects to the app from the
//! caller's address, decision pure) and [`reply_route`] (the pod routing that needs).

pub mod args;
pub mod catalog;
mod error;
pub mod loader;
pub mod netns;
pub mod outbound;
pub mod pins;
pub mod pods;
pub mod preflight;
pub mod reply_route;
pub mod route;
pub mod source;

pub use args::{TransparentArgs, TransparentConfig};
pub use error::TransparentError;
pub use loader::{Attached, Prepared};

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_policy::model::CaRootList;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::{AgentClient, LeafCert};
use crate::drain::Drain;
use crate::identity::{Identity, UpstreamTarget};
use crate::metrics::Metrics;
use crate::outbound::OutboundContext;
use catalog::MeshIndex;

/// Handoff roles (see `crate::handoff`) of transparent mode's own descriptors.
pub const ROLE_OUTBOUND: &str = "outbound";
pub const ROLE_OUTBOUND6: &str = "outbound6";
/// The pod's lock: passed on, so the successor holds it without a gap.
pub const ROLE_LOCK: &str = "lock";

/// What agent mode hands over to start transparent mode once its listeners are bound.
pub struct TransparentPlan {
    pub prepared: Prepared,
    pub mesh_destinations_only: bool,
    pub outbound_port: u16,
    pub client: AgentClient,
    /// The app's ports captured inbound (the sidecar's local service port).
    pub app_ports: Vec<u16>,
    pub leaf: watch::Receiver<Option<Arc<LeafCert>>>,
    pub roots: watch::Receiver<Option<Arc<CaRootList>>>,
    pub provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for TransparentPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransparentPlan")
            .field("prepared", &self.prepared)
            .field("app_ports", &self.app_ports)
            .finish_non_exhaustive()
    }
}

/// Preflight and program loading for `--transparent`. Call before binding anything, and bind
/// the data path with [`Prepared::socket_factory`] (the pod's namespace with `--netns`).
/// `inherited_lock`: the pod's lock received from the proxy this one takes over from.
pub fn prepare(
    config: &TransparentConfig,
    inherited_lock: Option<std::fs::File>,
) -> Result<Prepared, TransparentError> {
    Prepared::prepare(config, inherited_lock)
}

/// The handoff key of the pod `config` captures (`cgroup-<inode>`), if its cgroup resolves.
pub fn handoff_key(config: &TransparentConfig) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = match &config.cgroup {
        Some(p) => p.clone(),
        None => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            preflight::cgroup2_mount(&mountinfo)?
        }
    };
    let ino = std::fs::metadata(path).ok()?.ino();
    Some(pins::pod_id(ino))
}

/// Binds the outbound listener, attaches the programs (after which the pod's traffic flows to
/// the proxy), and starts the catalog index, the identity for every mesh service and the
/// outbound accept loop. Returns the attachment, which must live until the proxy exits.
#[allow(
    clippy::too_many_arguments,
    reason = "distinct start-up inputs (plan, runtime, listener, metrics, two timeouts, drain); a struct would only rename them"
)]
pub async fn start(
    plan: TransparentPlan,
    control: &tokio::runtime::Runtime,
    inbound: &TcpListener,
    inbound6: Option<&TcpListener>,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    drain: &Drain,
    inherited: Option<&crate::handoff::Inherited>,
    offer: &mut Vec<(String, std::os::fd::OwnedFd)>,
) -> Result<Arc<Attached>, TransparentError> {
    let sockets = plan.prepared.socket_factory();
    let bind = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), plan.outbound_port);
    let listener = match inherited.and_then(|i| i.listener(ROLE_OUTBOUND, bind)) {
        Some(l) => l,
        None => sockets
            .bind(bind)
            .await
            .map_err(|e| TransparentError::Netns(std::io::Error::other(e.to_string())))?,
    };
    let listen = listener.local_addr().unwrap_or(bind);
    // IPv6 connects go to a twin listener on ::1 (same port), as Istio ambient and Cilium
    // redirect IPv6 to an IPv6 listener; without IPv6 in the pod they go out unchanged.
    let bind6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port());
    let listener6 = match inherited.and_then(|i| i.listener(ROLE_OUTBOUND6, bind6)) {
        Some(l) => Some(l),
        None => match sockets.bind(bind6).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "transparent mode: no IPv6 outbound listener; IPv6 connects are not redirected");
                None
            }
        },
    };
    // What a successor takes over (see `crate::handoff`).
    offer.extend(crate::handoff::offered(ROLE_OUTBOUND, &listener));
    if let Some(l6) = &listener6 {
        offer.extend(crate::handoff::offered(ROLE_OUTBOUND6, l6));
    }
    let listen6 = listener6.as_ref().map(|l| l.local_addr().unwrap_or(bind6));
    let netns = plan.prepared.netns().cloned();
    let mut attached =
        plan.prepared
            .attach(&listener, listen6, inbound, inbound6, &plan.app_ports)?;
    attached.caller = netns.and_then(caller_routing);
    let attached = Arc::new(attached);
    attached.log();
    offer.extend(crate::handoff::offered(ROLE_LOCK, attached.lock()));
    {
        let weak = Arc::downgrade(&attached);
        metrics.set_ebpf_source(move || weak.upgrade().map(|a| a.stats().events()));
    }

    let (index_tx, index_rx) = watch::channel::<Option<Arc<MeshIndex>>>(None);
    let (identity_tx, identity_rx) = watch::channel::<Option<Arc<Identity>>>(None);
    {
        let _enter = control.enter();
        control.spawn(catalog::run_index(plan.client.clone(), index_tx));
        control.spawn(run_identity(
            plan.provider,
            plan.leaf,
            plan.roots,
            index_rx.clone(),
            identity_tx,
        ));
    }
    let ctx = Arc::new(OutboundContext {
        identity: identity_rx,
        metrics,
        sockets,
        connect_timeout,
        handshake_timeout,
    });
    let t = Arc::new(outbound::TransparentOutbound::new(
        attached.clone(),
        index_rx,
        ctx,
        plan.mesh_destinations_only,
        plan.client,
        control.handle().clone(),
        listen,
    ));
    if let Some(l6) = listener6 {
        tokio::spawn(outbound::serve(l6, t.clone(), drain.watch()));
    }
    tokio::spawn(outbound::serve(listener, t, drain.watch()));
    Ok(attached)
}

/// Sets up the pod's caller-address routing (see [`source`]); without it the app sees the
/// proxy's loopback address, as it says once.
fn caller_routing(netns: netns::Netns) -> Option<loader::CallerRouting> {
    match reply_route::install(&netns) {
        Ok(families) => {
            tracing::info!(
                ipv4 = families.v4,
                ipv6 = families.v6,
                "transparent mode: the app sees callers' addresses"
            );
            Some(loader::CallerRouting {
                source: Arc::new(source::CallerAddress::new(families)),
                netns,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "transparent mode: cannot set up the routing for callers' addresses; the app sees the proxy's loopback address");
            None
        }
    }
}

/// Rebuilds an [`Identity`] whose client configurations cover every mesh service in the index
/// whenever the leaf, the roots or the set of services changes.
async fn run_identity(
    provider: Arc<rustls::crypto::CryptoProvider>,
    mut leaf: watch::Receiver<Option<Arc<LeafCert>>>,
    mut roots: watch::Receiver<Option<Arc<CaRootList>>>,
    mut index: watch::Receiver<Option<Arc<MeshIndex>>>,
    out: watch::Sender<Option<Arc<Identity>>>,
) {
    let mut last_services: Option<Vec<Arc<str>>> = None;
    let mut last_inputs: Option<(usize, usize)> = None;
    loop {
        let (l, r, i) = (
            leaf.borrow_and_update().clone(),
            roots.borrow_and_update().clone(),
            index.borrow_and_update().clone(),
        );
        if let (Some(l), Some(r), Some(i)) = (l, r, i) {
            let services: Vec<Arc<str>> = i.services().cloned().collect();
            let inputs = (Arc::as_ptr(&l) as usize, Arc::as_ptr(&r) as usize);
            if last_services.as_ref() != Some(&services) || last_inputs != Some(inputs) {
                let targets: Vec<UpstreamTarget> = services
                    .iter()
                    .map(|s| UpstreamTarget {
                        name: s.to_string(),
                        datacenter: String::new(),
                        spiffe_id: None,
                    })
                    .collect();
                match Identity::build(&provider, &l, &r, &targets) {
                    Ok(id) => {
                        out.send_replace(Some(Arc::new(id)));
                        last_services = Some(services);
                        last_inputs = Some(inputs);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "transparent mode: building the TLS identity failed")
                    }
                }
            }
        }
        tokio::select! {
            r = leaf.changed() => if r.is_err() { return },
            r = roots.changed() => if r.is_err() { return },
            r = index.changed() => if r.is_err() { return },
        }
    }
}
