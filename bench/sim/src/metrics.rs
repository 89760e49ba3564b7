//! The simulator's state as vLLM reports it: the `/metrics` page (Prometheus text, vLLM's
//! names, `model_name` and `engine` labels, HELP and TYPE lines) and the ORCA
//! `endpoint-load-metrics` header.
//!
//! The engine loop publishes the queues after every step; request handlers and the scrape
//! read them without taking a lock. Both the page and the header read the same
//! [`Shared::reported`], so they agree whenever the engine is between steps. With a
//! [`Freeze`], that reported load holds still for part of every period (a stuck exporter);
//! [`Shared::load`] and the `/state` document ([`Shared::state_json`]) always tell the truth.

use crate::engine::{EngineConfig, Load, SeqId, SeqSpec, SeqView, Snapshot};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// vLLM's buckets for `vllm:time_to_first_token_seconds`.
pub const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];

/// vLLM's buckets for `vllm:e2e_request_latency_seconds`.
pub const E2E_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];

/// The ORCA load-report response header.
pub const ORCA_HEADER: &str = "endpoint-load-metrics";

/// State shared by the engine loop, the handlers and the scrape.
#[derive(Debug)]
pub struct Shared {
    model: String,
    block_size: u32,
    total_blocks: u32,
    waiting: AtomicU64,
    running: AtomicU64,
    used_blocks: AtomicU64,
    /// Submitted by a handler, not yet taken in by the engine loop.
    pending: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success: AtomicU64,
    preemptions: AtomicU64,
    /// Requests answered 429 because the queue was full (`--max-waiting`).
    refused: AtomicU64,
    /// Valid generation requests received (refused and stalled ones included).
    received: AtomicU64,
    ttft: Mutex<Histogram>,
    e2e: Mutex<Histogram>,
    /// Requests on their way to the engine, by id, with their sizes (for `/state`).
    pending_specs: Mutex<Vec<SeqSpec>>,
    /// The engine's sequences after the last step.
    snapshot: Mutex<Arc<Snapshot>>,
    freeze: Option<Freeze>,
    started: Instant,
    /// The load last reported while reports were live.
    reported: Mutex<Served>,
}

/// Reported load that freezes: for `on` it stays at the last value reported before, then it is
/// live for `off`, and again, from the simulator's start (which is frozen at the initial, idle
/// value for the first `on`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freeze {
    /// How long each freeze lasts.
    pub on: Duration,
    /// How long reports are live between freezes.
    pub off: Duration,
}

/// A snapshot of the engine's queues as served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Served {
    /// Requests waiting (in the engine's queue or on their way to it).
    pub waiting: u64,
    /// Requests in the running batch.
    pub running: u64,
    /// KV-cache use, 0..1.
    pub kv_cache_usage: f64,
}

impl Freeze {
    /// Whether reports are frozen `elapsed` after the start.
    pub fn frozen_at(&self, elapsed: Duration) -> bool {
        let period = (self.on + self.off).as_nanos();
        period > 0 && elapsed.as_nanos() % period < self.on.as_nanos()
    }
}

/// A Prometheus histogram with fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

// === impl Shared ===

