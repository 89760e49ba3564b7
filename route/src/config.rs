//! The configuration as users write it (YAML or JSON). See `examples/vane.yaml` for a complete file.
//!
//! Two kinds of objects, in the spirit of Envoy's virtual hosts and clusters or Gateway API's
//! HTTPRoute and Service:
//! - a **service** is what an application calls: it is found by the request's authority (its
//!   `name` or one of its `hosts`), and has ordered **routes** that match requests;
//! - a **backend** is a set of endpoints (one model version, say). A route sends to one or more
//!   backends by weight.
//!
//! These types only describe; [`crate::Table::from_config`] validates them.

use crate::duration::HumanDuration;
use serde::{Deserialize, Serialize};

/// A whole proxy configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener addresses, threads, timeouts and limits.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Where the inbound listener forwards (the local model server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// Services the application calls, found by authority.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Endpoint sets that routes send to.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

impl Config {
    /// Parses YAML (JSON is YAML too). Errors carry the line and column.
    pub fn from_yaml(text: &str) -> Result<Config, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

/// The `proxy:` section. The listener addresses, threads and drain grace are the proxy process's
/// own (it reads and checks them; flags and environment win over them); the routing table
/// compiles the rest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Outbound listener (the app calls it), default `127.0.0.1:4140`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<String>,
    /// Inbound listener (peers call it), default `0.0.0.0:4143`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<String>,
    /// Admin listener (`/live`, `/ready`, `/metrics`, `/config`), default `127.0.0.1:4191`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Runtime worker threads, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Endpoint cost weights and EWMA decay.
    #[serde(default)]
    pub balancer: BalancerConfig,
    /// Outlier ejection.
    #[serde(default)]
    pub ejection: EjectionConfig,
    /// Retries of every route that sets none of its own.
    #[serde(default)]
    pub retries: RetryConfig,
    /// How many retries each backend allows, against its requests.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// Load shedding of every backend that sets none of its own (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed: Option<ShedConfig>,
    /// How long in-flight requests may take to finish after SIGTERM, default 10s.
    #[serde(default = "defaults::drain_grace")]
    pub drain_grace: HumanDuration,
    /// Metrics of model traffic (callers, label caps, prices) and the access log.
    #[serde(default)]
    pub observe: ObserveConfig,
    /// Traces exported over OTLP (off unless set). Read at start, like the listener addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// This proxy's workload identity, for mTLS (off unless set). Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// Who may call the workload behind the inbound listener.
    #[serde(default)]
    pub authz: crate::authz::AuthzConfig,
}

/// `proxy.identity`: where this proxy's certificate comes from. Either files (`cert` and `key`,
/// read again when they change) or the control service's identity service (`control`), which
/// signs a key this proxy makes in memory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The trust domain of SPIFFE IDs, default `cluster.local`.
    #[serde(default = "defaults::trust_domain")]
    pub trust_domain: String,
    /// PEM file of the trust anchors.
    pub roots: String,
    /// PEM file of this proxy's certificate chain, leaf first (standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM file of its private key (standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The identity service to ask for a certificate (in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<IdentityServiceConfig>,
    /// How often the files are read again, default 10s.
    #[serde(default = "defaults::identity_reload")]
    pub reload: HumanDuration,
}

/// `proxy.identity.control`: the identity service and what to prove to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityServiceConfig {
    /// `host:port` of the identity service.
    pub addr: String,
    /// The identity it must present, default `spiffe://<trust_domain>/ns/vane-system/sa/vane-control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// The SPIFFE ID this proxy asks for (its pod's ServiceAccount).
    pub identity: String,
    /// The projected ServiceAccount token file that proves it.
    pub token: String,
}

