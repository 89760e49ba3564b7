//! Validation: a [`Config`] becomes a [`Table`] only if every field is valid.
//!
//! All problems are collected and reported together, each naming the field it is about
//! (`services[0].routes[1].backends[0].backend: no backend named "llama-v3"`), so that one
//! `check-config` run shows everything to fix.

use crate::config::{Config, Protocol};
use crate::matching::{Matcher, PathMatcher};
use crate::split::Split;
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One problem in a config, with the path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `services[0].routes[1].match.path`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a config was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid YAML/JSON for the config's shape (unknown field, wrong type, ...).
    #[error("cannot parse config: {0}")]
    Parse(String),
    /// The config parsed, but some fields are invalid.
    #[error("invalid config ({} problem{}):\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<FieldError>),
}

/// The routing settings of the `proxy:` section after validation (timeouts, limits, balancer,
/// ejection). Process settings (listener addresses, threads, drain) are not here: they concern the
/// proxy process alone, which reads them itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Default response-header timeout.
    pub response_timeout: Duration,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Body prefix read for the model name.
    pub max_sniff_bytes: usize,
    /// Open client connections per listener.
    pub max_connections: usize,
    /// Peak-EWMA decay.
    pub ewma_decay: Duration,
    /// RTT assumed before the first sample.
    pub default_rtt: Duration,
    /// Cost weights.
    pub cost: crate::balance::CostWeights,
    /// Default endpoint choice.
    pub algorithm: crate::config::Algorithm,
    /// Reported load older than this is ignored.
    pub load_staleness: Duration,
    /// Penalty duration without `Retry-After`.
    pub penalty_time: Duration,
    /// Ask endpoints for ORCA load reports by default.
    pub ask_load_reports: bool,
    /// Slow-start window by default.
    pub slow_start: Duration,
    /// Ejection policy.
    pub ejection: crate::health::EjectionPolicy,
    /// Retries of routes that set none of their own.
    pub retries: Retries,
    /// Every backend's retry budget.
    pub retry_budget: RetryBudget,
    /// Load shedding of backends that set none of their own.
    pub shed: Option<Shed>,
}

/// A compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Route name.
    pub name: Arc<str>,
    /// The request conditions.
    pub matcher: Matcher,
    /// Weighted backends (indexes into [`Table::backends`]).
    pub split: Split,
    /// Sticky header, if any.
    pub sticky: Option<HeaderName>,
    /// Response-header timeout override.
    pub timeout: Option<Duration>,
    /// Coalescing of identical requests in flight, when the route asks for it.
    pub coalesce: Option<Arc<Coalesce>>,
    /// Its retries (its own, or the proxy-wide ones).
    pub retries: Retries,
    /// Its hedging, if any.
    pub hedge: Option<Hedge>,
}

/// A route's retries, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Retries {
    /// Attempts per request, the first included (1 to [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Answer statuses retried on another endpoint.
    pub statuses: Arc<[http::StatusCode]>,
    /// gRPC `UNAVAILABLE` answers are retried.
    pub grpc_unavailable: bool,
}

/// A route's hedging, checked: the delay after which a copy goes to another endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hedge {
    /// A fixed delay.
    Fixed(Duration),
    /// This percentile (0..100) of the backend's recent times to first byte, at least the duration.
    Percentile(f64, Duration),
}

/// The most attempts a route may allow.
pub const MAX_ATTEMPTS: u32 = 10;

/// A backend's retry budget, checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Retries allowed per request (0 to 10).
    pub ratio: f64,
    /// Retries allowed per second whatever the request rate.
    pub min_per_second: u32,
    /// How long a request counts (1 s to 60 s).
    pub window: Duration,
}

/// A compiled service.
#[derive(Clone, Debug)]
pub struct Service {
    /// Service name.
    pub name: Arc<str>,
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Whether some route matches on the model name (so the body must be read for it).
    pub needs_model: bool,
}

