//! The load snapshot that `/load` and `/orca` serve, rendered once per poll.
//!
//! The poll loop builds a [`Rendered`] from the latest [`State`] and swaps it in whole through
//! an `ArcSwap`; a request loads it once and writes it out as a `vane_runtime::load_doc::LoadDoc`
//! (the one type the proxy reads it back with), borrowing from the snapshot. The age of the
//! figures and whether they are stale are taken at the moment of the request, so staleness is
//! exact even when the model server hangs mid-scrape and no poll completes.

use crate::decode::DecodeRate;
use crate::gpu::{GpuSnapshot, GpuView, unix_ms};
use crate::servers::{Figures, ServerKind};
use bytes::Bytes;
use http::HeaderValue;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use vane_runtime::load_doc::LoadDoc;

/// The name of the ORCA load-report header.
pub const ORCA_HEADER: &str = "endpoint-load-metrics";

/// Everything the snapshot is made from.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The last good reading of the model server, if there was one.
    pub last_good: Option<GoodReading>,
    /// The last scrape error, cleared by the next good scrape.
    pub last_error: Option<String>,
    /// The decode speed last measured (kept while the server idles).
    pub decode: Option<DecodeRate>,
    /// The GPU side, as the GPU thread last published it.
    pub gpu: Arc<GpuView>,
}

/// A good reading and when it was taken.
#[derive(Clone, Copy, Debug)]
pub struct GoodReading {
    /// The server kind.
    pub kind: ServerKind,
    /// The figures.
    pub figures: Figures,
    /// When, on the monotonic clock (for age).
    pub at: Instant,
    /// When, on the wall clock (for `updated_unix_ms`).
    pub at_wall: SystemTime,
}

/// A pre-rendered snapshot.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The server kind of the last good reading.
    server: Option<ServerKind>,
    /// Its figures.
    figures: Figures,
    /// The decode speed.
    decode: Option<DecodeRate>,
    /// The GPU side.
    gpu: Arc<GpuView>,
    /// The last scrape error.
    error: Option<Arc<str>>,
    /// When the figures were read, on the wall clock.
    updated_unix_ms: Option<u64>,
    /// The ORCA header value, when there are figures to report.
    orca: Option<HeaderValue>,
    /// When the figures were read.
    figures_at: Option<Instant>,
    stale_after: Duration,
}

/// What `/orca` should answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrcaReport {
    /// Fresh figures.
    Fresh(HeaderValue),
    /// No figures yet, or only stale ones.
    Unavailable(&'static str),
}

// === impl Rendered ===

impl Rendered {
    /// Renders `state`. Pure apart from allocation.
    pub fn render(state: &State, stale_after: Duration) -> Rendered {
        let good = state.last_good.as_ref();
        Rendered {
            server: good.map(|g| g.kind),
            figures: good.map(|g| g.figures).unwrap_or_default(),
            decode: state.decode,
            gpu: state.gpu.clone(),
            error: state.last_error.as_deref().map(Arc::from),
            updated_unix_ms: good.map(|g| unix_ms(g.at_wall)),
            orca: good.and_then(|g| orca_value(&g.figures, state.decode.as_ref(), state.gpu.snapshot.as_deref())),
            figures_at: good.map(|g| g.at),
            stale_after,
        }
    }

    /// How old the figures are at `now`.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.figures_at.map(|at| now.saturating_duration_since(at))
    }

    /// Whether the figures are missing or older than the stale-after limit at `now`.
    pub fn is_stale(&self, now: Instant) -> bool {
        self.age(now).is_none_or(|age| age > self.stale_after)
    }

    /// Whether a good reading has ever been made.
    pub fn has_figures(&self) -> bool {
        self.figures_at.is_some()
    }

    /// The `/load` document at `now`, borrowing from the snapshot.
    pub fn load_doc(&self, now: Instant) -> LoadDoc<'_, &GpuSnapshot> {
        LoadDoc {
            server: self.server.map(|k| Cow::Borrowed(k.as_str())),
            queue_depth: self.figures.queue_depth,
            running: self.figures.running,
            kv_cache_usage: self.figures.kv_cache_usage,
            decode_tokens_per_s: self.decode.and_then(|d| d.tokens_per_s).map(round_rate),
            token_time_ms: self.decode.and_then(|d| d.token_time).map(micros_as_ms),
            decode_age_ms: self.decode.map(|d| now.saturating_duration_since(d.at).as_millis() as f64),
            gpu: self.gpu.snapshot.as_deref(),
            gpu_status: self.gpu.status.as_deref().map(Cow::Borrowed),
            error: self.error.as_deref().map(Cow::Borrowed),
            updated_unix_ms: self.updated_unix_ms,
            ..LoadDoc::default()
        }
        .with_age(self.age(now), self.is_stale(now))
    }

    /// The `/load` body at `now`: [`Rendered::load_doc`] as JSON.
    pub fn load_body(&self, now: Instant) -> Bytes {
        let mut buf = Vec::with_capacity(256);
        // Plain fields and a derived GPU section: serializing cannot fail, but stay total.
        match serde_json::to_writer(&mut buf, &self.load_doc(now)) {
            Ok(()) => Bytes::from(buf),
            Err(_) => Bytes::from_static(b"{}"),
        }
    }

    /// The `/orca` answer at `now`.
    pub fn orca(&self, now: Instant) -> OrcaReport {
        match &self.orca {
            None => OrcaReport::Unavailable("no load figures yet"),
            Some(_) if self.is_stale(now) => OrcaReport::Unavailable("load figures are stale"),
            Some(v) => OrcaReport::Fresh(v.clone()),
        }
    }
}

