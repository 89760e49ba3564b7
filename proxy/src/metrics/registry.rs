//! The metrics registry and the handles the request path updates.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use super::route::{Direction, Name};
use super::route::{RequestLabels, RetryLabels, RouteLabels, RouteStats, Tag};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    backend: Name,
    endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    source: &'static str,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All of the proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<RouteLabels, Counter>,
    hedges: Family<RouteLabels, Counter>,
    hedges_won: Family<RouteLabels, Counter>,
    in_flight: Family<DirectionLabels, Gauge>,
    endpoint_rtt: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    endpoint_token: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    endpoint_trust: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    endpoint_in_flight: Family<EndpointLabels, Gauge>,
    endpoint_ejected: Family<EndpointLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    config_version: Gauge,
    /// Age of the reported load used at each balancing decision.
    pub load_age: Histogram,
    /// 1 while the discovery stream from the control service is up.
    pub control_connected: Gauge,
    control_messages: Family<TypeLabels, Counter>,
    /// Connections to the control service after the first.
    pub control_reconnects: Counter,
    listener_open: Family<ListenerLabels, Gauge>,
    listener_limited: Family<ListenerLabels, Counter>,
    listener_header_timeouts: Family<ListenerLabels, Counter>,
    /// The coalescing counters.
    pub coalesce: super::coalesce::CoalesceMetrics,
    /// Model traffic (tokens, TTFT, TPOT, GPU-seconds, cost) and trace export counters.
    pub model: super::model::ModelMetrics,
    /// Inbound TLS and authorization.
    pub mesh: super::mesh::MeshMetrics,
    /// The workload certificate's expiry and renewals.
    pub identity: super::identity::IdentityMetrics,
    /// Requests by priority and outcome.
    pub priority: super::priority::PriorityMetrics,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Metric handles of one listener.
#[derive(Clone, Debug, Default)]
pub struct ListenerStats {
    /// Open client connections.
    pub open: Gauge,
    /// Accepts that had to wait because the listener had `max_connections` open.
    pub limited: Counter,
    /// Connections closed because no complete request head came within `header_read`.
    pub header_timeouts: Counter,
    /// Connections served over TLS (inbound).
    pub tls_connections: Counter,
    /// TLS connections whose handshake failed (inbound).
    pub tls_failures: Counter,
}

