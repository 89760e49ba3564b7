//! The observer: what the proxy keeps to observe model traffic (label caps, prices, the busy
//! clocks, the span exporter and the access log), built once at start from `proxy.observe` and
//! `proxy.tracing`, and shared by both listeners' stacks.

use super::context::{self, SpanIds, TRACEPARENT};
use super::export::{Counters, Exporter};
use super::log::AccessLog;
use super::record::{Record, Span};
use crate::metrics::busy::BusyClock;
use crate::metrics::caps::LabelCap;
use crate::metrics::{Direction, Metrics, ModelAnswer};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::InstrumentationScope;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vane_route::table::Observe;

/// Traces: the exporter and the sampling ratio.
#[derive(Debug)]
struct Tracer {
    exporter: Exporter,
    ratio: f64,
    scope: InstrumentationScope,
}

/// Shared state for observing requests.
#[derive(Debug)]
pub struct Observer {
    caller_header: Option<HeaderName>,
    callers: LabelCap,
    models: LabelCap,
    prices: HashMap<Arc<str>, f64>,
    metrics: Arc<Metrics>,
    tracer: Option<Tracer>,
    log: Option<(AccessLog, f64)>,
    clocks: Mutex<Clocks>,
}

/// The busy clock of each listener's backends.
type Clocks = HashMap<(Direction, Arc<str>), Arc<BusyClock>>;

/// A request's part of its backend's busy clock: leaves the clock when its answer ends (or when
/// dropped, uncounted).
#[derive(Debug)]
pub struct Ticket {
    clock: Arc<BusyClock>,
    k: u32,
    v0: f64,
    left: AtomicBool,
}

impl Ticket {
    /// Leaves the clock: the request's GPU-seconds (`None` if it had left already).
    pub fn leave(&self, now: Instant) -> Option<f64> {
        (!self.left.swap(true, Ordering::AcqRel)).then(|| self.clock.leave(now, self.k, self.v0))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.leave(Instant::now());
    }
}

impl Observer {
    /// Model metrics only: no traces, no access log, default caps (for tests and tools).
    pub fn metrics_only(metrics: Arc<Metrics>) -> Observer {
        Observer::with(&Observe::default(), metrics, None, None)
    }

    /// Builds the observer of `cfg`, starting the span exporter and the access log writer on
    /// the current runtime when they are configured.
    pub async fn start(cfg: &Observe, metrics: Arc<Metrics>) -> anyhow::Result<Observer> {
        let tracer = match &cfg.tracing {
            Some(t) => {
                let m = &metrics.model;
                let counters = Counters {
                    exported: m.spans_exported.clone(),
                    dropped: m.spans_dropped.clone(),
                    errors: m.export_errors.clone(),
                };
                let exporter = Exporter::start(t, counters)?;
                let scope = InstrumentationScope::builder("vane-proxy").with_version(env!("CARGO_PKG_VERSION")).build();
                Some(Tracer { exporter, ratio: t.sample, scope })
            }
            None => None,
        };
        let log = match &cfg.access_log {
            Some(a) => {
                let w = AccessLog::start(&a.to, metrics.model.access_log_dropped.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the access log {:?}: {e}", a.to))?;
                Some((w, a.sample))
            }
            None => None,
        };
        Ok(Observer::with(cfg, metrics, tracer, log))
    }

    fn with(cfg: &Observe, metrics: Arc<Metrics>, tracer: Option<Tracer>, log: Option<(AccessLog, f64)>) -> Observer {
        Observer {
            caller_header: cfg.caller_header.clone(),
            callers: LabelCap::new(cfg.max_callers),
            models: LabelCap::new(cfg.max_models),
            prices: cfg.gpu_hour_price.clone(),
            metrics,
            tracer,
            log,
            clocks: Mutex::default(),
        }
    }

    /// The caller's header value, if one is configured and sent.
    pub fn caller(&self, h: &HeaderMap) -> Option<HeaderValue> {
        self.caller_header.as_ref().and_then(|n| h.get(n)).cloned()
    }

    /// Whether to log this request (decided at its start).
    pub fn log_this(&self) -> bool {
        self.log.as_ref().is_some_and(|(_, s)| *s >= 1.0 || fastrand::f64() < *s)
    }

    /// Starts the span of a request when tracing is on and the request is sampled: its ids,
    /// with the `traceparent` the next hop gets put in `h`. A request not sampled keeps the
    /// headers it came with (its `traceparent`, if any, passes on untouched).
    pub fn begin_span(&self, h: &mut HeaderMap) -> Option<Span> {
        let t = self.tracer.as_ref()?;
        let parent = h.get(TRACEPARENT).and_then(|v| context::parse(v.as_bytes()));
        let mut rng = fastrand::Rng::new();
        let trace = parent.map_or_else(|| context::random(&mut rng), |p| p.trace);
        if !context::sampled(parent.as_ref(), &trace, t.ratio) {
            return None;
        }
        let ids = SpanIds { trace, span: context::random(&mut rng), sampled: true };
        if let Ok(v) = HeaderValue::from_str(&context::format(&ids)) {
            h.insert(TRACEPARENT, v);
        }
        Some(Span { ids, parent: parent.map(|p| p.span) })
    }

    /// Sends the spans still queued to the collector, waiting at most `within`; at shutdown,
    /// after the last request. Returns whether they all went (true with tracing off).
    pub async fn flush(&self, within: std::time::Duration) -> bool {
        match &self.tracer {
            Some(t) => t.exporter.flush(within).await,
            None => true,
        }
    }

    /// Enters the busy clock of `backend` (of `k` endpoints) for a request starting now.
    pub fn enter(&self, direction: Direction, backend: &Arc<str>, k: u32) -> Arc<Ticket> {
        let clock = {
            let mut clocks = crate::lock(&self.clocks);
            Arc::clone(clocks.entry((direction, Arc::clone(backend))).or_default())
        };
        let v0 = clock.enter(Instant::now(), k);
        Arc::new(Ticket { clock, k, v0, left: AtomicBool::new(false) })
    }

    /// The capped label value of a model name.
    pub fn model_label(&self, model: Option<&str>) -> Arc<str> {
        self.models.admit(model)
    }

    /// The capped label value of a caller.
    pub fn caller_label(&self, caller: Option<&HeaderValue>) -> Arc<str> {
        self.callers.admit(caller.and_then(|v| v.to_str().ok()))
    }

    /// A request has ended: its model metrics (for a model answer), span and log line.
    pub fn finish(&self, r: &Record, model_answer: bool, sse: bool, log: bool) {
        if model_answer {
            let ttft = if sse { r.first_byte.map(|d| d.as_secs_f64()) } else { None };
            let tpot = match (sse, r.first_byte, r.output_tokens) {
                (true, Some(first), Some(n)) if r.complete => {
                    crate::metrics::usage::tpot(first.as_secs_f64(), r.end.as_secs_f64(), n)
                }
                _ => None,
            };
            self.metrics.model.record(&ModelAnswer {
                direction: r.direction,
                model: Arc::clone(&r.model),
                backend: Arc::clone(&r.backend),
                caller: Arc::clone(&r.caller),
                status: r.status,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                ttft,
                tpot,
                gpu_seconds: r.gpu_seconds,
                gpu_hour_price: self.prices.get(&r.backend).copied(),
            });
        }
        if let (Some(t), Some(span)) = (&self.tracer, &r.span) {
            t.exporter.send(r.span_data(span, &t.scope));
        }
        if log && let Some((w, _)) = &self.log {
            w.line(r.json_line());
        }
    }
}