/// `proxy.observe`: how model traffic is labelled and priced, and the access log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// The request header that names the caller (e.g. `x-caller`); without it every caller is `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_header: Option<String>,
    /// Most distinct callers kept as label values; the rest are counted as `other`. Default 100.
    #[serde(default = "defaults::max_label_values")]
    pub max_callers: usize,
    /// Most distinct models kept as label values; the rest are counted as `other`. Default 100.
    #[serde(default = "defaults::max_label_values")]
    pub max_models: usize,
    /// Price of one GPU-hour per backend name, for `vane_model_cost_total`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gpu_hour_price: std::collections::BTreeMap<String, f64>,
    /// JSON lines, one per request (off unless set). Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            caller_header: None,
            max_callers: defaults::max_label_values(),
            max_models: defaults::max_label_values(),
            gpu_hour_price: Default::default(),
            access_log: None,
        }
    }
}

/// `proxy.observe.access_log`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `stderr` or a file path (appended to). Default `stderr`.
    #[serde(default = "defaults::access_log_to")]
    pub to: String,
    /// Share of requests logged, from 0 to 1. Default 1.
    #[serde(default = "defaults::one")]
    pub sample: f64,
}

/// `proxy.tracing`: spans exported over OTLP/gRPC in batches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp: String,
    /// Share of new traces sampled, from 0 to 1 (a caller's sampled flag is followed). Default 0.01.
    #[serde(default = "defaults::trace_sample")]
    pub sample: f64,
    /// The `service.name` of the spans. Default `vane-proxy`.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Most finished spans waiting for export; past it spans are dropped and counted. Default 2048.
    #[serde(default = "defaults::trace_queue")]
    pub max_queue: usize,
    /// Most spans per export call. Default 512.
    #[serde(default = "defaults::trace_batch")]
    pub max_batch: usize,
    /// How long a span may wait for a batch to fill, default 1s.
    #[serde(default = "defaults::trace_flush")]
    pub flush: HumanDuration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            outbound: None,
            inbound: None,
            admin: None,
            threads: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            balancer: BalancerConfig::default(),
            ejection: EjectionConfig::default(),
            retries: RetryConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            shed: None,
            drain_grace: defaults::drain_grace(),
            observe: ObserveConfig::default(),
            tracing: None,
            identity: None,
            authz: crate::authz::AuthzConfig::default(),
        }
    }
}

/// Retries (`proxy.retries`, or a route's own `retries`): which answers go to another endpoint,
/// and how many attempts a request may take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included (1: no retries), default 3, at most 10.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Answer statuses retried on another endpoint (decided at the response head, before any of
    /// its body is passed on), default `[429, 503]`.
    #[serde(default = "defaults::retry_statuses")]
    pub statuses: Vec<u16>,
    /// Retry gRPC answers with status `UNAVAILABLE` (14) in their headers, default true.
    #[serde(default = "defaults::yes")]
    pub grpc_unavailable: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: defaults::max_attempts(),
            statuses: defaults::retry_statuses(),
            grpc_unavailable: true,
        }
    }
}

/// Hedging (a route's `hedge`): when no first byte of the answer has come within the delay, a
/// copy of the request goes to another endpoint, the answer that starts first is kept and the
/// other cancelled. Only for requests safe to send twice; hedges draw from the retry budget.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// A fixed delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// The delay as this percentile (0 < p < 100) of the backend's recent times to first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// The least delay, whatever the percentile says, default 10ms.
    #[serde(default = "defaults::hedge_min_delay")]
    pub min_delay: HumanDuration,
}

/// A retry budget per backend (`proxy.retry_budget`), as Linkerd's: retries may add at most
/// `ratio` of the backend's requests over the last `window`, plus `min_per_second`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request, default 0.2 (20 %), at most 10.
    #[serde(default = "defaults::retry_ratio")]
    pub ratio: f64,
    /// Retries allowed per second whatever the request rate, default 10.
    #[serde(default = "defaults::retry_min_per_second")]
    pub min_per_second: u32,
    /// How long a request counts towards the budget, default 10s (1s to 60s).
    #[serde(default = "defaults::retry_window")]
    pub window: HumanDuration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: defaults::retry_ratio(),
            min_per_second: defaults::retry_min_per_second(),
            window: defaults::retry_window(),
        }
    }
}

