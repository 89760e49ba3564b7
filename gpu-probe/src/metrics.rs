//! The probe's own Prometheus metrics, for dashboards and autoscalers (HPA through an adapter,
//! KEDA's Prometheus scaler).
//!
//! The figures are atomics updated by the poll loop; `/metrics` encodes them on request. The
//! snapshot age is set at encoding time, so it is exact when scraped.

use crate::decode::DecodeRate;
use crate::gpu::GpuSnapshot;
use crate::servers::Figures;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

type FloatGauge = Gauge<f64, AtomicU64>;

/// Scrape duration buckets, in seconds: a healthy local scrape takes well under 5 ms.
const SCRAPE_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Labels of the per-GPU gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    /// Device index.
    pub gpu: String,
}

/// Labels of the scrape error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `connect`, `timeout`, `status`, `body`, `malformed` or `no_load_metrics`.
    pub reason: &'static str,
}

/// The registry and every metric in it.
pub struct ProbeMetrics {
    registry: Registry,
    queue_depth: FloatGauge,
    running: FloatGauge,
    kv_cache_usage: FloatGauge,
    decode_rate: FloatGauge,
    token_time: FloatGauge,
    gpu_utilization: Family<GpuLabels, FloatGauge>,
    gpu_memory_used: Family<GpuLabels, FloatGauge>,
    gpu_memory_total: Family<GpuLabels, FloatGauge>,
    scrape_errors: Family<ErrorLabels, Counter>,
    scrape_duration: Histogram,
    snapshot_age: FloatGauge,
    stale: Gauge,
}

impl fmt::Debug for ProbeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeMetrics").finish_non_exhaustive()
    }
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = ProbeMetrics {
            queue_depth: nan_gauge(),
            running: nan_gauge(),
            kv_cache_usage: nan_gauge(),
            decode_rate: nan_gauge(),
            token_time: nan_gauge(),
            gpu_utilization: Family::default(),
            gpu_memory_used: Family::default(),
            gpu_memory_total: Family::default(),
            scrape_errors: Family::default(),
            scrape_duration: Histogram::new(SCRAPE_BUCKETS),
            snapshot_age: nan_gauge(),
            stale: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "vane_probe_queue_depth",
            "Requests waiting in the model server's queue (NaN before the first good scrape)",
            m.queue_depth.clone(),
        );
        registry.register("vane_probe_running_requests", "Requests the model server is processing", m.running.clone());
        registry.register(
            "vane_probe_kv_cache_usage_ratio",
            "KV-cache use of the model server, 0 to 1 (NaN where the server does not report it)",
            m.kv_cache_usage.clone(),
        );
        registry.register(
            "vane_probe_decode_tokens_per_second",
            "Tokens the model server generates per second, all streams together (NaN until measured)",
            m.decode_rate.clone(),
        );
        registry.register_with_unit(
            "vane_probe_token_time",
            "Time per output token for one stream (NaN until measured)",
            Unit::Seconds,
            m.token_time.clone(),
        );
        registry.register(
            "vane_probe_gpu_utilization_ratio",
            "Share of the last sample period with a kernel running on the GPU, 0 to 1",
            m.gpu_utilization.clone(),
        );
        registry.register_with_unit(
            "vane_probe_gpu_memory_used",
            "GPU memory in use by all processes",
            Unit::Bytes,
            m.gpu_memory_used.clone(),
        );
        registry.register_with_unit(
            "vane_probe_gpu_memory_total",
            "GPU memory installed",
            Unit::Bytes,
            m.gpu_memory_total.clone(),
        );
        registry.register(
            "vane_probe_scrape_errors",
            "Failed scrapes of the model server's metrics, by reason",
            m.scrape_errors.clone(),
        );
        registry.register_with_unit(
            "vane_probe_scrape_duration",
            "Time to fetch and read the model server's metrics page",
            Unit::Seconds,
            m.scrape_duration.clone(),
        );
        registry.register_with_unit(
            "vane_probe_snapshot_age",
            "Age of the load figures served (NaN before the first good scrape)",
            Unit::Seconds,
            m.snapshot_age.clone(),
        );
        registry.register(
            "vane_probe_stale",
            "1 when the figures are older than --stale-after (or missing), else 0",
            m.stale.clone(),
        );
        ProbeMetrics { registry, ..m }
    }

    /// Records a good scrape's figures.
    pub fn set_figures(&self, f: &Figures) {
        self.queue_depth.set(f.queue_depth.unwrap_or(f64::NAN));
        self.running.set(f.running.unwrap_or(f64::NAN));
        self.kv_cache_usage.set(f.kv_cache_usage.unwrap_or(f64::NAN));
    }

    /// Records the decode speed (kept while the server idles).
    pub fn set_decode(&self, d: Option<&DecodeRate>) {
        self.decode_rate.set(d.and_then(|d| d.tokens_per_s).unwrap_or(f64::NAN));
        self.token_time.set(d.and_then(|d| d.token_time).map_or(f64::NAN, |t| t.as_secs_f64()));
    }

    /// Records a GPU reading.
    pub fn set_gpu(&self, gpu: &GpuSnapshot) {
        for d in &gpu.devices {
            let labels = GpuLabels { gpu: d.index.to_string() };
            if let Some(u) = d.utilization {
                self.gpu_utilization.get_or_create(&labels).set(u);
            }
            if let Some(b) = d.memory_used_bytes {
                self.gpu_memory_used.get_or_create(&labels).set(b as f64);
            }
            if let Some(b) = d.memory_total_bytes.or(d.cuda_total_bytes) {
                self.gpu_memory_total.get_or_create(&labels).set(b as f64);
            }
        }
    }

    /// Counts a failed scrape.
    pub fn count_error(&self, reason: &'static str) {
        self.scrape_errors.get_or_create(&ErrorLabels { reason }).inc();
    }

    /// Records how long a scrape took, good or bad.
    pub fn observe_scrape(&self, took: Duration) {
        self.scrape_duration.observe(took.as_secs_f64());
    }

    /// Encodes everything in the Prometheus text format (0.0.4), or in OpenMetrics when
    /// `openmetrics` is set; `age` and `stale` describe the snapshot at this moment.
    pub fn encode(&self, age: Option<Duration>, stale: bool, openmetrics: bool) -> String {
        self.snapshot_age.set(age.map_or(f64::NAN, |a| a.as_secs_f64()));
        self.stale.set(i64::from(stale));
        let mut out = String::with_capacity(4096);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String cannot fail; an encoder error would leave a partial page,
        // which is still better than none.
        let _ = encoded;
        out
    }
}