/// A compiled backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// Backend name.
    pub name: Arc<str>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Endpoint addresses.
    pub endpoints: Vec<SocketAddr>,
    /// The SPIFFE ID each endpoint must present (same order as `endpoints`); `None`: plaintext.
    pub identities: Vec<Option<Arc<str>>>,
    /// Endpoint choice (the backend's override or the default).
    pub algorithm: crate::config::Algorithm,
    /// Cost weights (the backend's overrides or the defaults).
    pub cost: crate::balance::CostWeights,
    /// Follow each endpoint's load stream.
    pub load_stream: bool,
    /// Ask each endpoint for an ORCA load report with every request.
    pub ask_load_reports: bool,
    /// Slow-start window of its endpoints (zero: none).
    pub slow_start: Duration,
    /// Its load shedding, if any.
    pub shed: Option<Shed>,
}

/// A backend's load shedding, checked (see [`crate::config::ShedConfig`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shed {
    /// The reported queue at which an endpoint is saturated for `standard` requests.
    pub queue_depth: Option<f64>,
    /// This proxy's requests in flight at which the backend is saturated for `standard` requests.
    pub max_in_flight: Option<u32>,
    /// The `Retry-After` of a shed request.
    pub retry_after: Duration,
}

/// The inbound target.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    /// Local model server address.
    pub forward_to: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// The load probe's `/load` address and path, when set.
    pub load_from: Option<(SocketAddr, String)>,
    /// How often the probe is read.
    pub load_interval: Duration,
}

/// A validated routing table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Settings.
    pub settings: Settings,
    /// Services.
    pub services: Vec<Service>,
    /// Backends (routes refer to them by index).
    pub backends: Vec<Backend>,
    /// Inbound target, if configured.
    pub inbound: Option<Inbound>,
    /// How model traffic is observed (metrics labels, prices, access log, traces).
    pub observe: Observe,
    /// Who may call the workload behind the inbound listener.
    pub authz: Arc<crate::authz::AuthzConfig>,
    /// The trust domain of this proxy's identity (`cluster.local` without one).
    pub trust_domain: Arc<str>,
    /// The config this table was built from (served by the admin `/config`).
    pub source: Config,
    hosts: HashMap<String, usize>,
    /// Transparent capture: original destination → service (its `ip:port` hosts, then the
    /// endpoints of the backends its routes send to).
    addrs: HashMap<SocketAddr, usize>,
}

impl Table {
    /// Parses and validates YAML (or JSON) text.
    pub fn from_yaml(text: &str) -> Result<Table, ConfigError> {
        let config = Config::from_yaml(text).map_err(ConfigError::Parse)?;
        Table::from_config(config)
    }

