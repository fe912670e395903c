//! Wiring: starts the agent loops (or, in static mode, the file watcher), the identity manager,
//! the admin server and the listeners, and drains on SIGTERM.
//!
//! The two modes differ only in what feeds the `watch` channels (leaf, roots, policy, local
//! application, upstream instances): each fills one [`Feeds`] (agent mode from blocking
//! queries, static mode from the file watcher) and hands it to [`serve`], which builds the
//! identity, re-checks connections and runs the listeners the same way for both.
//!
//! Two runtimes, as ztunnel does: the data plane (listeners and byte pumps) runs on the main
//! multi-threaded runtime; the agent loops, certificate rebuilding, connection re-checks and
//! the admin server run on a one-thread "control" runtime, so a burst of traffic never delays a
//! certificate rotation or an intention change, and the reverse. They talk through `watch`
//! channels only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mesh_policy::model::CaRootList;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::agent::{self, AgentClient, AgentError, AgentService, Endpoint, LeafCert};
use crate::authz::Policy;
use crate::config::{Config, DataPathOptions};
use crate::connections::{self, Registry};
use crate::drain::{Drain, DrainOutcome};
use crate::handoff;
use crate::identity::{self, Identity, UpstreamTarget};
use crate::inbound::{self, InboundContext, LocalApp};
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundContext, Upstream};
use crate::public_listeners::{self, BoundInbound, InboundPlan};
use crate::static_config::{self, Loaded, Outputs};
use crate::transport::{SocketFactory, TransportError};

/// Handoff roles (see [`crate::handoff`]) of the listeners every mode opens.
const ROLE_ADMIN: &str = "admin";
const ROLE_PUBLIC6: &str = "public6";

/// Attempts of the start-up sidecar lookup (about 30 s with backoff).
const STARTUP_ATTEMPTS: u32 = 20;

/// How long the proxy waits for its certificates and intentions before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("finding the sidecar registration failed")]
    Sidecar(#[source] AgentError),
    #[error("upstream {name:?} has no local bind port")]
    UpstreamPort { name: String },
    #[error("upstream {name:?}: local bind address {address:?} is not an IP address")]
    UpstreamAddress { name: String, address: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("not ready after {after:?}: still waiting for {missing}")]
    NotReady { after: Duration, missing: String },
    #[error("starting the control runtime failed")]
    Runtime(#[source] std::io::Error),
    #[error("installing the signal handler failed")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Transparent(#[from] crate::transparent::TransparentError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("no inbound listener configured")]
    NoInbound,
    #[error("a control task stopped unexpectedly")]
    Join(#[source] tokio::task::JoinError),
    /// The agent refused this service's leaf certificate to the proxy's token.
    #[error("the proxy's ACL token (--token) may not get {service:?}'s certificate: {reason}")]
    LeafRefused { service: String, reason: String },
}

/// An upstream listener to open.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamPlan {
    name: String,
    datacenter: String,
    bind: SocketAddr,
}

/// Registered upstreams, overridden and extended by `--upstream`.
fn plan_upstreams(sidecar: &AgentService, config: &Config) -> Result<Vec<UpstreamPlan>, AppError> {
    let mut out: Vec<UpstreamPlan> = Vec::new();
    let registered = sidecar
        .proxy
        .as_ref()
        .map(|p| p.upstreams.as_slice())
        .unwrap_or_default();
    for u in registered {
        if !(u.destination_type.is_empty() || u.destination_type == "service") {
            tracing::warn!(upstream = %u.destination_name, kind = %u.destination_type, "ignoring upstream of unsupported type");
            continue;
        }
        if config
            .upstreams
            .iter()
            .any(|c| c.name == u.destination_name)
        {
            continue;
        }
        if u.local_bind_port == 0 {
            return Err(AppError::UpstreamPort {
                name: u.destination_name.clone(),
            });
        }
        let ip: IpAddr = if u.local_bind_address.is_empty() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            u.local_bind_address
                .parse()
                .map_err(|_| AppError::UpstreamAddress {
                    name: u.destination_name.clone(),
                    address: u.local_bind_address.clone(),
                })?
        };
        out.push(UpstreamPlan {
            name: u.destination_name.clone(),
            datacenter: u.datacenter.clone(),
            bind: SocketAddr::new(ip, u.local_bind_port),
        });
    }
    for c in &config.upstreams {
        out.push(UpstreamPlan {
            name: c.name.clone(),
            datacenter: String::new(),
            bind: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), c.port),
        });
    }
    Ok(out)
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(config: Config) -> Result<(), AppError> {
    with_runtimes(async |shared| run_agent(config, shared).await).await
}

