//! Metrics of model traffic: tokens, time to first token, time per output token, GPU-seconds
//! and cost, by model, backend (the model version) and caller; and the trace exporter's counters.

use super::route::{Direction, Name, RouteStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallerLabels {
    direction: Direction,
    model: Name,
    backend: Name,
    caller: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    model: Name,
    backend: Name,
    caller: Name,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    direction: Direction,
    model: Name,
    backend: Name,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Round bucket bounds, so that an SLO (say TTFT under 1 s) reads off one bucket.
const TTFT_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];
/// Time per output token: fine between 5 and 100 ms, where decode speeds lie and where a canary
/// that is 20–30 % slower must fall into other buckets than its stable version.
const TPOT_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0];

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn tpot_histogram() -> Histogram {
    Histogram::new(TPOT_BUCKETS)
}

/// What one finished model answer adds to the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAnswer {
    /// Which listener.
    pub direction: Direction,
    /// The model (capped, `-` when unknown).
    pub model: Arc<str>,
    /// The backend (the model version), `-` when not routed.
    pub backend: Arc<str>,
    /// The caller (capped, `-` when unnamed).
    pub caller: Arc<str>,
    /// The answer's status.
    pub status: u16,
    /// Prompt tokens, when reported.
    pub input_tokens: Option<u64>,
    /// Output tokens, reported or counted.
    pub output_tokens: Option<u64>,
    /// Time to first token, for a streamed answer.
    pub ttft: Option<f64>,
    /// Time per output token, for a streamed answer of at least two tokens.
    pub tpot: Option<f64>,
    /// GPU-seconds apportioned to it.
    pub gpu_seconds: Option<f64>,
    /// The backend's price of a GPU-hour, when configured.
    pub gpu_hour_price: Option<f64>,
}

/// The model traffic metrics (`vane_model_*`) and the trace export counters (`vane_trace_*`).
#[derive(Debug)]
pub struct ModelMetrics {
    requests: Family<RequestLabels, Counter>,
    input_tokens: Family<CallerLabels, Counter>,
    output_tokens: Family<CallerLabels, Counter>,
    gpu_seconds: Family<CallerLabels, FloatCounter>,
    cost: Family<CallerLabels, FloatCounter>,
    ttft: Histograms<LatencyLabels>,
    tpot: Histograms<LatencyLabels>,
    /// Spans handed to the exporter.
    pub spans_exported: Counter,
    /// Spans dropped because the export queue was full.
    pub spans_dropped: Counter,
    /// Export calls that failed (their spans are lost).
    pub export_errors: Counter,
    /// Access log lines not written (the writer fell behind or failed).
    pub access_log_dropped: Counter,
}