    /// Validates a parsed config.
    pub fn from_config(config: Config) -> Result<Table, ConfigError> {
        let mut v = Validator::default();
        let settings = v.settings(&config);
        let observe = v.observe(&config);
        v.identity(&config);
        let mut backends = Vec::new();
        let mut backend_index: HashMap<&str, usize> = HashMap::new();
        for (i, b) in config.backends.iter().enumerate() {
            let field = format!("backends[{i}]");
            if b.name.is_empty() {
                v.err(format!("{field}.name"), "must not be empty");
            } else if backend_index.insert(&b.name, backends.len()).is_some() {
                v.err(format!("{field}.name"), format!("duplicate backend name {:?}", b.name));
            }
            let mut endpoints: Vec<SocketAddr> = Vec::new();
            for (j, e) in b.endpoints.iter().enumerate() {
                match v.addr(format!("{field}.endpoints[{j}]"), e) {
                    Some(a) if endpoints.contains(&a) => {
                        v.err(format!("{field}.endpoints[{j}]"), format!("duplicate endpoint {a}"))
                    }
                    Some(a) => endpoints.push(a),
                    None => {}
                }
            }
            let identities = v.identities(&field, b, &endpoints);
            let over = b.balancer.clone().unwrap_or_default();
            let mut weight = |name: &str, w: Option<f64>, default: f64| match w {
                Some(w) if !w.is_finite() || w < 0.0 => {
                    v.err(format!("{field}.balancer.{name}"), "must be a finite number >= 0");
                    default
                }
                Some(w) => w,
                None => default,
            };
            let cost = crate::balance::CostWeights {
                in_flight: weight("in_flight_weight", over.in_flight_weight, settings.cost.in_flight),
                queue: weight("queue_weight", over.queue_weight, settings.cost.queue),
                kv: weight("kv_weight", over.kv_weight, settings.cost.kv),
            };
            let algorithm = over.algorithm.unwrap_or(settings.algorithm);
            let load_stream = over.load_stream;
            backends.push(Backend {
                name: b.name.as_str().into(),
                protocol: b.protocol,
                endpoints,
                identities,
                algorithm,
                cost,
                load_stream,
                ask_load_reports: over.ask_load_reports.unwrap_or(settings.ask_load_reports),
                slow_start: over.slow_start.map_or(settings.slow_start, |d| d.0),
                shed: match &over.shed {
                    Some(sc) => v.shed(&format!("{field}.balancer.shed"), sc),
                    None => settings.shed,
                },
            });
        }

        let mut services = Vec::new();
        let mut hosts: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, s) in config.services.iter().enumerate() {
            let field = format!("services[{i}]");
            for (k, host) in std::iter::once(&s.name).chain(s.hosts.iter()).enumerate() {
                let hfield = if k == 0 { format!("{field}.name") } else { format!("{field}.hosts[{}]", k - 1) };
                let h = host.to_ascii_lowercase();
                if let Ok(addr) = h.parse::<SocketAddr>() {
                    // An address the app connects to (a ClusterIP:port), for transparent capture.
                    if let Some(other) = addrs.insert(addr, services.len()) {
                        v.err(hfield, format!("address {addr} is already used by services[{other}]"));
                    }
                } else if h.is_empty() || http::uri::Authority::try_from(h.as_str()).is_err() || h.contains(':') {
                    v.err(hfield, format!("{host:?} is not a valid host name"));
                } else if let Some(other) = hosts.insert(h, services.len()) {
                    v.err(hfield, format!("host {host:?} is already used by services[{other}]"));
                }
            }
            if s.routes.is_empty() {
                v.err(format!("{field}.routes"), "a service needs at least one route");
            }
            let mut routes = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            for (j, r) in s.routes.iter().enumerate() {
                let rfield = format!("{field}.routes[{j}]");
                if r.name.is_empty() {
                    v.err(format!("{rfield}.name"), "must not be empty");
                } else if names.contains(&r.name.as_str()) {
                    v.err(format!("{rfield}.name"), format!("duplicate route name {:?} in this service", r.name));
                }
                names.push(&r.name);
                let matcher = v.matcher(&rfield, &r.matches);
                let mut weighted = Vec::new();
                if r.backends.is_empty() {
                    v.err(format!("{rfield}.backends"), "a route needs at least one backend");
                }
                for (k, wb) in r.backends.iter().enumerate() {
                    match backend_index.get(wb.backend.as_str()) {
                        Some(&idx) => weighted.push((idx, wb.weight)),
                        None => v.err(
                            format!("{rfield}.backends[{k}].backend"),
                            format!("no backend named {:?} in `backends`", wb.backend),
                        ),
                    }
                }
                let split = match Split::new(weighted) {
                    Ok(s) => s,
                    Err(e) => {
                        if !r.backends.is_empty() {
                            v.err(format!("{rfield}.backends"), e);
                        }
                        Split::empty()
                    }
                };
                let sticky =
                    r.sticky.as_ref().and_then(|st| v.header_name(format!("{rfield}.sticky.header"), &st.header));
                let timeout = r.timeout.map(|t| t.0);
                if timeout == Some(Duration::ZERO) {
                    v.err(format!("{rfield}.timeout"), "must be greater than zero");
                }
                let retries = match &r.retries {
                    Some(rc) => v.retries(&format!("{rfield}.retries"), rc),
                    None => settings.retries.clone(),
                };
                let coalesce = r.coalesce.as_ref().map(|c| Arc::new(v.coalesce(&rfield, c)));
                let hedge = r.hedge.as_ref().and_then(|h| v.hedge(&format!("{rfield}.hedge"), h));
                routes.push(Route {
                    name: r.name.as_str().into(),
                    matcher,
                    split,
                    sticky,
                    timeout,
                    retries,
                    coalesce,
                    hedge,
                });
            }
            let needs_model = routes.iter().any(|r| r.matcher.model.is_some());
            services.push(Service { name: s.name.as_str().into(), routes, needs_model });
        }