/// Runs the proxy in static mode (config file, no control plane) until SIGTERM/SIGINT.
/// `initial` is the validated first load (see [`static_config::load`]).
pub async fn run_static(initial: Loaded) -> Result<(), AppError> {
    with_runtimes(async |shared| run_static_with(initial, shared).await).await
}

/// The crypto provider for everything (aws-lc-rs; rustls would panic if it had to guess).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What every mode runs with, made once by [`with_runtimes`].
struct Shared<'a> {
    provider: Arc<rustls::crypto::CryptoProvider>,
    metrics: Arc<Metrics>,
    /// The small runtime of the control loops, apart from the data path's.
    control: &'a tokio::runtime::Runtime,
}

async fn with_runtimes<F>(f: F) -> Result<(), AppError>
where
    F: AsyncFnOnce(Shared<'_>) -> Result<(), AppError>,
{
    let provider = crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("meshproxy-control")
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let result = f(Shared {
        provider,
        metrics,
        control: &control,
    })
    .await;
    control.shutdown_background();
    result
}

/// What either mode feeds the data path: the channels its sources fill (the agent's blocking
/// queries, or the static config file's watcher) and the settings the data path runs with.
/// Both modes fill one of these and hand it to [`serve`], which builds the identity, re-checks
/// live connections and runs the listeners the same way for both: nothing behind it knows
/// which mode runs.
struct Feeds {
    /// The settings shown on `/config`.
    settings: serde_json::Value,
    /// The first public listener (the transparent capture's, `public=` of the ready line).
    public: InboundPlan,
    /// Static mode's further named listeners (same identity and policy, each its own app).
    more_public: Vec<InboundPlan>,
    admin: Option<SocketAddr>,
    /// The upstreams the identity holds a TLS client configuration for.
    targets: Vec<UpstreamTarget>,
    watches: Watches,
    upstreams: Vec<Arc<Upstream>>,
    /// Timeouts, denied-connection handling, TLS options.
    options: DataPathOptions,
    /// Opens the data path's listeners and connections (the pod's namespace with
    /// `--transparent --netns`).
    sockets: SocketFactory,
    /// `--transparent`: started once the public listener is bound.
    transparent: Option<crate::transparent::TransparentPlan>,
    /// Listeners received from the proxy this one takes over from, and where this one offers
    /// its own to its successor (`None`: static mode, no handoff).
    handoff: Option<(Option<Arc<handoff::Inherited>>, std::path::PathBuf, String)>,
}

/// The channels of [`Feeds`] both modes fill the same way: a sender and a receiver of each.
struct FeedChannel<T>(
    watch::Sender<Option<Arc<T>>>,
    watch::Receiver<Option<Arc<T>>>,
);

impl<T> FeedChannel<T> {
    fn new(initial: Option<T>) -> Self {
        let (tx, rx) = watch::channel(initial.map(Arc::new));
        Self(tx, rx)
    }
}

/// [`agent::spawn_watch`] of `path`, each body decoded by `decode` (given the path, which its
/// errors name).
fn watch_decoded<T: Send + Sync + 'static>(
    client: &AgentClient,
    what: &'static str,
    path: String,
    tx: watch::Sender<Option<Arc<T>>>,
    decode: fn(&str, &[u8]) -> Result<T, agent::AgentError>,
) {
    let p = path.clone();
    agent::spawn_watch(
        client.clone(),
        what,
        path,
        move |_, body| decode(&p, body),
        tx,
    );
}

