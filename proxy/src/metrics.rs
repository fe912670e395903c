//! Prometheus metrics of the proxy (served as text on the admin port's `/metrics`).
//!
//! Every label value comes from a closed set (`as_str()` of an enum, or a fixed string), so
//! the number of series is bounded whatever the traffic.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnResult {
    /// Both directions finished normally.
    Ok,
    /// An I/O error ended the copy.
    Error,
    /// TLS handshake failed or timed out.
    HandshakeFailed,
    /// The peer's certificate did not carry a usable SPIFFE ID.
    BadPeerIdentity,
    /// Authorization denied the connection before any byte reached the application.
    Denied,
    /// An intention change denied the live connection and it was closed.
    ClosedByPolicy,
    /// No TLS identity or intentions loaded yet.
    NotReady,
    /// No healthy instance of the upstream.
    NoEndpoints,
    /// TCP connect to the application or to every upstream instance failed.
    ConnectFailed,
    /// Still open when the drain deadline passed.
    Drained,
}

impl ConnResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnResult::Ok => "ok",
            ConnResult::Error => "error",
            ConnResult::HandshakeFailed => "handshake_failed",
            ConnResult::BadPeerIdentity => "bad_peer_identity",
            ConnResult::Denied => "denied",
            ConnResult::ClosedByPolicy => "closed_by_policy",
            ConnResult::NotReady => "not_ready",
            ConnResult::NoEndpoints => "no_endpoints",
            ConnResult::ConnectFailed => "connect_failed",
            ConnResult::Drained => "drained",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnLabels {
    pub direction: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BytesLabels {
    pub direction: &'static str,
    pub result: &'static str,
    /// `client_to_server` or `server_to_client` (client = whoever opened the connection).
    pub flow: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirLabels {
    pub direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    pub direction: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpRequestLabels {
    pub decision: &'static str,
    /// Kind of rule that decided (a closed set, see `authz::Verdict::kind`).
    pub reason: &'static str,
    /// Intention key with `#N` for permission N, or `default` (`Verdict::rule_label`):
    /// bounded by the destination's intentions and their permissions.
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpResponseLabels {
    /// `1xx` … `5xx`.
    pub class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EbpfEventLabels {
    /// A counter of the transparent-mode eBPF programs (a fixed set, see
    /// `transparent::loader::Stats::events`).
    pub event: &'static str,
}

type HistogramFamily = Family<DirLabels, Histogram, fn() -> Histogram>;

/// Where the eBPF programs' counters are read at scrape time (empty once they are detached).
type EbpfSource = Box<dyn Fn() -> Option<[(&'static str, u64); 6]> + Send + Sync>;

/// Exposes the transparent-mode eBPF counters, which live in a kernel map, as
/// `meshproxy_transparent_ebpf_events_total{event}`: read on each scrape, nothing copied
/// in between. Emits nothing outside transparent mode.
#[derive(Default)]
struct EbpfCollector {
    source: Arc<OnceLock<EbpfSource>>,
}

impl std::fmt::Debug for EbpfCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EbpfCollector")
    }
}

impl Collector for EbpfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(events) = self.source.get().and_then(|source| source()) else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "transparent_ebpf_events",
            "Events counted by the transparent-mode eBPF programs since they were attached (summed over CPUs), by event",
            None,
            MetricType::Counter,
        )?;
        for (event, n) in events {
            let labels = EbpfEventLabels { event };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn handshake_histogram() -> Histogram {
    // 0.5 ms … ~4 s: loopback handshakes take about a millisecond, a loaded host tens.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Declares [`Families`]: one field per metric family, named as the family is exposed (under
/// the `meshproxy_` prefix), with its doc comment as the family's help text, and the
/// constructor that registers every field. Each family is written once, not four times.
macro_rules! families {
    ($($(#[doc = $help:literal])+ $name:ident: $ty:ty $(= $init:expr)?,)+) => {
        /// The metric families the proxy records into.
        struct Families {
            $($(#[doc = $help])+ $name: $ty,)+
        }

        impl Families {
            fn register(registry: &mut Registry) -> Self {
                $(
                    let $name: $ty = families!(@init $($init)?);
                    let help = concat!($($help),+).trim();
                    registry.register(stringify!($name), help, $name.clone());
                )+
                Self { $($name,)+ }
            }
        }
    };
    (@init $init:expr) => { $init };
    (@init) => { Default::default() };
}

families! {
    /// Connections handled, by listener direction and how they ended
    connections: Family<ConnLabels, Counter>,
    /// Bytes proxied, by direction, connection result and flow
    bytes: Family<BytesLabels, Counter>,
    /// Connections currently open
    active_connections: Family<DirLabels, Gauge>,
    /// Duration of successful mutual TLS handshakes
    tls_handshake_seconds: HistogramFamily =
        Family::new_with_constructor(handshake_histogram as fn() -> Histogram),
    /// Failed mutual TLS handshakes, by kind
    tls_handshake_failures: Family<FailureLabels, Counter>,
    /// Inbound authorization decisions, by decision and reason
    authorization_decisions: Family<AuthzLabels, Counter>,
    /// Inbound L7 requests, by decision, reason kind and the rule (intention and permission,
    /// or default) that decided
    http_requests: Family<HttpRequestLabels, Counter>,
    /// Responses to inbound L7 requests (the application's or the proxy's), by status class
    http_responses: Family<HttpResponseLabels, Counter>,
    /// Seconds until the proxy's leaf certificate expires
    leaf_expiry_seconds: Gauge<f64, AtomicU64>,
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    families: Families,
    ebpf_source: Arc<OnceLock<EbpfSource>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshproxy");
        let families = Families::register(&mut registry);
        let ebpf = EbpfCollector::default();
        let ebpf_source = ebpf.source.clone();
        registry.register_collector(Box::new(ebpf));
        Self {
            registry,
            families,
            ebpf_source,
        }
    }

    /// Transparent mode: where `/metrics` reads the eBPF programs' counters (only the first
    /// call counts). `source` returns `None` once the programs are gone.
    pub fn set_ebpf_source(
        &self,
        source: impl Fn() -> Option<[(&'static str, u64); 6]> + Send + Sync + 'static,
    ) {
        let _ = self.ebpf_source.set(Box::new(source));
    }

    /// Records a finished connection and its bytes.
    pub fn connection_closed(
        &self,
        direction: Direction,
        result: ConnResult,
        client_to_server: u64,
        server_to_client: u64,
    ) {
        let d = direction.as_str();
        let r = result.as_str();
        self.families
            .connections
            .get_or_create(&ConnLabels {
                direction: d,
                result: r,
            })
            .inc();
        for (flow, n) in [
            ("client_to_server", client_to_server),
            ("server_to_client", server_to_client),
        ] {
            if n > 0 {
                self.families
                    .bytes
                    .get_or_create(&BytesLabels {
                        direction: d,
                        result: r,
                        flow,
                    })
                    .inc_by(n);
            }
        }
    }

    /// Counts an open connection until the guard is dropped.
    pub fn open(&self, direction: Direction) -> ActiveGuard {
        let g = self
            .families
            .active_connections
            .get_or_create(&DirLabels {
                direction: direction.as_str(),
            })
            .clone();
        g.inc();
        ActiveGuard(g)
    }

    pub fn handshake_ok(&self, direction: Direction, seconds: f64) {
        self.families
            .tls_handshake_seconds
            .get_or_create(&DirLabels {
                direction: direction.as_str(),
            })
            .observe(seconds);
    }

    pub fn handshake_failed(&self, direction: Direction, kind: &'static str) {
        self.families
            .tls_handshake_failures
            .get_or_create(&FailureLabels {
                direction: direction.as_str(),
                kind,
            })
            .inc();
    }

    pub fn authorization(&self, allowed: bool, reason: &'static str) {
        self.families
            .authorization_decisions
            .get_or_create(&AuthzLabels {
                decision: if allowed { "allow" } else { "deny" },
                reason,
            })
            .inc();
    }

    /// Counts one inbound L7 request decision.
    pub fn http_request(&self, allowed: bool, reason: &'static str, rule: String) {
        self.families
            .http_requests
            .get_or_create(&HttpRequestLabels {
                decision: if allowed { "allow" } else { "deny" },
                reason,
                rule,
            })
            .inc();
    }

    /// Counts one response to an inbound L7 request by status class.
    pub fn http_response(&self, status: http::StatusCode) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.families
            .http_responses
            .get_or_create(&HttpResponseLabels { class })
            .inc();
    }

    pub fn set_leaf_expiry(&self, seconds: f64) {
        self.families.leaf_expiry_seconds.set(seconds);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the active-connection gauge on drop.
#[derive(Debug)]
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_and_described_by_their_declaration() {
        let m = Metrics::new();
        m.connection_closed(Direction::Inbound, ConnResult::Ok, 1, 1);
        m.handshake_ok(Direction::Inbound, 0.001);
        m.http_request(true, "intention", "default".into());
        let text = m.encode();
        for line in [
            "# HELP meshproxy_connections Connections handled, by listener direction and how they ended.",
            "# TYPE meshproxy_tls_handshake_seconds histogram",
            "# HELP meshproxy_http_requests Inbound L7 requests, by decision, reason kind and the rule (intention and permission, or default) that decided.",
            "# HELP meshproxy_leaf_expiry_seconds Seconds until the proxy's leaf certificate expires.",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn ebpf_counters_appear_once_a_source_is_set() {
        let m = Metrics::new();
        assert!(!m.encode().contains("transparent_ebpf_events"));
        m.set_ebpf_source(|| {
            Some([
                ("redirected", 3),
                ("redirected6", 0),
                ("excluded", 1),
                ("inbound_steered", 2),
                ("orig_recorded", 9),
                ("inbound_refused", 4),
            ])
        });
        let text = m.encode();
        assert!(
            text.contains("# TYPE meshproxy_transparent_ebpf_events counter"),
            "{text}"
        );
        assert!(
            text.contains("meshproxy_transparent_ebpf_events_total{event=\"orig_recorded\"} 9"),
            "{text}"
        );
    }
}
