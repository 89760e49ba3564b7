//! Prometheus metrics (OpenMetrics text on the admin `/metrics`).
//!
//! | name | type | labels |
//! |---|---|---|
//! | `vane_control_watch_events_total` | counter | `kind` (Service, EndpointSlice, HTTPRoute), `type` (init, init_apply, init_done, apply, delete, error) |
//! | `vane_control_subscribers` | gauge | |
//! | `vane_control_pushes_total` | counter | `type` (snapshot, update, remove, ping) |
//! | `vane_control_push_latency_seconds` | histogram | from the watch event's receipt to the message handed to the connection |
//! | `vane_control_invalid_routes` | gauge | Services whose HTTPRoutes are refused now |
//! | `vane_control_route_rejections_total` | counter | each time a Service's HTTPRoutes became refused (or the reason changed) |
//! | `vane_control_services` | gauge | Services with a table |
//! | `vane_control_endpoints` | gauge | usable endpoint addresses |
//! | `vane_control_table_version` | gauge | version of the published tables |
//! | `vane_control_certificates_issued_total` | counter | workload certificates signed |
//! | `vane_control_certificate_refusals_total` | counter | `reason` (see `identity::review::Refusal::reason`) |
//! | `vane_control_issuer_reloads_total` | counter | `outcome` (rotated, refused): changed issuer files put into use or refused |
//! | `vane_control_issuer_expiry_timestamp_seconds` | gauge | when the issuer certificate in use expires (Unix time) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `vane_control_watch_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// Object kind.
    pub kind: &'static str,
    /// Event type.
    pub r#type: &'static str,
}

/// Labels of `vane_control_pushes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// Message type.
    pub r#type: &'static str,
}

/// Labels of `vane_control_certificate_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why no certificate was issued.
    pub reason: &'static str,
}

/// Every metric of the control service. Cloning shares the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Watch events by kind and type.
    pub watch_events: Family<WatchLabels, Counter>,
    /// Open discovery streams.
    pub subscribers: Gauge,
    /// Messages sent to subscribers.
    pub pushes: Family<PushLabels, Counter>,
    /// Watch event receipt → message handed to the connection.
    pub push_latency: Histogram,
    /// Services whose HTTPRoutes are refused.
    pub invalid_routes: Gauge,
    /// HTTPRoute refusals.
    pub route_rejections: Counter,
    /// Services with a table.
    pub services: Gauge,
    /// Usable endpoint addresses.
    pub endpoints: Gauge,
    /// Published table version.
    pub table_version: Gauge,
    /// Workload certificates signed.
    pub certificates_issued: Counter,
    /// Certificate requests refused, by reason.
    pub certificate_refusals: Family<RefusalLabels, Counter>,
    /// Changed issuer files, by outcome.
    pub issuer_reloads: Family<OutcomeLabels, Counter>,
    /// When the issuer in use expires, Unix seconds.
    pub issuer_expiry: Gauge,
}

/// Labels of `vane_control_issuer_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `rotated` or `refused`.
    pub outcome: &'static str,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            watch_events: Family::default(),
            subscribers: Gauge::default(),
            pushes: Family::default(),
            // 100 µs .. ~6.5 s.
            push_latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 17)),
            invalid_routes: Gauge::default(),
            route_rejections: Counter::default(),
            services: Gauge::default(),
            endpoints: Gauge::default(),
            table_version: Gauge::default(),
            certificates_issued: Counter::default(),
            certificate_refusals: Family::default(),
            issuer_reloads: Family::default(),
            issuer_expiry: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("vane_control");
        r.register("watch_events", "Kubernetes watch events received", m.watch_events.clone());
        r.register("subscribers", "Open discovery streams", m.subscribers.clone());
        r.register("pushes", "Discovery messages sent", m.pushes.clone());
        r.register_with_unit(
            "push_latency",
            "From a watch event's receipt to the discovery message that carries it being handed to the connection",
            prometheus_client::registry::Unit::Seconds,
            m.push_latency.clone(),
        );
        r.register(
            "invalid_routes",
            "Services whose HTTPRoutes are refused (they use their default route)",
            m.invalid_routes.clone(),
        );
        r.register("route_rejections", "Times a Service's HTTPRoutes were refused", m.route_rejections.clone());
        r.register("services", "Services with a routing table", m.services.clone());
        r.register("endpoints", "Usable endpoint addresses", m.endpoints.clone());
        r.register("table_version", "Version of the published tables", m.table_version.clone());
        r.register("certificates_issued", "Workload certificates signed", m.certificates_issued.clone());
        r.register("certificate_refusals", "Certificate requests refused, by reason", m.certificate_refusals.clone());
        r.register(
            "issuer_reloads",
            "Changed issuer files put into use (rotated) or refused",
            m.issuer_reloads.clone(),
        );
        r.register_with_unit(
            "issuer_expiry_timestamp",
            "When the issuer certificate in use expires (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            m.issuer_expiry.clone(),
        );
        m
    }

    /// Counts a watch event.
    pub fn watch_event(&self, kind: &'static str, type_: &'static str) {
        self.watch_events.get_or_create(&WatchLabels { kind, r#type: type_ }).inc();
    }

    /// Counts a refused certificate request.
    pub fn certificate_refused(&self, reason: &'static str) {
        self.certificate_refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts changed issuer files by what became of them.
    pub fn issuer_reload(&self, outcome: &'static str) {
        self.issuer_reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records when `authority`'s issuer certificate expires.
    pub fn set_issuer_expiry(&self, authority: &vane_identity::ca::Authority) {
        let at = authority.issuer_not_after().and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok());
        self.issuer_expiry.set(at.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }

    /// Counts a push.
    pub fn push(&self, type_: &'static str) {
        self.pushes.get_or_create(&PushLabels { r#type: type_ }).inc();
    }
}