        let inbound = config.inbound.as_ref().and_then(|ib| {
            let load_from = ib.load_from.as_ref().and_then(|u| v.load_url(u));
            if ib.load_interval.0.is_zero() {
                v.err("inbound.load_interval".into(), "must be greater than zero");
            }
            v.addr("inbound.forward_to".into(), &ib.forward_to).map(|forward_to| Inbound {
                forward_to,
                protocol: ib.protocol,
                load_from,
                load_interval: ib.load_interval.0,
            })
        });

        // A pod IP the app connects to directly belongs to the first service that sends to it.
        for (i, service) in services.iter().enumerate() {
            for route in &service.routes {
                for (b, _) in route.split.entries() {
                    for e in backends.get(b).map(|b| b.endpoints.as_slice()).unwrap_or_default() {
                        addrs.entry(*e).or_insert(i);
                    }
                }
            }
        }

        if v.errors.is_empty() {
            let authz = Arc::new(config.proxy.authz.clone());
            let trust_domain =
                config.proxy.identity.as_ref().map_or("cluster.local", |i| i.trust_domain.as_str()).into();
            Ok(Table {
                settings,
                services,
                backends,
                inbound,
                observe,
                authz,
                trust_domain,
                source: config,
                hosts,
                addrs,
            })
        } else {
            Err(ConfigError::Invalid(v.errors))
        }
    }

    /// The service for an authority's host part (case-insensitive, without port).
    pub fn service(&self, host: &str) -> Option<&Service> {
        self.services.get(self.service_index(host)?)
    }

    /// Index into [`Table::services`] of the service a captured connection's original
    /// destination belongs to: one of its hosts written as `ip:port` (a ClusterIP), else an
    /// endpoint of a backend one of its routes sends to (the first such service).
    pub fn service_at(&self, dst: SocketAddr) -> Option<usize> {
        self.addrs.get(&dst).copied()
    }

    /// Index into [`Table::services`] of the service for a host.
    pub fn service_index(&self, host: &str) -> Option<usize> {
        match self.hosts.get(host) {
            Some(i) => Some(*i),
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => self.hosts.get(&host.to_ascii_lowercase()).copied(),
            None => None,
        }
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn err(&mut self, field: String, reason: impl Into<String>) {
        self.errors.push(FieldError { field, reason: reason.into() });
    }

    fn addr(&mut self, field: String, s: &str) -> Option<SocketAddr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(field, format!("{s:?} is not an ip:port address (e.g. 127.0.0.1:8000)"));
                None
            }
        }
    }

    /// `http://ip:port/path` of the load probe.
    fn load_url(&mut self, url: &str) -> Option<(SocketAddr, String)> {
        let parsed = url.strip_prefix("http://").and_then(|rest| {
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/load"),
            };
            Some((hostport.parse::<SocketAddr>().ok()?, path.to_string()))
        });
        if parsed.is_none() {
            self.err("inbound.load_from".into(), format!("{url:?} is not an http://ip:port/path URL"));
        }
        parsed
    }

    fn header_name(&mut self, field: String, s: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(field, format!("{s:?} is not a valid header name"));
                None
            }
        }
    }

    fn settings(&mut self, c: &Config) -> Settings {
        let p = &c.proxy;
        let mut positive = |field: &str, d: Duration| {
            if d.is_zero() {
                self.err(field.into(), "must be greater than zero");
            }
            d
        };
        let connect_timeout = positive("proxy.timeouts.connect", p.timeouts.connect.0);
        let response_timeout = positive("proxy.timeouts.response_header", p.timeouts.response_header.0);
        let idle_timeout = positive("proxy.timeouts.idle", p.timeouts.idle.0);
        let header_read_timeout = positive("proxy.timeouts.header_read", p.timeouts.header_read.0);
        let ewma_decay = positive("proxy.balancer.ewma_decay", p.balancer.ewma_decay.0);
        let default_rtt = positive("proxy.balancer.default_rtt", p.balancer.default_rtt.0);
        let base = positive("proxy.ejection.base_ejection", p.ejection.base_ejection.0);
        let max = p.ejection.max_ejection.0;
        if max < base {
            self.err("proxy.ejection.max_ejection".into(), "must not be shorter than base_ejection");
        }
        if p.ejection.consecutive_failures == 0 {
            self.err("proxy.ejection.consecutive_failures".into(), "must be at least 1");
        }
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        if !(8192..=1 << 20).contains(&p.limits.max_header_bytes) {
            self.err("proxy.limits.max_header_bytes".into(), "must be between 8192 and 1048576");
        }
        if p.limits.max_sniff_bytes == 0 || p.limits.max_sniff_bytes > 16 << 20 {
            self.err("proxy.limits.max_sniff_bytes".into(), "must be between 1 and 16777216");
        }
        if p.limits.max_connections == 0 {
            self.err("proxy.limits.max_connections".into(), "must be at least 1");
        }
        for (field, w) in [
            ("proxy.balancer.in_flight_weight", p.balancer.in_flight_weight),
            ("proxy.balancer.queue_weight", p.balancer.queue_weight),
            ("proxy.balancer.kv_weight", p.balancer.kv_weight),
        ] {
            if !w.is_finite() || w < 0.0 {
                self.err(field.into(), "must be a finite number >= 0");
            }
        }
        let retries = self.retries("proxy.retries", &p.retries);
        let b = &p.retry_budget;
        if !(b.ratio.is_finite() && (0.0..=10.0).contains(&b.ratio)) {
            self.err("proxy.retry_budget.ratio".into(), "must be a number from 0 to 10");
        }
        if b.min_per_second > 1_000_000 {
            self.err("proxy.retry_budget.min_per_second".into(), "must be at most 1000000");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&b.window.0) {
            self.err("proxy.retry_budget.window".into(), "must be from 1s to 60s");
        }
        let retry_budget = RetryBudget {
            ratio: if b.ratio.is_finite() { b.ratio.clamp(0.0, 10.0) } else { 0.2 },
            min_per_second: b.min_per_second.min(1_000_000),
            window: b.window.0.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        };
        let shed = p.shed.as_ref().and_then(|sc| self.shed("proxy.shed", sc));
        Settings {
            retries,
            retry_budget,
            shed,
            connect_timeout,
            response_timeout,
            idle_timeout,
            header_read_timeout,
            max_header_bytes: p.limits.max_header_bytes,
            max_body_bytes: p.limits.max_body_bytes,
            max_sniff_bytes: p.limits.max_sniff_bytes,
            max_connections: p.limits.max_connections,
            ewma_decay,
            default_rtt,
            cost: crate::balance::CostWeights {
                in_flight: p.balancer.in_flight_weight,
                queue: p.balancer.queue_weight,
                kv: p.balancer.kv_weight,
            },
            algorithm: p.balancer.algorithm,
            load_staleness: p.balancer.load_staleness.0,
            penalty_time: p.balancer.penalty_time.0,
            ask_load_reports: p.balancer.ask_load_reports,
            slow_start: p.balancer.slow_start.0,
            ejection: crate::health::EjectionPolicy {
                consecutive_failures: p.ejection.consecutive_failures.max(1),
                base,
                max: max.max(base),
            },
        }
    }

    fn hedge(&mut self, field: &str, h: &crate::config::HedgeConfig) -> Option<Hedge> {
        match (h.delay, h.percentile) {
            (Some(d), None) if !d.0.is_zero() => Some(Hedge::Fixed(d.0)),
            (None, Some(p)) if p.is_finite() && p > 0.0 && p < 100.0 => Some(Hedge::Percentile(p, h.min_delay.0)),
            (Some(_), None) => {
                self.err(format!("{field}.delay"), "must be greater than zero");
                None
            }
            (None, Some(_)) => {
                self.err(format!("{field}.percentile"), "must be a number between 0 and 100");
                None
            }
            _ => {
                self.err(field.to_string(), "give exactly one of `delay` and `percentile`");
                None
            }
        }
    }

    fn shed(&mut self, field: &str, c: &crate::config::ShedConfig) -> Option<Shed> {
        if let Some(q) = c.queue_depth
            && !(q.is_finite() && q > 0.0)
        {
            self.err(format!("{field}.queue_depth"), "must be a number above 0");
        }
        if c.max_in_flight == Some(0) {
            self.err(format!("{field}.max_in_flight"), "must be at least 1");
        }
        if c.queue_depth.is_none() && c.max_in_flight.is_none() {
            self.err(field.to_string(), "give `queue_depth`, `max_in_flight` or both");
        }
        Some(Shed {
            queue_depth: c.queue_depth.filter(|q| q.is_finite() && *q > 0.0),
            max_in_flight: c.max_in_flight.filter(|m| *m > 0),
            retry_after: c.retry_after.0,
        })
    }

    fn retries(&mut self, field: &str, r: &crate::config::RetryConfig) -> Retries {
        if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
            self.err(format!("{field}.max_attempts"), format!("must be from 1 to {MAX_ATTEMPTS}"));
        }
        let mut statuses = Vec::new();
        for (i, &code) in r.statuses.iter().enumerate() {
            match http::StatusCode::from_u16(code) {
                Ok(s) if s.is_client_error() || s.is_server_error() => statuses.push(s),
                _ => self.err(format!("{field}.statuses[{i}]"), "must be a 4xx or 5xx status"),
            }
        }
        Retries {
            max_attempts: r.max_attempts.clamp(1, MAX_ATTEMPTS),
            statuses: statuses.into(),
            grpc_unavailable: r.grpc_unavailable,
        }
    }

    fn matcher(&mut self, rfield: &str, m: &crate::config::MatchConfig) -> Matcher {
        let path = m.path.as_ref().and_then(|p| match (&p.exact, &p.prefix) {
            (Some(e), None) if e.starts_with('/') => Some(PathMatcher::Exact(e.clone())),
            (None, Some(pre)) if pre.starts_with('/') => {
                Some(PathMatcher::Prefix(pre.trim_end_matches('/').to_string()))
            }
            (Some(_), Some(_)) | (None, None) => {
                self.err(format!("{rfield}.match.path"), "give exactly one of `exact` and `prefix`");
                None
            }
            _ => {
                self.err(format!("{rfield}.match.path"), "a path must start with `/`");
                None
            }
        });
        let method = m.method.as_ref().and_then(|s| match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
            Ok(me) => Some(me),
            Err(_) => {
                self.err(format!("{rfield}.match.method"), format!("{s:?} is not an HTTP method"));
                None
            }
        });
        let mut headers = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            let name = self.header_name(format!("{rfield}.match.headers[{i}].name"), &h.name);
            let value = match &h.value {
                Some(val) => match HeaderValue::from_str(val) {
                    Ok(hv) => Some(hv),
                    Err(_) => {
                        self.err(
                            format!("{rfield}.match.headers[{i}].value"),
                            format!("{val:?} is not a valid header value"),
                        );
                        continue;
                    }
                },
                None => None,
            };
            if let Some(n) = name {
                headers.push((n, value));
            }
        }
        if m.model.as_deref() == Some("") {
            self.err(format!("{rfield}.match.model"), "must not be empty");
        }
        Matcher { path, method, headers, model: m.model.clone().filter(|s| !s.is_empty()) }
    }
}

mod coalesce;
mod identity;
mod observe;
#[cfg(test)]
mod tests;

pub use coalesce::Coalesce;
pub use observe::{AccessLog, LogTarget, Observe, Tracing};