/// Content type of [`ProbeMetrics::encode`] output.
pub fn content_type(openmetrics: bool) -> &'static str {
    if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    }
}

fn nan_gauge() -> FloatGauge {
    let g = FloatGauge::default();
    g.set(f64::NAN);
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expo;

    #[test]
    fn exposes_the_documented_names_and_reads_back_with_our_parser() {
        let m = ProbeMetrics::new();
        m.set_figures(&Figures { queue_depth: Some(3.0), running: Some(2.0), kv_cache_usage: None });
        m.count_error("timeout");
        m.set_decode(Some(&DecodeRate {
            tokens_per_s: Some(400.0),
            token_time: Some(Duration::from_millis(20)),
            token_time_source: None,
            at: std::time::Instant::now(),
        }));
        m.observe_scrape(Duration::from_micros(800));
        m.set_gpu(&crate::gpu::merge(
            &[crate::gpu::NvmlDevice {
                index: 0,
                utilization_percent: Some(40),
                used_bytes: Some(1024),
                total_bytes: Some(4096),
                ..Default::default()
            }],
            &[],
            0,
        ));
        for openmetrics in [false, true] {
            let page = m.encode(Some(Duration::from_millis(15)), false, openmetrics);
            let samples = expo::parse(&page).expect("our own page parses");
            let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
            assert_eq!(value("vane_probe_queue_depth"), Some(3.0), "{page}");
            assert_eq!(value("vane_probe_running_requests"), Some(2.0));
            assert!(value("vane_probe_kv_cache_usage_ratio").unwrap().is_nan());
            assert_eq!(value("vane_probe_decode_tokens_per_second"), Some(400.0));
            assert_eq!(value("vane_probe_token_time_seconds"), Some(0.02));
            assert_eq!(value("vane_probe_gpu_utilization_ratio"), Some(0.4));
            assert_eq!(value("vane_probe_gpu_memory_used_bytes"), Some(1024.0));
            assert_eq!(value("vane_probe_gpu_memory_total_bytes"), Some(4096.0));
            assert_eq!(value("vane_probe_scrape_errors_total"), Some(1.0));
            assert_eq!(value("vane_probe_scrape_duration_seconds_count"), Some(1.0));
            assert_eq!(value("vane_probe_snapshot_age_seconds"), Some(0.015));
            assert_eq!(value("vane_probe_stale"), Some(0.0));
        }
    }
}