/// Timeouts. Each failure has its own status: connect and upstream errors give 502, timeouts 504.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect to an endpoint, default 1s.
    #[serde(default = "defaults::connect")]
    pub connect: HumanDuration,
    /// From sending the request to the response headers, default 30s (routes may override).
    #[serde(default = "defaults::response_header")]
    pub response_header: HumanDuration,
    /// Idle keep-alive connections (downstream and pooled upstream) are closed after this, default 60s.
    #[serde(default = "defaults::idle")]
    pub idle: HumanDuration,
    /// Time a client has to send a complete request head (request line and headers) on a
    /// listener, default 10s.
    #[serde(default = "defaults::header_read")]
    pub header_read: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: defaults::connect(),
            response_header: defaults::response_header(),
            idle: defaults::idle(),
            header_read: defaults::header_read(),
        }
    }
}

/// Size limits on what clients send.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes; larger gets 431. Default 16384.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger gets 413. Default 32 MiB.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// At most this many body bytes are read to find the `model` field, then replayed. Default 65536.
    #[serde(default = "defaults::max_sniff_bytes")]
    pub max_sniff_bytes: usize,
    /// Most client connections open at once on each listener. Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: defaults::max_header_bytes(),
            max_body_bytes: defaults::max_body_bytes(),
            max_sniff_bytes: defaults::max_sniff_bytes(),
            max_connections: defaults::max_connections(),
        }
    }
}

/// How a backend picks among its endpoints.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Power of two choices over the full cost: for streamed answers the token-aware finish
    /// estimate (time to first token plus tokens × time per token, measured while answers
    /// stream), otherwise latency; with in-flight work, reported queue and KV use, and the
    /// 429/503 penalty.
    #[default]
    P2c,
    /// `p2c` without the token-aware estimate: latency is the time to first byte plus the
    /// average body time, known only once answers end (the cost before token awareness, kept for
    /// comparison).
    P2cClassic,
    /// Power of two choices over peak-EWMA latency × (in-flight + 1) only (ignores reported load).
    P2cLatency,
    /// The endpoint with the fewest requests in flight from this proxy (ties at random).
    LeastRequest,
    /// In turn, like a Kubernetes Service.
    RoundRobin,
}

/// The balancer's cost:
/// `latency × (in_flight_weight × in_flight + 1 + queue_weight × queue_depth + kv_weight × kv_use)`,
/// with endpoints that just answered 429/503 put behind all others.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// Endpoint choice, default `p2c`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Peak-EWMA decay time constant, default 10s (as in Finagle and Linkerd).
    #[serde(default = "defaults::ewma_decay")]
    pub ewma_decay: HumanDuration,
    /// Time to first byte assumed for an endpoint with no sample of its own while its backend
    /// has measured none either (otherwise it takes the backend's typical figures), default 1ms.
    #[serde(default = "defaults::default_rtt")]
    pub default_rtt: HumanDuration,
    /// Weight of each request this proxy has in flight to the endpoint, default 1.0.
    #[serde(default = "defaults::one")]
    pub in_flight_weight: f64,
    /// Weight of the endpoint's reported queue depth, default 1.0.
    #[serde(default = "defaults::one")]
    pub queue_weight: f64,
    /// Weight of the endpoint's reported KV-cache use (0..1), default 4.0.
    #[serde(default = "defaults::kv_weight")]
    pub kv_weight: f64,
    /// Reported load older than this is ignored, default 1s.
    #[serde(default = "defaults::load_staleness")]
    pub load_staleness: HumanDuration,
    /// After a 429 or 503 the endpoint loses every comparison with an unpenalized one for the
    /// time its `Retry-After` asks (at most 30s), or for this long without one. Default 1s.
    #[serde(default = "defaults::penalty_time")]
    pub penalty_time: HumanDuration,
    /// Ask endpoints for an ORCA load report on every answer (`endpoint-load-metrics-format:
    /// TEXT` on each request, which vLLM needs before it sends one), default true.
    #[serde(default = "defaults::yes")]
    pub ask_load_reports: bool,
    /// An endpoint that joins (added after the proxy's first config) or comes back from
    /// ejection takes a share growing from 10 % to a full one over this window, default 10s;
    /// `0s` turns it off.
    #[serde(default = "defaults::slow_start")]
    pub slow_start: HumanDuration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            algorithm: Algorithm::default(),
            ewma_decay: defaults::ewma_decay(),
            default_rtt: defaults::default_rtt(),
            in_flight_weight: 1.0,
            queue_weight: 1.0,
            kv_weight: defaults::kv_weight(),
            load_staleness: defaults::load_staleness(),
            penalty_time: defaults::penalty_time(),
            ask_load_reports: true,
            slow_start: defaults::slow_start(),
        }
    }
}

