//! Loopback admin HTTP server: `/ready`, `/config`, `/metrics`.
//!
//! * `/ready` answers 200 once the leaf, the roots and the intentions are loaded and the
//!   listeners are bound, and 503 (saying what is missing) before that and while draining.
//! * `/config` is a JSON view of what the proxy holds: its identity, certificate serials and
//!   root IDs, intentions (or the static `allowed_sources`), its inbound listeners with their
//!   applications, upstream instances and live inbound connections. It never contains
//!   key material (the private key is only ever inside rustls's `CertifiedKey`).
//! * `/metrics` is the Prometheus text exposition of [`crate::metrics`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::AgentService;
use crate::authz::Policy;
use crate::connections::Registry;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::outbound::Upstream;
use crate::public_listeners::BoundInbound;

/// An upstream listener and the address it is bound to.
pub type BoundUpstream = (Arc<Upstream>, SocketAddr);

/// The listeners once bound, each with the address actually bound (differs from the
/// configured one when that has port 0).
#[derive(Debug)]
pub struct Listeners {
    /// At least one; the first is the `PublicListener`.
    pub inbound: Vec<BoundInbound>,
    pub upstreams: Vec<BoundUpstream>,
}

/// Everything the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The printable settings the proxy runs with (agent flags or the static config file).
    pub config: serde_json::Value,
    pub identity: watch::Receiver<Option<Arc<Identity>>>,
    pub policy: watch::Receiver<Option<Arc<Policy>>>,
    pub sidecar: watch::Receiver<Option<Arc<AgentService>>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub draining: watch::Receiver<bool>,
    /// Set once the listeners are bound.
    pub listeners: OnceLock<Listeners>,
}

impl AdminState {
    /// What is still missing before the proxy can serve; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.identity.borrow().is_none() {
            m.push("leaf certificate and CA roots");
        }
        if self.policy.borrow().is_none() {
            m.push("intentions");
        }
        if self.listeners.get().is_none() {
            m.push("listeners");
        }
        if *self.draining.borrow() {
            m.push("nothing: the proxy is draining and will exit");
        }
        m
    }

    fn config_json(&self) -> serde_json::Value {
        let identity = self.identity.borrow().clone();
        let policy = self.policy.borrow().clone();
        let sidecar = self.sidecar.borrow().clone();
        let (inbound, upstreams) = match self.listeners.get() {
            Some(l) => (l.inbound.as_slice(), l.upstreams.as_slice()),
            None => (&[][..], &[][..]),
        };
        let public = inbound.first().map(|i| i.addr.to_string());
        let inbound: Vec<_> = inbound
            .iter()
            .map(|i| {
                json!({
                    "Name": i.name,
                    "Address": i.addr.to_string(),
                    "LocalApp": i.local_app.borrow().as_deref(),
                })
            })
            .collect();
        let upstreams: Vec<_> = upstreams
            .iter()
            .map(|(u, bound)| {
                let expected = identity
                    .as_ref()
                    .and_then(|i| i.client(&u.name).map(|(id, _)| id.uri()));
                json!({
                    "Name": u.name,
                    "LocalBindAddress": bound.to_string(),
                    "ExpectedServerIdentity": expected,
                    "Instances": u.endpoints.borrow().as_deref().cloned().unwrap_or_default(),
                })
            })
            .collect();
        json!({
            "Flags": self.config,
            "Sidecar": sidecar.as_deref(),
            "PublicListener": public,
            "InboundListeners": inbound,
            "Identity": identity.as_ref().map(|i| json!({
                "SpiffeID": i.id.uri(),
                "TrustDomain": i.trust_domain,
                "Leaf": i.leaf,
                "Roots": i.roots,
                "SecondsUntilLeafExpiry": i.seconds_until_expiry(),
            })),
            "Intentions": policy.as_ref().map(|p| json!({
                "Index": p.index,
                "Destination": p.destination,
                "TrustDomain": p.trust_domain,
                "DefaultPolicy": p.default_policy(),
                "Protocol": p.protocol.as_str(),
                "RequestNormalization": p.normalization,
                "AllowedSources": p.allowed_sources().map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()),
                "Intentions": p.intentions().map(|i| json!({
                    "ID": i.id,
                    "SourceNS": i.source_ns,
                    "SourceName": i.source_name,
                    "DestinationName": i.destination_name,
                    "Action": i.action.map(|a| a.as_str()),
                    "HasPermissions": !i.permissions.is_empty(),
                    "Precedence": i.precedence,
                })).collect::<Vec<_>>(),
            })),
            "Upstreams": upstreams,
            "InboundConnections": self.registry.snapshot(),
            "Draining": *self.draining.borrow(),
        })
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/ready" => {
            let missing = state.missing();
            if missing.is_empty() {
                respond(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: waiting for {}\n", missing.join(", ")),
                )
            }
        }
        "/config" => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&state.config_json()).unwrap_or_default(),
        ),
        "/metrics" => {
            if let Some(i) = state.identity.borrow().as_ref() {
                state
                    .metrics
                    .set_leaf_expiry(i.seconds_until_expiry() as f64);
            }
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.encode(),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the admin API on `listener` forever.
/// Serves until `draining` turns true: a successor sharing the listener (see
/// `crate::handoff`) then answers alone.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = draining.wait_for(|d| *d) => return,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = route(&state, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}