/// What [`serve`] watches, whichever source fills it.
struct Watches {
    leaf: watch::Receiver<Option<Arc<LeafCert>>>,
    roots: watch::Receiver<Option<Arc<CaRootList>>>,
    policy: watch::Receiver<Option<Arc<Policy>>>,
    /// The sidecar registration (agent mode; `None` in static mode, shown as `Sidecar: null`).
    sidecar: watch::Receiver<Option<Arc<AgentService>>>,
}

/// How long the start-up leaf check waits for the agent before leaving it to the leaf watch.
const LEAF_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails the start when the agent refuses `service`'s leaf to this proxy's token (it lacks
/// `service:write` on it): such a proxy could never serve, and retrying does not grant a
/// permission. Any other failure (agent slow, CA not ready) is left to the leaf watch, which
/// retries.
async fn check_leaf_allowed(
    control: &tokio::runtime::Runtime,
    client: &AgentClient,
    service: &str,
) -> Result<(), AppError> {
    let (c, path) = (
        client.clone(),
        format!("/v1/agent/connect/ca/leaf/{service}"),
    );
    let answer = control
        .spawn(async move { tokio::time::timeout(LEAF_CHECK_TIMEOUT, c.get(&path, 0)).await })
        .await
        .map_err(AppError::Join)?;
    match answer {
        Ok(Err(AgentError::Forbidden { body, .. })) => Err(AppError::LeafRefused {
            service: service.to_string(),
            reason: body,
        }),
        _ => Ok(()),
    }
}

async fn run_agent(config: Config, shared: Shared<'_>) -> Result<(), AppError> {
    let control = shared.control;
    // A proxy already serving the same pod (transparent mode) or the same sidecar of the same
    // agent hands over its listeners (and the pod's lock): this one builds itself on them,
    // and the old one drains once this one serves. The key names the offer's socket and is
    // checked again in the exchange.
    let handoff_key = config
        .transparent
        .as_ref()
        .and_then(crate::transparent::handoff_key)
        .unwrap_or_else(|| format!("sidecar-{}-{}", config.sidecar_for, config.agent_addr));
    let handoff_path = handoff::socket_path(&handoff_key);
    let inherited = match handoff::receive(&handoff_path, &handoff_key) {
        Ok(i) => i.map(Arc::new),
        Err(e) => {
            tracing::warn!(error = %e, "no listener handoff from a running proxy; starting alone");
            None
        }
    };
    // Transparent mode's preflight comes first: a bad environment is refused before anything
    // else happens (one line, nothing attached).
    let prepared = config
        .transparent
        .as_ref()
        .map(|t| {
            let lock = inherited
                .as_ref()
                .and_then(|i| i.take(crate::transparent::ROLE_LOCK))
                .map(std::fs::File::from);
            crate::transparent::prepare(t, lock)
        })
        .transpose()?;
    let sockets = prepared.as_ref().map_or_else(
        SocketFactory::host,
        crate::transparent::Prepared::socket_factory,
    );
    let client = AgentClient::new(config.agent_addr, config.token.clone());
    let sidecar = {
        let (c, id) = (client.clone(), config.sidecar_for.clone());
        control
            .spawn(async move { c.find_sidecar(&id, STARTUP_ATTEMPTS).await })
            .await
            .map_err(AppError::Join)?
            .map_err(AppError::Sidecar)?
    };
    let destination = sidecar.destination().to_string();
    check_leaf_allowed(control, &client, &destination).await?;
    let plans = plan_upstreams(&sidecar, &config)?;
    tracing::info!(
        sidecar = %sidecar.id, service = %destination, port = sidecar.port,
        upstreams = ?plans.iter().map(|p| (&p.name, p.bind)).collect::<Vec<_>>(),
        "sidecar registration found"
    );

    let FeedChannel(sidecar_tx, sidecar_rx) = FeedChannel::new(Some(sidecar.clone()));
    let FeedChannel(local_app_tx, local_app_rx) = FeedChannel::new(Some(local_app_of(&sidecar)));
    let FeedChannel(leaf_tx, leaf_rx) = FeedChannel::new(None);
    let FeedChannel(roots_tx, roots_rx) = FeedChannel::new(None);
    let FeedChannel(policy_tx, policy_rx) = FeedChannel::new(None);
    // Intentions as the agent serves them; `policy_feed` makes the policy of them, the roots'
    // trust domain and the service's protocol.
    let (intentions_tx, intentions_rx) =
        watch::channel::<Option<Arc<crate::policy_feed::AgentIntentions>>>(None);
    let (protocol_tx, protocol_rx) = watch::channel(config.protocol);
    let transparent = prepared.map(|prepared| crate::transparent::TransparentPlan {
        prepared,
        mesh_destinations_only: config
            .transparent
            .as_ref()
            .is_some_and(|t| t.mesh_destinations_only),
        outbound_port: config
            .transparent
            .as_ref()
            .map_or(crate::transparent::args::DEFAULT_OUTBOUND_PORT, |t| {
                t.outbound_port
            }),
        client: client.clone(),
        app_ports: vec![sidecar.local_app().1],
        leaf: leaf_rx.clone(),
        roots: roots_rx.clone(),
        provider: shared.provider.clone(),
    });

    // Agent loops, on the control runtime.
    {
        let _enter = control.enter();
        let path = format!("/v1/agent/service/{}", sidecar.id);
        watch_decoded(
            &client,
            "sidecar registration",
            path,
            sidecar_tx,
            |p, body| agent::decode_json(p, "service", body),
        );
        let path = format!("/v1/agent/connect/ca/leaf/{destination}");
        watch_decoded(&client, "leaf certificate", path, leaf_tx, |p, body| {
            agent::decode_json(p, "leaf certificate", body)
        });
        let path = "/v1/agent/connect/ca/roots".to_string();
        watch_decoded(&client, "CA roots", path, roots_tx, agent::decode_roots);
        let path = format!("/v1/agent/connect/intentions/{destination}");
        agent::spawn_watch(
            client.clone(),
            "intentions",
            path,
            |index, body| {
                Ok::<_, std::convert::Infallible>(crate::policy_feed::AgentIntentions {
                    index,
                    body: bytes::Bytes::copy_from_slice(body),
                })
            },
            intentions_tx,
        );
        // The declared protocol (L7 issue #6): `--protocol`, or the service-defaults entry.
        if config.protocol.is_none() {
            agent::spawn_protocol_watch(client.clone(), &destination, protocol_tx);
        }
        // The mesh-wide request normalization every L7 decision starts with.
        let (normalization_tx, normalization_rx) = watch::channel(None);
        agent::spawn_normalization_watch(client.clone(), normalization_tx);
        control.spawn(crate::policy_feed::run(
            destination.clone(),
            crate::policy_feed::Feeds {
                intentions: intentions_rx,
                roots: roots_rx.clone(),
                protocol: protocol_rx,
                normalization: normalization_rx,
            },
            policy_tx,
        ));
        control.spawn(follow_local_app(sidecar_rx.clone(), local_app_tx));
        control.spawn(warn_on_registration_change(
            sidecar_rx.clone(),
            sidecar.clone(),
        ));
    }
    let mut upstreams = Vec::new();
    for plan in &plans {
        let (tx, rx) = watch::channel::<Option<Arc<Vec<Endpoint>>>>(None);
        let path = format!("/v1/health/connect/{}?passing", plan.name);
        let _enter = control.enter();
        watch_decoded(
            &client,
            "upstream instances",
            path,
            tx,
            agent::decode_endpoints,
        );
        upstreams.push(Arc::new(Upstream::new(plan.name.clone(), plan.bind, rx)));
    }

    let public_ip: IpAddr = sidecar
        .address
        .parse()
        .unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let targets = plans
        .iter()
        .map(|p| UpstreamTarget {
            name: p.name.clone(),
            datacenter: p.datacenter.clone(),
            spiffe_id: None,
        })
        .collect();
    let feeds = Feeds {
        settings: serde_json::to_value(&config).unwrap_or_default(),
        public: InboundPlan {
            name: None,
            bind: SocketAddr::new(public_ip, sidecar.port),
            local_app: local_app_rx,
        },
        more_public: Vec::new(),
        admin: Some(crate::config::admin_addr(
            config.admin_addr,
            sidecar
                .proxy
                .as_ref()
                .and_then(|p| p.config.get(crate::config::ADMIN_CONFIG_KEY)),
        )?),
        targets,
        watches: Watches {
            leaf: leaf_rx,
            roots: roots_rx,
            policy: policy_rx,
            sidecar: sidecar_rx,
        },
        upstreams,
        options: config.data_path,
        sockets,
        transparent,
        handoff: Some((inherited, handoff_path, handoff_key)),
    };
    serve(feeds, shared).await
}

/// Static mode: the file watcher feeds the channels the agent loops feed in agent mode, and the
/// same identity manager, re-check loop and data path consume them.
async fn run_static_with(initial: Loaded, shared: Shared<'_>) -> Result<(), AppError> {
    let control = shared.control;
    let config = initial.config.clone();
    let generation = initial.leaf.modify_index;
    tracing::info!(
        config = %config.path.display(), id = %initial.id,
        upstreams = ?config.upstreams.iter().map(|u| (&u.name, u.listen)).collect::<Vec<_>>(),
        "static mode"
    );
    let FeedChannel(leaf_tx, leaf) = FeedChannel::new(None);
    let FeedChannel(roots_tx, roots) = FeedChannel::new(None);
    let FeedChannel(policy_tx, policy) = FeedChannel::new(None);
    let mut local_app_txs = Vec::new();
    let mut public = Vec::new();
    for i in &config.inbound {
        let FeedChannel(tx, rx) = FeedChannel::new(None);
        local_app_txs.push((i.name.clone(), tx));
        public.push(InboundPlan {
            name: i.name.clone(),
            bind: i.listen,
            local_app: rx,
        });
    }
    let mut public = public.into_iter();
    // The schema refuses a config without one.
    let Some(first_public) = public.next() else {
        return Err(AppError::NoInbound);
    };
    // No registration in static mode; the admin API shows `Sidecar: null`. The sender is held
    // (not dropped) so the channel stays open for its readers.
    let FeedChannel(_sidecar_tx, sidecar) = FeedChannel::new(None);
    let mut upstreams = Vec::new();
    let mut endpoint_txs = Vec::new();
    for u in &config.upstreams {
        let (tx, rx) = watch::channel::<Option<Arc<Vec<Endpoint>>>>(None);
        endpoint_txs.push((u.name.clone(), tx));
        upstreams.push(Arc::new(Upstream::new(u.name.clone(), u.listen, rx)));
    }
    let outputs = Outputs {
        leaf: leaf_tx,
        roots: roots_tx,
        policy: policy_tx,
        local_apps: local_app_txs,
        endpoints: endpoint_txs,
    };
    outputs.publish(&initial, generation);
    control.spawn(static_config::watch_files(
        shared.provider.clone(),
        initial,
        outputs,
    ));
    let feeds = Feeds {
        settings: serde_json::to_value(&config).unwrap_or_default(),
        public: first_public,
        more_public: public.collect(),
        admin: config.admin,
        targets: config.targets(),
        watches: Watches {
            leaf,
            roots,
            policy,
            sidecar,
        },
        upstreams,
        options: config.data_path,
        sockets: SocketFactory::host(),
        transparent: None,
        handoff: None,
    };
    serve(feeds, shared).await
}

/// Everything after the feeds, the same for both modes: the identity manager and the
/// connection re-checks (on the control runtime), admin server, readiness, listeners, drain on
/// SIGTERM.
async fn serve(p: Feeds, shared: Shared<'_>) -> Result<(), AppError> {
    let Shared {
        provider,
        metrics,
        control,
    } = shared;
    let (identity_tx, identity) = watch::channel::<Option<Arc<Identity>>>(None);
    let registry = Arc::new(Registry::default());
    {
        let _enter = control.enter();
        control.spawn(identity::run_manager_with(
            provider,
            p.watches.leaf,
            p.watches.roots,
            p.targets,
            p.options.tls,
            identity_tx,
        ));
        control.spawn(connections::run_rechecks(
            registry.clone(),
            p.watches.policy.clone(),
            p.options.keep_denied_connections,
        ));
    }
    let drain = Drain::new();
    let admin_state = Arc::new(AdminState {
        config: p.settings,
        identity: identity.clone(),
        policy: p.watches.policy.clone(),
        sidecar: p.watches.sidecar.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        draining: drain.draining(),
        listeners: OnceLock::new(),
    });
    let (inherited, handoff_at) = match p.handoff {
        Some((i, path, key)) => (i, Some((path, key))),
        None => (None, None),
    };
    // Every listener this proxy opens, by role, for its successor (see `crate::handoff`).
    let mut offer: Vec<(String, std::os::fd::OwnedFd)> = Vec::new();
    let mut admin_addr = None;
    if let Some(addr) = p.admin {
        let admin_listener = {
            let _enter = control.enter();
            match inherited
                .as_ref()
                .and_then(|i| i.listener(ROLE_ADMIN, addr))
            {
                Some(l) => l,
                // Always in the proxy's own namespace, where the operator reaches it.
                None => SocketFactory::host().bind(addr).await?,
            }
        };
        admin_addr = admin_listener.local_addr().ok();
        offer.extend(handoff::offered(ROLE_ADMIN, &admin_listener));
        control.spawn(admin::serve(
            admin_listener,
            admin_state.clone(),
            drain.draining(),
        ));
    }

    // Listeners open only once the proxy can serve: otherwise the agent's TCP check would mark
    // the sidecar healthy while every connection is refused.
    // The upstreams' first instance lists too: a proxy taking over from a running one must
    // not refuse what its predecessor would have served.
    let ready = {
        let (mut i, mut pol) = (identity.clone(), p.watches.policy.clone());
        let mut ups: Vec<_> = p.upstreams.iter().map(|u| u.endpoints.clone()).collect();
        tokio::time::timeout(READY_TIMEOUT, async move {
            let _ = i.wait_for(Option::is_some).await;
            let _ = pol.wait_for(Option::is_some).await;
            for u in &mut ups {
                let _ = u.wait_for(Option::is_some).await;
            }
        })
        .await
    };
    if ready.is_err() {
        return Err(AppError::NotReady {
            after: READY_TIMEOUT,
            missing: admin_state.missing().join(", "),
        });
    }

    // Each listener by role: a successor takes over each public listener by name and each
    // upstream's by its name (see `public_listeners::role`).
    let open = async |role: String, addr| {
        let l = public_listeners::open(inherited.as_deref(), &p.sockets, &role, addr).await?;
        let (bound, offered) = (l.local_addr().unwrap_or(addr), handoff::offered(role, &l));
        Ok::<_, AppError>((l, bound, offered))
    };
    let mut publics = Vec::new();
    let mut bound_inbound = Vec::new();
    for plan in std::iter::once(p.public).chain(p.more_public) {
        let role = public_listeners::role(plan.name.as_deref());
        let (l, addr, offered) = open(role, plan.bind).await?;
        offer.extend(offered);
        bound_inbound.push(BoundInbound {
            name: plan.name,
            addr,
            local_app: plan.local_app.clone(),
        });
        publics.push((l, plan.local_app));
    }
    let inbound_line = public_listeners::ready_fields(&bound_inbound);
    let mut publics = publics.into_iter();
    let (Some((public, public_app)), Some(public_addr)) =
        (publics.next(), bound_inbound.first().map(|b| b.addr))
    else {
        return Err(AppError::NoInbound);
    };
    let mut upstream_listeners = Vec::new();
    let mut bound = Vec::new();
    for u in &p.upstreams {
        let (l, addr, offered) = open(format!("upstream:{}", u.name), u.bind).await?;
        offer.extend(offered);
        bound.push((u.clone(), addr));
        upstream_listeners.push((l, u.clone()));
    }
    let upstream_line: String = bound
        .iter()
        .map(|(u, a)| format!(" upstream.{}={a}", u.name))
        .collect();
    let _ = admin_state.listeners.set(admin::Listeners {
        inbound: bound_inbound,
        upstreams: bound,
    });

    // Transparent mode steers the app's ports to the mTLS listener over IPv6 too, through an
    // IPv6-only twin on `[::]` (same port) in the pod; without IPv6 there, only IPv4 is.
    let public6 = match (&p.transparent, public_addr) {
        // Only with the pod's namespace (`--netns`): inbound capture needs it, and without it
        // the twin would open an IPv6 port on the host.
        (Some(plan), SocketAddr::V4(a)) if plan.prepared.netns().is_some() => {
            let bind6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), a.port());
            match inherited
                .as_ref()
                .and_then(|i| i.listener(ROLE_PUBLIC6, bind6))
            {
                Some(l) => Some(l),
                None => match p.sockets.bind_v6only(bind6).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "transparent mode: no IPv6 inbound listener; IPv6 connections to the app's ports are not steered");
                        None
                    }
                },
            }
        }
        _ => None,
    };
    if let Some(l6) = &public6 {
        offer.extend(handoff::offered(ROLE_PUBLIC6, l6));
    }
    // Attached before "ready"; held (and so attached) until this function returns.
    let transparent = match p.transparent {
        Some(plan) => Some(
            crate::transparent::start(
                plan,
                control,
                &public,
                public6.as_ref(),
                metrics.clone(),
                p.options.connect_timeout,
                p.options.handshake_timeout,
                &drain,
                inherited.as_deref(),
                &mut offer,
            )
            .await?,
        ),
        None => None,
    };
    let transparent_line = transparent
        .as_ref()
        .map(|t| format!(" transparent={}", t.outbound))
        .unwrap_or_default();
    // In a pod, inbound connects to the app come from the caller's address.
    let app_sockets = match transparent.as_ref().and_then(|t| t.caller_source()) {
        Some(source) => p.sockets.with_caller_source(source),
        None => p.sockets.clone(),
    };
    // One context per public listener: the same identity, policy and registry (so an
    // intention change re-checks every listener's connections), each its own application.
    let inbound_ctx = |local_app| {
        Arc::new(InboundContext {
            identity: identity.clone(),
            policy: p.watches.policy.clone(),
            local_app,
            registry: registry.clone(),
            metrics: metrics.clone(),
            sockets: app_sockets.clone(),
            connect_timeout: p.options.connect_timeout,
            handshake_timeout: p.options.handshake_timeout,
        })
    };
    let public_ctx = inbound_ctx(public_app);
    if let Some(public6) = public6 {
        tokio::spawn(inbound::serve(public6, public_ctx.clone(), drain.watch()));
    }
    tokio::spawn(inbound::serve(public, public_ctx, drain.watch()));
    for (listener, local_app) in publics {
        tokio::spawn(inbound::serve(
            listener,
            inbound_ctx(local_app),
            drain.watch(),
        ));
    }
    let outbound_ctx = Arc::new(OutboundContext {
        identity: identity.clone(),
        metrics: metrics.clone(),
        sockets: p.sockets.clone(),
        connect_timeout: p.options.connect_timeout,
        handshake_timeout: p.options.handshake_timeout,
    });
    for (listener, up) in upstream_listeners {
        tokio::spawn(outbound::serve(
            listener,
            up,
            outbound_ctx.clone(),
            drain.watch(),
        ));
    }
    let id = identity
        .borrow()
        .as_ref()
        .map(|i| i.id.uri())
        .unwrap_or_default();
    tracing::info!(%id, public = %public_addr, admin = ?admin_addr, "proxy ready");
    // Machine-readable line for scripts and tests (with the bound addresses, so port 0 works).
    println!(
        "meshproxy: ready id={id} public={public_addr} admin={}{inbound_line}{upstream_line}{transparent_line}",
        admin_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    // Start-up code is done: keep mapped only the code that runs from here on.
    match crate::resident::trim() {
        Ok(t) => tracing::debug!(mappings = t.mappings, kib = t.kib, "unmapped start-up code"),
        Err(e) => tracing::debug!(error = %e, "could not unmap start-up code"),
    }

    // The predecessor (if any) stops accepting and drains now; this proxy offers its own
    // listeners to its successor in turn.
    if let Some(i) = &inherited {
        i.ready();
    }
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel::<()>();
    let offer = handoff::Offer::new(offer);
    if let Some((path, key)) = handoff_at.clone() {
        let offer = offer.clone();
        std::thread::Builder::new()
            .name("meshproxy-handoff".into())
            .spawn(move || {
                handoff::offer(&path, &key, &offer);
                let _ = taken_tx.send(());
            })
            .map_err(AppError::Runtime)?;
    }
    let taken_over = tokio::select! {
        r = wait_for_signal() => {
            r?;
            // Draining on a signal: the listeners must close (new connections refused), so
            // the offer lets go of its duplicates; no successor can take over a draining proxy.
            if let Some((path, _)) = &handoff_at {
                offer.withdraw(path);
            }
            false
        }
        Ok(()) = taken_rx => {
            tracing::info!("a new proxy took over the listeners");
            true
        }
    };
    let live = registry.len();
    tracing::info!(
        inbound_connections = live,
        timeout = ?p.options.drain_timeout,
        "draining: no longer accepting, waiting for live connections"
    );
    match drain.drain(p.options.drain_timeout).await {
        DrainOutcome::Complete => tracing::info!("drained; exiting"),
        DrainOutcome::TimedOut => tracing::warn!(
            still_open = registry.len(),
            "drain timeout passed; closing the remaining connections"
        ),
    }
    if let Some(t) = &transparent {
        if t.pinned() {
            tracing::info!(stats = ?t.stats(), "transparent mode: exiting; the capture stays pinned (fail closed) for the next proxy or `meshproxy transparent remove`");
        } else {
            // Dropped (so detached) when this function returns.
            tracing::info!(stats = ?t.stats(), "transparent mode (--fail-open): detaching the eBPF programs");
            if !taken_over {
                t.remove_caller_routing();
            }
        }
    }
    Ok(())
}