/// Per-backend balancer overrides (a backend is one endpoint set, e.g. one model version).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendBalancer {
    /// Endpoint choice for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// Weight of requests in flight from this proxy for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_weight: Option<f64>,
    /// Weight of reported queue depth for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_weight: Option<f64>,
    /// Weight of reported KV-cache use for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_weight: Option<f64>,
    /// Subscribe to each endpoint's load stream (the endpoints are Vane inbound proxies): load
    /// figures then arrive every `inbound.load_interval` instead of only with responses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_stream: bool,
    /// Ask this backend's endpoints for ORCA load reports (the proxy-wide `ask_load_reports` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_load_reports: Option<bool>,
    /// Slow-start window for this backend's endpoints (the proxy-wide `slow_start` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<HumanDuration>,
    /// Load shedding for this backend (the proxy-wide `shed` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed: Option<ShedConfig>,
}

/// Load shedding (`proxy.shed`, or a backend's `balancer.shed`): when every endpoint of a backend
/// is saturated, requests are answered `429` at once with `Retry-After` instead of queueing
/// without bound; `sheddable` requests go first, `critical` ones are never shed. Off unless set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShedConfig {
    /// An endpoint whose reported waiting queue is at least this is saturated (for `standard`
    /// requests; `sheddable` ones are shed at half of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<f64>,
    /// The backend is saturated when this proxy has this many requests in flight to it (for
    /// `standard` requests; `sheddable` ones are shed at 80 % of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// The `Retry-After` a shed request is answered with, default 1s.
    #[serde(default = "defaults::shed_retry_after")]
    pub retry_after: HumanDuration,
}

/// Outlier ejection: an endpoint that refuses connections, or fails `consecutive_failures` times in a
/// row, is taken out for `base_ejection`, doubled each time it is ejected again, up to `max_ejection`.
/// When that time is over it is probed back with real traffic; a success puts it back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EjectionConfig {
    /// Failures in a row (5xx answers, resets, timeouts) that eject, default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time, default 1s.
    #[serde(default = "defaults::base_ejection")]
    pub base_ejection: HumanDuration,
    /// Longest ejection time, default 30s.
    #[serde(default = "defaults::max_ejection")]
    pub max_ejection: HumanDuration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: defaults::consecutive_failures(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
        }
    }
}

/// The inbound side: everything that arrives on the inbound listener goes to `forward_to`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// The local model server, e.g. `127.0.0.1:8000`.
    pub forward_to: String,
    /// Protocol the model server speaks.
    #[serde(default)]
    pub protocol: Protocol,
    /// The local load probe's `/load` URL (e.g. `http://127.0.0.1:4192/load`); when set, every
    /// inbound response carries the pod's load in an ORCA `endpoint-load-metrics` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_from: Option<String>,
    /// How often the probe is polled when it does not stream (`vane-gpu-probe` answers
    /// `/load?watch=1` with a line per scrape, which is followed instead), default 10ms.
    #[serde(default = "defaults::load_interval")]
    pub load_interval: HumanDuration,
}