impl Shared {
    /// Fresh state for a model with the given KV layout.
    pub fn new(model: &str, block_size: u32, total_blocks: u32) -> Self {
        Self {
            model: model.to_owned(),
            block_size,
            total_blocks,
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            used_blocks: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new(&TTFT_BUCKETS)),
            e2e: Mutex::new(Histogram::new(&E2E_BUCKETS)),
            pending_specs: Mutex::new(Vec::new()),
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            freeze: None,
            started: Instant::now(),
            reported: Mutex::new(Served { waiting: 0, running: 0, kv_cache_usage: 0.0 }),
        }
    }

    /// The same, with reports that freeze as `freeze` says, counted from now.
    pub fn with_freeze(mut self, freeze: Option<Freeze>) -> Self {
        self.freeze = freeze;
        self.started = Instant::now();
        self
    }

    /// Whether reports are frozen now.
    pub fn frozen(&self) -> bool {
        self.freeze.is_some_and(|f| f.frozen_at(self.started.elapsed()))
    }

    /// The served model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Records the engine's queues after a step.
    pub fn publish(&self, load: Load, preemptions: u64) {
        self.waiting.store(load.waiting as u64, Relaxed);
        self.running.store(load.running as u64, Relaxed);
        self.used_blocks.store(u64::from(load.used_blocks), Relaxed);
        self.preemptions.store(preemptions, Relaxed);
        if self.freeze.is_some() {
            let _ = self.reported();
        }
    }

    /// Records the engine's sequences after a step.
    pub fn publish_snapshot(&self, snapshot: Snapshot) {
        *lock(&self.snapshot) = Arc::new(snapshot);
    }

    /// A request is on its way to the engine.
    pub fn add_pending(&self, spec: SeqSpec) {
        self.pending.fetch_add(1, Relaxed);
        lock(&self.pending_specs).push(spec);
    }

    /// The engine loop took a request in (or it was refused).
    pub fn take_pending(&self, id: SeqId) {
        self.pending.fetch_sub(1, Relaxed);
        let mut p = lock(&self.pending_specs);
        if let Some(i) = p.iter().position(|s| s.id == id) {
            p.remove(i);
        }
    }

    /// The queues as they are now.
    pub fn load(&self) -> Served {
        let used = self.used_blocks.load(Relaxed) as f64;
        Served {
            waiting: self.waiting.load(Relaxed) + self.pending.load(Relaxed),
            running: self.running.load(Relaxed),
            kv_cache_usage: used / f64::from(self.total_blocks.max(1)),
        }
    }

    /// The load as reported in the ORCA header and on `/metrics`: [`Self::load`], or while a
    /// freeze lasts, the value last reported before it.
    pub fn reported(&self) -> Served {
        let mut last = lock(&self.reported);
        if !self.frozen() {
            *last = self.load();
        }
        *last
    }

    /// The `/state` document: the engine's true state (never frozen) and its step parameters.
    /// Sequences are `[prompt_tokens, generated, max_tokens]`; requests not yet taken in by the
    /// engine loop are at the end of `waiting_seqs`. `engine` gives the parameters, `speed` the
    /// speed factor in force now, `max_waiting` the queue length at which requests are refused.
    pub fn state_json(&self, engine: &EngineConfig, speed: f64, max_waiting: Option<usize>) -> String {
        let snapshot = Arc::clone(&lock(&self.snapshot));
        let triple = |s: &SeqView| [s.prompt_tokens, s.generated, s.max_tokens];
        let mut waiting: Vec<[u32; 3]> = snapshot.waiting.iter().map(triple).collect();
        waiting.extend(lock(&self.pending_specs).iter().map(|s| [s.prompt_tokens, 0, s.max_tokens]));
        let running: Vec<[u32; 3]> = snapshot.running.iter().map(triple).collect();
        let used = self.used_blocks.load(Relaxed);
        json!({
            "waiting": waiting.len(),
            "running": running.len(),
            "waiting_seqs": waiting,
            "running_seqs": running,
            "speed": speed,
            "step_base_us": engine.step_base_us,
            "step_per_seq_us": engine.step_per_seq_us,
            "prefill_us_per_token": engine.prefill_us_per_token,
            "max_batch": engine.max_batch,
            "max_batched_tokens": engine.max_batched_tokens,
            "block_size": self.block_size,
            "kv_blocks_total": self.total_blocks,
            "kv_blocks_free": u64::from(self.total_blocks).saturating_sub(used),
            "max_waiting": max_waiting,
            "reports_frozen": self.frozen(),
        })
        .to_string()
    }

    /// A request sampled its first token `ttft` after it arrived.
    pub fn first_token(&self, prompt_tokens: u32, ttft: Duration) {
        self.prompt_tokens.fetch_add(u64::from(prompt_tokens), Relaxed);
        observe(&self.ttft, ttft);
    }

    /// Tokens were generated.
    pub fn tokens(&self, n: u64) {
        self.generation_tokens.fetch_add(n, Relaxed);
    }

    /// A valid generation request came in; returns its number, counted from 1.
    pub fn received(&self) -> u64 {
        self.received.fetch_add(1, Relaxed) + 1
    }

    /// A request was refused with 429 (the queue was full).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// A request finished `e2e` after it arrived.
    pub fn finished(&self, e2e: Duration) {
        self.success.fetch_add(1, Relaxed);
        observe(&self.e2e, e2e);
    }

    /// The ORCA `endpoint-load-metrics` value in TEXT form.
    pub fn orca(&self) -> String {
        let l = self.reported();
        format!(
            "TEXT named_metrics.queue_depth={}, named_metrics.running={}, named_metrics.kv_cache_usage={}",
            l.waiting, l.running, l.kv_cache_usage
        )
    }

    /// The `/metrics` page.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let labels = format!("engine=\"0\",model_name=\"{}\"", escape_label(&self.model));
        let l = self.reported();
        let gauges = [
            ("vllm:num_requests_running", "Number of requests in model execution batches.", l.running as f64),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", l.waiting as f64),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", l.kv_cache_usage),
            (
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage (older name of vllm:kv_cache_usage_perc).",
                l.kv_cache_usage,
            ),
        ];
        for (name, help, v) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name}{{{labels}}} {}", num(v));
        }
        let counters = [
            ("vllm:num_preemptions_total", "Cumulative number of preemptions from the engine.", &self.preemptions),
            ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", &self.prompt_tokens),
            ("vllm:generation_tokens_total", "Number of generation tokens processed.", &self.generation_tokens),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name}{{{labels}}} {}", num(v.load(Relaxed) as f64));
        }
        let name = "vllm:request_success_total";
        header(&mut out, name, "Count of successfully processed requests.", "counter");
        let _ =
            writeln!(out, "{name}{{{labels},finished_reason=\"length\"}} {}", num(self.success.load(Relaxed) as f64));
        // Not a vLLM series: vLLM never refuses for load.
        let name = "vane_sim_refused_total";
        header(&mut out, name, "Requests answered 429 because --max-waiting requests were waiting.", "counter");
        let _ = writeln!(out, "{name}{{{labels}}} {}", num(self.refused.load(Relaxed) as f64));
        // Not a vLLM series either: every request that reached the server, one GPU pass each
        // (vLLM's request_success counts finished requests only, not aborted or refused ones).
        let name = "vane_sim_requests_total";
        header(&mut out, name, "Valid generation requests received (refused and aborted ones included).", "counter");
        let _ = writeln!(out, "{name}{{{labels}}} {}", num(self.received.load(Relaxed) as f64));
        let name = "vllm:cache_config_info";
        header(&mut out, name, "Information of the KV cache configuration.", "gauge");
        let _ = writeln!(
            out,
            "{name}{{block_size=\"{}\",engine=\"0\",num_gpu_blocks=\"{}\"}} 1.0",
            self.block_size, self.total_blocks
        );
        let hist = [
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &self.ttft),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", &self.e2e),
        ];
        for (name, help, h) in hist {
            header(&mut out, name, help, "histogram");
            let h = match h.lock() {
                Ok(h) => h.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            h.render(&mut out, name, &labels);
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn observe(h: &Mutex<Histogram>, d: Duration) {
    match h.lock() {
        Ok(mut h) => h.observe(d.as_secs_f64()),
        Err(poisoned) => poisoned.into_inner().observe(d.as_secs_f64()),
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A sample value the way Python's client prints it (`3.0`, `0.25`).
fn num(v: f64) -> String {
    format!("{v:?}")
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

// === impl Histogram ===

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = match self.bounds.get(i) {
                Some(b) => num(*b),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {}", num(cumulative as f64));
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", num(self.sum));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", num(self.count as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let mut h = Histogram::new(&TTFT_BUCKETS);
        h.observe(0.001); // on the bound: counts in le="0.001"
        h.observe(0.05);
        h.observe(10_000.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 1.0\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.04\"} 1.0\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.06\"} 2.0\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"2560.0\"} 2.0\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3.0\n"));
        assert!(out.contains("x_count{a=\"b\"} 3.0\n"));
    }

    #[test]
    fn page_and_header_report_the_same_load() {
        let s = Shared::new("m\"1", 16, 100);
        s.publish(Load { waiting: 3, running: 5, used_blocks: 42, total_blocks: 100 }, 2);
        s.add_pending(SeqSpec { id: 7, prompt_tokens: 10, max_tokens: 5 });
        assert_eq!(
            s.orca(),
            "TEXT named_metrics.queue_depth=4, named_metrics.running=5, named_metrics.kv_cache_usage=0.42"
        );
        let page = s.render();
        let labels = "{engine=\"0\",model_name=\"m\\\"1\"}";
        for line in [
            format!("vllm:num_requests_waiting{labels} 4.0"),
            format!("vllm:num_requests_running{labels} 5.0"),
            format!("vllm:kv_cache_usage_perc{labels} 0.42"),
            format!("vllm:gpu_cache_usage_perc{labels} 0.42"),
            format!("vllm:num_preemptions_total{labels} 2.0"),
            "vllm:cache_config_info{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"100\"} 1.0".into(),
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
        }
    }

    #[test]
    fn freeze_phases() {
        let f = Freeze { on: Duration::from_secs(3), off: Duration::from_secs(2) };
        let at = |ms: u64| f.frozen_at(Duration::from_millis(ms));
        assert!(at(0) && at(2_999));
        assert!(!at(3_000) && !at(4_999));
        assert!(at(5_000) && at(7_999) && !at(8_000));
        let never = Freeze { on: Duration::ZERO, off: Duration::from_secs(1) };
        assert!(!never.frozen_at(Duration::from_millis(10)));
    }

    #[test]
    fn frozen_reports_hold_the_last_live_value_and_state_tells_the_truth() {
        let live = Shared::new("m", 16, 100);
        // Frozen from the start for a long time: the reports stay at the initial value.
        let s = Shared::new("m", 16, 100)
            .with_freeze(Some(Freeze { on: Duration::from_secs(3600), off: Duration::from_secs(1) }));
        for shared in [&live, &s] {
            shared.publish(Load { waiting: 3, running: 5, used_blocks: 42, total_blocks: 100 }, 0);
        }
        assert!(s.frozen());
        assert_eq!(
            s.orca(),
            "TEXT named_metrics.queue_depth=0, named_metrics.running=0, named_metrics.kv_cache_usage=0"
        );
        assert!(s.render().contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 0.0\n"));
        assert_eq!(s.load().waiting, 3, "the true load");
        assert_eq!(live.reported(), live.load());
        assert_eq!(live.reported().running, 5);

        let cfg = EngineConfig::default();
        let first: serde_json::Value = serde_json::from_str(&s.state_json(&cfg, 3.0, None)).unwrap();
        assert_eq!(first["reports_frozen"], true);
        assert_eq!(first["kv_blocks_free"], 58);
        let v = |prompt_tokens, generated, max_tokens| SeqView { prompt_tokens, generated, max_tokens };
        s.publish_snapshot(Snapshot { running: vec![v(100, 3, 10)], waiting: vec![v(50, 0, 20)] });
        s.add_pending(SeqSpec { id: 9, prompt_tokens: 7, max_tokens: 8 });
        let st: serde_json::Value = serde_json::from_str(&s.state_json(&cfg, 3.0, None)).unwrap();
        assert_eq!(st["running_seqs"], json!([[100, 3, 10]]));
        assert_eq!(st["waiting_seqs"], json!([[50, 0, 20], [7, 0, 8]]));
        assert_eq!((st["waiting"].as_u64(), st["running"].as_u64()), (Some(2), Some(1)));
        assert_eq!(st["speed"], 3.0);
        assert_eq!(st["max_batch"], 64);
        assert_eq!(st["step_base_us"], 3500.0);
        assert_eq!(st["max_waiting"], serde_json::Value::Null);
        s.take_pending(9);
        let st: serde_json::Value = serde_json::from_str(&s.state_json(&cfg, 3.0, None)).unwrap();
        assert_eq!(st["waiting"], 1);
    }
}