fn local_app_of(s: &AgentService) -> LocalApp {
    let (host, port) = s.local_app();
    LocalApp { host, port }
}

/// Agent mode: the local application's address follows the sidecar registration.
async fn follow_local_app(
    mut sidecar: watch::Receiver<Option<Arc<AgentService>>>,
    out: watch::Sender<Option<Arc<LocalApp>>>,
) {
    while sidecar.changed().await.is_ok() {
        let app = sidecar.borrow_and_update().as_deref().map(local_app_of);
        if let Some(app) = app {
            out.send_if_modified(|old| {
                let changed = old.as_deref() != Some(&app);
                if changed {
                    *old = Some(Arc::new(app));
                }
                changed
            });
        }
    }
}

async fn wait_for_signal() -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signal)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Listeners are fixed at start; say so when the registration's ports or upstreams change.
async fn warn_on_registration_change(
    mut rx: watch::Receiver<Option<Arc<AgentService>>>,
    initial: AgentService,
) {
    while rx.changed().await.is_ok() {
        let now = rx.borrow_and_update().clone();
        if let Some(now) = now {
            let upstreams = |s: &AgentService| s.proxy.as_ref().map(|p| p.upstreams.clone());
            if now.port != initial.port || upstreams(&now) != upstreams(&initial) {
                tracing::warn!(
                    sidecar = %now.id,
                    "sidecar port or upstreams changed; restart the proxy to apply (the local service address is applied live)"
                );
            }
        }
    }
}