/// Upstream protocol.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive; one request at a time per connection, pooled.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c); required for gRPC. Multiplexed.
    Http2,
}

/// A service the application calls.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The name; requests whose authority (without port) is this name are routed here.
    pub name: String,
    /// Other authorities for this service (e.g. `llm.models.svc.cluster.local`). An `ip:port`
    /// entry (the Service's ClusterIP and port, `10.96.0.10:80`) is an address instead: a
    /// connection the capture rules redirect from it is routed to this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Routes, tried in order; the first that matches wins.
    pub routes: Vec<RouteConfig>,
}

/// One route: a match and where it sends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and errors.
    pub name: String,
    /// What the request must look like; empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// Backends with weights.
    pub backends: Vec<WeightedBackend>,
    /// Keep requests with the same value of this header on the same backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
    /// Response-header timeout for this route (overrides `proxy.timeouts.response_header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Retries for this route (replaces `proxy.retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryConfig>,
    /// Hedging: a copy to another endpoint when no first byte came within a delay (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeConfig>,
    /// Identical requests in flight share one upstream answer (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<CoalesceConfig>,
}

/// All given conditions must hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Model name: the `model` field of a JSON body, or `{name}` of a KServe v2 path `/v2/models/{name}/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Path condition: exactly one of `exact` and `prefix`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// The path must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The path must start with this, at a segment boundary (`/v1` matches `/v1` and `/v1/x`, not `/v10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Header condition: the header must be present, and equal `value` when given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value; absent means "present with any value".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A backend and its share of the route's traffic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    /// Name of a backend in `backends`.
    pub backend: String,
    /// Relative weight, default 1. Zero keeps the backend configured but sends it nothing.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// Sticky routing by a header's value.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Header whose value picks the backend (requests without it are split by weight at random).
    pub header: String,
}

/// Coalescing: while a request is on its way upstream, identical ones wait for its answer
/// instead of being sent too (see the proxy's `coalesce` module for what "identical" means).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoalesceConfig {
    /// Which requests may share, default `deterministic`.
    #[serde(default)]
    pub when: CoalesceWhen,
    /// Most response bytes held for followers that join late, per answer; a follower may join
    /// only while the answer so far fits, default 4 MiB (4194304).
    #[serde(default = "defaults::coalesce_buffer")]
    pub max_buffer_bytes: u64,
    /// Most followers sharing one upstream answer; past it the next identical request leads a
    /// group of its own, default 64.
    #[serde(default = "defaults::coalesce_followers")]
    pub max_followers: usize,
    /// Let requests with different `Authorization` share an answer, default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub across_callers: bool,
    /// More request headers whose values must be equal for two requests to share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary: Vec<String>,
}

/// Which requests of a coalescing route may share an answer.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CoalesceWhen {
    /// Only requests whose answer does not depend on sampling: OpenAI completions and chat with
    /// `temperature: 0` or a `seed` (and no `n` above 1), embeddings, classification, scoring
    /// and reranking, KServe v2 `infer`.
    #[default]
    Deterministic,
    /// Every GET and POST whose body is known in full (for users who know their traffic).
    Always,
}

/// A set of endpoints, e.g. one model version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Name routes refer to.
    pub name: String,
    /// Protocol the endpoints speak.
    #[serde(default)]
    pub protocol: Protocol,
    /// `ip:port` of each endpoint.
    pub endpoints: Vec<String>,
    /// Balancer overrides for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BackendBalancer>,
    /// The SPIFFE ID every endpoint must present: set, the endpoints are meshed and are called
    /// over mTLS; unset (and not in `identities`), in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The SPIFFE ID of single endpoints (`ip:port` → ID), over `identity`; during a rollout only
    /// some endpoints are meshed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub identities: std::collections::BTreeMap<String, String>,
}