/// A rate to the hundredth of a token per second.
fn round_rate(tokens_per_s: f64) -> f64 {
    (tokens_per_s * 100.0).round() / 100.0
}

/// A duration in milliseconds, to the microsecond.
fn micros_as_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// The ORCA `endpoint-load-metrics` value in TEXT form, e.g.
/// `TEXT named_metrics.queue_depth=3, named_metrics.running=5, named_metrics.kv_cache_usage=0.42,
/// named_metrics.decode_tokens_per_s=412.5, named_metrics.token_time_ms=12.121`.
/// Figures the server does not report are left out. `None` when nothing is known.
pub fn orca_value(figures: &Figures, decode: Option<&DecodeRate>, gpu: Option<&GpuSnapshot>) -> Option<HeaderValue> {
    let named = [
        ("queue_depth", figures.queue_depth),
        ("running", figures.running),
        ("kv_cache_usage", figures.kv_cache_usage),
        ("decode_tokens_per_s", decode.and_then(|d| d.tokens_per_s).map(round_rate)),
        ("token_time_ms", decode.and_then(|d| d.token_time).map(micros_as_ms)),
        ("gpu_utilization", gpu.and_then(|g| g.utilization)),
    ];
    let mut text = String::from("TEXT");
    let mut first = true;
    for (name, value) in named {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        text.push_str(if first { " " } else { ", " });
        first = false;
        // `Display` for f64 writes the shortest form that reads back exactly: `3`, `0.42`.
        let _ = write!(text, "named_metrics.{name}={v}");
    }
    if first {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(at: Instant) -> GoodReading {
        GoodReading {
            kind: ServerKind::Vllm,
            figures: Figures { queue_depth: Some(3.0), running: Some(5.0), kv_cache_usage: Some(0.42) },
            at,
            at_wall: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    fn json(r: &Rendered, now: Instant) -> serde_json::Value {
        serde_json::from_slice(&r.load_body(now)).expect("valid JSON")
    }

    #[test]
    fn before_any_reading_everything_is_null_and_stale() {
        let r = Rendered::render(&State::default(), Duration::from_secs(1));
        let v = json(&r, Instant::now());
        assert_eq!(
            v,
            serde_json::json!({
                "server": null, "queue_depth": null, "running": null, "kv_cache_usage": null,
                "decode_tokens_per_s": null, "token_time_ms": null, "decode_age_ms": null, "gpu": null, "gpu_status": null, "error": null, "updated_unix_ms": null,
                "age_ms": null, "age_us": null, "stale": true
            })
        );
        assert_eq!(r.orca(Instant::now()), OrcaReport::Unavailable("no load figures yet"));
        assert!(!r.has_figures());
    }

    #[test]
    fn fresh_figures_render_as_json_and_orca() {
        let t0 = Instant::now();
        let state = State { last_good: Some(good(t0)), ..State::default() };
        let r = Rendered::render(&state, Duration::from_secs(1));
        let now = t0 + Duration::from_millis(12);
        let v = json(&r, now);
        assert_eq!(v["server"], "vllm");
        assert!(r.load_body(now).windows(15).any(|w| w == b"\"queue_depth\":3"), "an integer, not 3.0");
        assert_eq!(v["running"], 5);
        assert_eq!(v["kv_cache_usage"], 0.42);
        assert_eq!(v["age_ms"], 12);
        assert_eq!(v["age_us"], 12_000);
        assert_eq!(v["stale"], false);
        assert_eq!(v["updated_unix_ms"], 1_700_000_000_123u64);
        let OrcaReport::Fresh(h) = r.orca(now) else { panic!("expected a report") };
        assert_eq!(
            h.to_str().unwrap(),
            "TEXT named_metrics.queue_depth=3, named_metrics.running=5, named_metrics.kv_cache_usage=0.42"
        );
        // What the proxy reads back with the shared type.
        let (report, age) = vane_runtime::load_doc::parse_report(&r.load_body(now)).expect("fresh figures");
        assert_eq!((report.queue_depth, report.running, report.kv_use), (Some(3.0), Some(5.0), Some(0.42)));
        assert_eq!(age, Duration::from_millis(12));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(vane_runtime::load_doc::parse_report(&r.load_body(later)), None, "stale figures are not used");
    }

    #[test]
    fn old_figures_are_kept_but_marked_stale() {
        let t0 = Instant::now();
        let state =
            State { last_good: Some(good(t0)), last_error: Some("connection refused".into()), ..State::default() };
        let r = Rendered::render(&state, Duration::from_millis(100));
        let later = t0 + Duration::from_millis(101);
        let v = json(&r, later);
        assert_eq!(v["queue_depth"], 3);
        assert_eq!(v["stale"], true);
        assert_eq!(v["error"], "connection refused");
        assert!(r.is_stale(later));
        assert_eq!(r.orca(later), OrcaReport::Unavailable("load figures are stale"));
        assert!(!r.is_stale(t0 + Duration::from_millis(100)), "the limit itself is still fresh");
    }

    #[test]
    fn gpu_section_and_status_are_rendered() {
        let t0 = Instant::now();
        let gpu = crate::gpu::merge(
            &[crate::gpu::NvmlDevice { index: 0, utilization_percent: Some(90), ..Default::default() }],
            &[],
            5,
        );
        let state = State {
            last_good: Some(good(t0)),
            gpu: Arc::new(GpuView { snapshot: Some(Arc::new(gpu)), status: None }),
            ..State::default()
        };
        let r = Rendered::render(&state, Duration::from_secs(1));
        let v = json(&r, t0);
        assert_eq!(v["gpu"]["count"], 1);
        assert_eq!(v["gpu"]["utilization"], 0.9);
        let OrcaReport::Fresh(h) = r.orca(t0) else { panic!("expected a report") };
        assert!(h.to_str().unwrap().ends_with(", named_metrics.gpu_utilization=0.9"));

        let none =
            State { gpu: Arc::new(GpuView { snapshot: None, status: Some("no GPU driver found".into()) }), ..state };
        let v = json(&Rendered::render(&none, Duration::from_secs(1)), t0);
        assert_eq!(v["gpu"], serde_json::Value::Null);
        assert_eq!(v["gpu_status"], "no GPU driver found");
    }

    #[test]
    fn orca_leaves_out_what_is_unknown() {
        let tgi = Figures { queue_depth: Some(2.0), running: Some(1.0), kv_cache_usage: None };
        assert_eq!(orca_value(&tgi, None, None).unwrap(), "TEXT named_metrics.queue_depth=2, named_metrics.running=1");
        assert_eq!(orca_value(&Figures::default(), None, None), None);
    }

    #[test]
    fn the_decode_speed_is_served_with_its_age() {
        let t0 = Instant::now();
        let decode = DecodeRate {
            tokens_per_s: Some(412.345_678),
            token_time: Some(Duration::from_nanos(12_121_212)),
            token_time_source: Some(crate::decode::TokenTimeSource::Counter),
            at: t0,
        };
        let state = State { last_good: Some(good(t0)), decode: Some(decode), ..State::default() };
        let r = Rendered::render(&state, Duration::from_secs(1));
        // An idle server: the figures are fresh, the speed is 3 s old.
        let later = t0 + Duration::from_millis(3000);
        let fresh = State { last_good: Some(GoodReading { at: later, ..good(t0) }), ..state.clone() };
        let r2 = Rendered::render(&fresh, Duration::from_secs(1));
        let v = json(&r2, later);
        assert_eq!(v["decode_tokens_per_s"], 412.35);
        assert_eq!(v["token_time_ms"], 12.121);
        assert_eq!(v["decode_age_ms"], 3000);
        assert_eq!(v["age_ms"], 0);
        let OrcaReport::Fresh(h) = r.orca(t0) else { panic!("expected a report") };
        assert_eq!(
            h.to_str().unwrap(),
            "TEXT named_metrics.queue_depth=3, named_metrics.running=5, named_metrics.kv_cache_usage=0.42, \
             named_metrics.decode_tokens_per_s=412.35, named_metrics.token_time_ms=12.121"
        );
        // What the proxy reads back.
        let (report, _) = vane_runtime::load_doc::parse_report(&r2.load_body(later)).unwrap();
        assert_eq!(report.decode_rate, Some(412.35));
        assert_eq!(report.token_time, Some(Duration::from_micros(12_121)));
        let back = vane_route::orca::parse(h.as_bytes()).unwrap();
        assert_eq!((back.decode_rate, back.token_time), (report.decode_rate, report.token_time));
    }
}