impl ModelMetrics {
    pub(super) fn register(registry: &mut Registry) -> ModelMetrics {
        let m = ModelMetrics {
            requests: Family::default(),
            input_tokens: Family::default(),
            output_tokens: Family::default(),
            gpu_seconds: Family::default(),
            cost: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            tpot: Family::new_with_constructor(tpot_histogram),
            spans_exported: Counter::default(),
            spans_dropped: Counter::default(),
            export_errors: Counter::default(),
            access_log_dropped: Counter::default(),
        };
        registry.register(
            "model_requests",
            "Answers to model requests (JSON or SSE), by model, backend, caller and status",
            m.requests.clone(),
        );
        registry.register(
            "model_input_tokens",
            "Prompt tokens, as the answers' usage reports them",
            m.input_tokens.clone(),
        );
        registry.register(
            "model_output_tokens",
            "Output tokens, as the answers' usage reports them, else SSE events",
            m.output_tokens.clone(),
        );
        registry.register_with_unit(
            "model_ttft",
            "Time to first token: from the request to the first body byte of a streamed answer",
            Unit::Seconds,
            m.ttft.clone(),
        );
        registry.register_with_unit(
            "model_tpot",
            "Time per output token of a streamed answer: (end - first token) / (tokens - 1)",
            Unit::Seconds,
            m.tpot.clone(),
        );
        registry.register_with_unit(
            "model_gpu",
            "GPU-seconds apportioned to requests: each request's time-weighted share of its backend's busy endpoints",
            Unit::Seconds,
            m.gpu_seconds.clone(),
        );
        registry.register(
            "model_cost",
            "GPU-seconds times the backend's configured price per GPU-hour / 3600",
            m.cost.clone(),
        );
        registry.register("trace_spans_exported", "Spans handed to the OTLP exporter", m.spans_exported.clone());
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the export queue was full",
            m.spans_dropped.clone(),
        );
        registry.register("trace_export_errors", "OTLP export calls that failed", m.export_errors.clone());
        registry.register(
            "access_log_dropped",
            "Access log lines not written (writer behind or failing)",
            m.access_log_dropped.clone(),
        );
        m
    }

    /// Records one finished answer.
    pub fn record(&self, a: &ModelAnswer) {
        let (model, backend, caller) =
            (Name(Arc::clone(&a.model)), Name(Arc::clone(&a.backend)), Name(Arc::clone(&a.caller)));
        let by_caller = CallerLabels { direction: a.direction, model: model.clone(), backend: backend.clone(), caller };
        self.requests
            .get_or_create(&RequestLabels {
                direction: a.direction,
                model: model.clone(),
                backend: backend.clone(),
                caller: by_caller.caller.clone(),
                status: a.status,
            })
            .inc();
        if let Some(n) = a.input_tokens {
            self.input_tokens.get_or_create(&by_caller).inc_by(n);
        }
        if let Some(n) = a.output_tokens {
            self.output_tokens.get_or_create(&by_caller).inc_by(n);
        }
        if let Some(g) = a.gpu_seconds {
            self.gpu_seconds.get_or_create(&by_caller).inc_by(g);
            if let Some(p) = a.gpu_hour_price {
                self.cost.get_or_create(&by_caller).inc_by(g * p / 3600.0);
            }
        }
        let by_model = LatencyLabels { direction: a.direction, model, backend };
        if let Some(t) = a.ttft {
            self.ttft.get_or_create(&by_model).observe(t);
        }
        if let Some(t) = a.tpot {
            self.tpot.get_or_create(&by_model).observe(t);
        }
    }
}

// === impl RouteStats ===

impl RouteStats {
    /// The service's name.
    pub fn service(&self) -> &Arc<str> {
        &self.labels.service.0
    }

    /// The route's name.
    pub fn route(&self) -> &Arc<str> {
        &self.labels.route.0
    }

    /// The backend's name.
    pub fn backend(&self) -> &Arc<str> {
        &self.labels.backend.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_becomes_tokens_latency_and_cost() {
        let mut registry = Registry::with_prefix("vane");
        let m = ModelMetrics::register(&mut registry);
        m.record(&ModelAnswer {
            direction: Direction::Outbound,
            model: "llama".into(),
            backend: "llama-v2".into(),
            caller: "team-a".into(),
            status: 200,
            input_tokens: Some(12),
            output_tokens: Some(30),
            ttft: Some(0.2),
            tpot: Some(0.01),
            gpu_seconds: Some(36.0),
            gpu_hour_price: Some(2.0),
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let labels = r#"direction="outbound",model="llama",backend="llama-v2",caller="team-a""#;
        for line in [
            format!("vane_model_input_tokens_total{{{labels}}} 12"),
            format!("vane_model_output_tokens_total{{{labels}}} 30"),
            format!("vane_model_gpu_seconds_total{{{labels}}} 36.0"),
            format!("vane_model_cost_total{{{labels}}} 0.02"),
            format!("vane_model_requests_total{{{labels},status=\"200\"}} 1"),
            r#"vane_model_ttft_seconds_count{direction="outbound",model="llama",backend="llama-v2"} 1"#.to_string(),
            r#"vane_model_tpot_seconds_count{direction="outbound",model="llama",backend="llama-v2"} 1"#.to_string(),
        ] {
            assert!(out.contains(&line), "{line} not in\n{out}");
        }
    }
}