/// One endpoint's gauges, as `/metrics` shows them.
#[derive(Clone, Copy, Debug)]
pub struct EndpointRow<'a> {
    /// Its backend's name.
    pub backend: &'a Arc<str>,
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// The latency estimate the cost uses, in seconds.
    pub rtt_seconds: f64,
    /// The time per output token of its streamed answers, in seconds, once measured.
    pub token_seconds: Option<f64>,
    /// How its load report is used (1, 0.5 or 0), when it has sent one.
    pub report_trust: Option<f64>,
    /// Requests in flight to it from this proxy.
    pub in_flight: u32,
    /// Whether it is ejected.
    pub ejected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vane");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by where they went and how they ended", requests.clone());
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 17)));
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request to sending its response headers",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        registry.register("retries", "Attempts sent again to another endpoint, by why", retries.clone());
        let budget_exhausted = Family::<RouteLabels, Counter>::default();
        registry.register(
            "retry_budget_exhausted",
            "Retries not sent because the backend's retry budget was spent",
            budget_exhausted.clone(),
        );
        let hedges = Family::<RouteLabels, Counter>::default();
        registry.register(
            "hedges",
            "Copies of a request sent to another endpoint after the hedging delay",
            hedges.clone(),
        );
        let hedges_won = Family::<RouteLabels, Counter>::default();
        registry.register("hedges_won", "Hedges whose answer started first and was kept", hedges_won.clone());
        let in_flight = Family::<DirectionLabels, Gauge>::default();
        registry.register("requests_in_flight", "Requests waiting for response headers", in_flight.clone());
        let endpoint_rtt = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "endpoint_rtt_ewma",
            "Peak-EWMA time to first response byte, per endpoint",
            prometheus_client::registry::Unit::Seconds,
            endpoint_rtt.clone(),
        );
        let endpoint_token = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "endpoint_token_ewma",
            "EWMA time per output token of streamed answers, per endpoint (absent before any)",
            prometheus_client::registry::Unit::Seconds,
            endpoint_token.clone(),
        );
        let endpoint_trust = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "endpoint_load_report_trust",
            "How the endpoint's load report is used: 1 as reported, 0.5 queue raised to this proxy's own requests, 0 not used (frozen or stale); absent with no report",
            endpoint_trust.clone(),
        );
        let endpoint_in_flight = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_in_flight",
            "Requests in flight to the endpoint (until the body ends)",
            endpoint_in_flight.clone(),
        );
        let endpoint_ejected = Family::<EndpointLabels, Gauge>::default();
        registry.register("endpoint_ejected", "1 while the endpoint is ejected", endpoint_ejected.clone());
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config reloads by result", reloads.clone());
        let load_age = Histogram::new(exponential_buckets(0.0005, 2.0, 13));
        registry.register_with_unit(
            "balancer_load_age",
            "Age of the endpoint-reported load (ORCA) behind each balancing decision that used one",
            prometheus_client::registry::Unit::Seconds,
            load_age.clone(),
        );
        let control_connected = Gauge::default();
        registry.register(
            "control_connected",
            "1 while the discovery stream from the control service is up",
            control_connected.clone(),
        );
        let control_messages = Family::<TypeLabels, Counter>::default();
        registry.register("control_messages", "Discovery messages received, by type", control_messages.clone());
        let control_reconnects = Counter::default();
        registry.register(
            "control_reconnects",
            "Connections to the control service after the first",
            control_reconnects.clone(),
        );
        let config_version = Gauge::default();
        registry.register("config_version", "Version number of the active config", config_version.clone());
        config_version.set(1);
        let listener_open = Family::<ListenerLabels, Gauge>::default();
        registry.register("listener_connections", "Open client connections per listener", listener_open.clone());
        let listener_limited = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "listener_connections_limited",
            "Accepts that waited because the listener had max_connections open",
            listener_limited.clone(),
        );
        let listener_header_timeouts = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "listener_header_timeouts",
            "Connections closed because no complete request head came within the header-read timeout",
            listener_header_timeouts.clone(),
        );
        let coalesce = super::coalesce::CoalesceMetrics::register(&mut registry);
        let model = super::model::ModelMetrics::register(&mut registry);
        let mesh = super::mesh::MeshMetrics::register(&mut registry);
        let identity = super::identity::IdentityMetrics::register(&mut registry);
        let priority = super::priority::PriorityMetrics::register(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            retries,
            budget_exhausted,
            hedges,
            hedges_won,
            in_flight,
            endpoint_rtt,
            endpoint_token,
            endpoint_trust,
            endpoint_in_flight,
            endpoint_ejected,
            reloads,
            config_version,
            load_age,
            control_connected,
            control_messages,
            control_reconnects,
            listener_open,
            listener_limited,
            listener_header_timeouts,
            coalesce,
            model,
            mesh,
            identity,
            priority,
        }
    }

    /// Counts a discovery message.
    pub fn control_message(&self, kind: &'static str) {
        self.control_messages.get_or_create(&TypeLabels { r#type: kind }).inc();
    }

    /// Counts a config update from `source` (`file` or `control`).
    pub fn config_reload_from(&self, source: &'static str, ok: bool, version: u64) {
        self.reloads.get_or_create(&ResultLabels { source, result: if ok { "ok" } else { "error" } }).inc();
        self.config_version.set(version as i64);
    }

    /// Renders the OpenMetrics text, with the per-endpoint gauges set from `endpoints` first.
    pub fn render<'a>(&self, endpoints: impl IntoIterator<Item = EndpointRow<'a>>) -> String {
        self.endpoint_rtt.clear();
        self.endpoint_token.clear();
        self.endpoint_trust.clear();
        self.endpoint_in_flight.clear();
        self.endpoint_ejected.clear();
        for row in endpoints {
            let l = EndpointLabels { backend: Name(Arc::clone(row.backend)), endpoint: row.addr.to_string() };
            self.endpoint_rtt.get_or_create(&l).set(row.rtt_seconds);
            if let Some(t) = row.token_seconds {
                self.endpoint_token.get_or_create(&l).set(t);
            }
            if let Some(t) = row.report_trust {
                self.endpoint_trust.get_or_create(&l).set(t);
            }
            self.endpoint_in_flight.get_or_create(&l).set(i64::from(row.in_flight));
            self.endpoint_ejected.get_or_create(&l).set(i64::from(row.ejected));
        }
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }

    /// The handles of one listener (`outbound`, `inbound`, `admin`).
    pub fn listener(&self, listener: &'static str) -> ListenerStats {
        let l = ListenerLabels { listener };
        ListenerStats {
            open: self.listener_open.get_or_create(&l).clone(),
            limited: self.listener_limited.get_or_create(&l).clone(),
            header_timeouts: self.listener_header_timeouts.get_or_create(&l).clone(),
            tls_connections: self.mesh.tls_connections.clone(),
            tls_failures: self.mesh.tls_failures.clone(),
        }
    }

    /// Resolves the handles for one route and backend.
    pub fn route_stats(
        &self,
        direction: Direction,
        service: &Arc<str>,
        route: &Arc<str>,
        backend: &Arc<str>,
    ) -> Arc<RouteStats> {
        let labels = RouteLabels {
            direction,
            service: Name(Arc::clone(service)),
            route: Name(Arc::clone(route)),
            backend: Name(Arc::clone(backend)),
        };
        let latency = self.latency.get_or_create(&labels).clone();
        let ok = self.requests.get_or_create(&RequestLabels::new(&labels, 200, "")).clone();
        let budget_exhausted = self.budget_exhausted.get_or_create(&labels).clone();
        let (hedges, hedges_won) =
            (self.hedges.get_or_create(&labels).clone(), self.hedges_won.get_or_create(&labels).clone());
        Arc::new(RouteStats {
            labels,
            latency,
            ok,
            retries: self.retries.clone(),
            budget_exhausted,
            hedges,
            hedges_won,
        })
    }

    /// The in-flight gauge of one listener's direction.
    pub(super) fn in_flight(&self, direction: Direction) -> Gauge {
        self.in_flight.get_or_create(&DirectionLabels { direction }).clone()
    }

    /// Records one answered request.
    pub(super) fn record(
        &self,
        direction: Direction,
        tag: Option<&Tag>,
        error: &'static str,
        status: u16,
        elapsed: f64,
    ) {
        match tag {
            Some(Tag::Route(st)) => {
                st.latency.observe(elapsed);
                if status == 200 && error.is_empty() {
                    st.ok.inc();
                } else {
                    self.requests.get_or_create(&RequestLabels::new(&st.labels, status, error)).inc();
                }
            }
            other => {
                let dash = Name("-".into());
                let service = match other {
                    Some(Tag::Service(s)) => s.clone(),
                    _ => dash.clone(),
                };
                let labels = RouteLabels { direction, service, route: dash.clone(), backend: dash };
                self.latency.get_or_create(&labels).observe(elapsed);
                self.requests.get_or_create(&RequestLabels::new(&labels, status, error)).inc();
            }
        }
    }
}