pub(crate) mod defaults {
    use crate::duration::HumanDuration;
    use std::time::Duration;

    pub(crate) fn max_label_values() -> usize {
        100
    }

    pub(crate) fn access_log_to() -> String {
        "stderr".into()
    }

    pub(crate) fn trace_sample() -> f64 {
        0.01
    }

    pub(crate) fn service_name() -> String {
        "vane-proxy".into()
    }

    pub(crate) fn trace_queue() -> usize {
        2048
    }

    pub(crate) fn trace_batch() -> usize {
        512
    }

    pub(crate) fn trace_flush() -> HumanDuration {
        Duration::from_secs(1).into()
    }

    pub(crate) fn trust_domain() -> String {
        "cluster.local".into()
    }

    pub(crate) fn identity_reload() -> HumanDuration {
        Duration::from_secs(10).into()
    }

    pub(crate) fn drain_grace() -> HumanDuration {
        Duration::from_secs(10).into()
    }
    pub(crate) fn connect() -> HumanDuration {
        Duration::from_secs(1).into()
    }
    pub(crate) fn response_header() -> HumanDuration {
        Duration::from_secs(30).into()
    }
    pub(crate) fn idle() -> HumanDuration {
        Duration::from_secs(60).into()
    }
    pub(crate) fn header_read() -> HumanDuration {
        Duration::from_secs(10).into()
    }
    pub(crate) fn max_header_bytes() -> usize {
        16 * 1024
    }
    pub(crate) fn max_body_bytes() -> u64 {
        32 * 1024 * 1024
    }
    pub(crate) fn max_sniff_bytes() -> usize {
        64 * 1024
    }
    pub(crate) fn max_connections() -> usize {
        10_000
    }
    pub(crate) fn ewma_decay() -> HumanDuration {
        Duration::from_secs(10).into()
    }
    pub(crate) fn default_rtt() -> HumanDuration {
        Duration::from_millis(1).into()
    }
    pub(crate) fn one() -> f64 {
        1.0
    }
    pub(crate) fn kv_weight() -> f64 {
        4.0
    }
    pub(crate) fn load_staleness() -> HumanDuration {
        Duration::from_secs(1).into()
    }
    pub(crate) fn slow_start() -> HumanDuration {
        Duration::from_secs(10).into()
    }
    pub(crate) fn max_attempts() -> u32 {
        3
    }

    pub(crate) fn retry_statuses() -> Vec<u16> {
        vec![429, 503]
    }

    pub(crate) fn retry_ratio() -> f64 {
        0.2
    }

    pub(crate) fn retry_min_per_second() -> u32 {
        10
    }

    pub(crate) fn retry_window() -> HumanDuration {
        Duration::from_secs(10).into()
    }

    pub(crate) fn hedge_min_delay() -> HumanDuration {
        Duration::from_millis(10).into()
    }

    pub(crate) fn shed_retry_after() -> HumanDuration {
        Duration::from_secs(1).into()
    }

    pub(crate) fn yes() -> bool {
        true
    }
    pub(crate) fn penalty_time() -> HumanDuration {
        Duration::from_secs(1).into()
    }
    pub(crate) fn load_interval() -> HumanDuration {
        Duration::from_millis(10).into()
    }
    pub(crate) fn consecutive_failures() -> u32 {
        5
    }
    pub(crate) fn base_ejection() -> HumanDuration {
        Duration::from_secs(1).into()
    }
    pub(crate) fn max_ejection() -> HumanDuration {
        Duration::from_secs(30).into()
    }
    pub(crate) fn weight() -> u32 {
        1
    }
    pub(crate) fn coalesce_buffer() -> u64 {
        4 * 1024 * 1024
    }
    pub(crate) fn coalesce_followers() -> usize {
        64
    }
}
