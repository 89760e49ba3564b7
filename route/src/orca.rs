//! ORCA load reports in the `endpoint-load-metrics` response header.
//!
//! An endpoint (vLLM natively, or Vane's inbound proxy for any model server) tells each caller
//! its load with every response, so a caller learns load at no extra cost. Two encodings are
//! read here: `TEXT key=value, key=value` and `JSON {...}` (the third, base64 protobuf `BIN`,
//! is ignored). Model-server figures travel as `named_metrics.*`; several spellings in use are
//! accepted for each figure.
//!
//! Besides the queue and the KV cache, a report may carry how fast the endpoint decodes:
//! `named_metrics.decode_tokens_per_s` (tokens generated per second, all streams together) and
//! `named_metrics.token_time_ms` (milliseconds per output token for one stream). `vane-gpu-probe`
//! measures both from the model server's own counters, so a slow GPU shows before any answer
//! ends.

use std::time::Duration;

/// The response header that carries an ORCA load report.
pub const HEADER: &str = "endpoint-load-metrics";

/// The request header that asks for a load report on the answer, and in which form (`TEXT` or
/// `JSON`): vLLM sends [`HEADER`] only when the request carries it.
pub const FORMAT_HEADER: &str = "endpoint-load-metrics-format";

/// Load figures an endpoint reported about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Requests waiting in the server's own queue.
    pub queue_depth: Option<f64>,
    /// Requests the server is running (its batch).
    pub running: Option<f64>,
    /// KV-cache use, 0..1.
    pub kv_use: Option<f64>,
    /// How old the figures already were when the report was made.
    pub age: Option<Duration>,
    /// Time per output token for one stream (seconds per token of a single request).
    pub token_time: Option<Duration>,
    /// Tokens the endpoint generates per second, all its streams together.
    pub decode_rate: Option<f64>,
}

impl LoadReport {
    /// Whether the report carries any load figure (a decode speed alone counts as one).
    pub fn is_empty(&self) -> bool {
        self.queue_depth.is_none()
            && self.running.is_none()
            && self.kv_use.is_none()
            && self.token_time.is_none()
            && self.decode_rate.is_none()
    }

    fn set(&mut self, key: &str, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let key = key.strip_prefix("named_metrics.").unwrap_or(key);
        match key {
            "queue_depth" | "num_requests_waiting" | "waiting" | "queue_size" => self.queue_depth = Some(value),
            "running" | "num_requests_running" => self.running = Some(value),
            "kv_cache_usage" | "kv_cache_usage_perc" | "kv_cache_utilization" | "gpu_cache_usage_perc" => {
                self.kv_use = Some(value.min(1.0))
            }
            "age_ms" => {
                if let Some(age) = from_millis(value) {
                    self.age = Some(age);
                }
            }
            // A stream cannot take no time per token.
            "token_time_ms" => {
                if let Some(t) = from_millis(value).filter(|t| !t.is_zero()) {
                    self.token_time = Some(t);
                }
            }
            "decode_tokens_per_s" => self.decode_rate = Some(value),
            _ => {}
        }
    }
}

/// Parses an `endpoint-load-metrics` value. `None` when it is not TEXT or JSON, or has no figure.
pub fn parse(value: &[u8]) -> Option<LoadReport> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut report = LoadReport::default();
    if let Some(rest) = text.strip_prefix("TEXT") {
        for pair in rest.split(',') {
            let Some((k, v)) = pair.split_once('=') else { continue };
            if let Ok(v) = v.trim().parse::<f64>() {
                report.set(k.trim(), v);
            }
        }
    } else if let Some(rest) = text.strip_prefix("JSON") {
        let json: serde_json::Value = serde_json::from_str(rest.trim()).ok()?;
        let obj = json.as_object()?;
        for (k, v) in obj {
            if let Some(v) = v.as_f64() {
                report.set(k, v);
            }
        }
        if let Some(named) = obj.get("named_metrics").and_then(|n| n.as_object()) {
            for (k, v) in named {
                if let Some(v) = v.as_f64() {
                    report.set(k, v);
                }
            }
        }
    } else {
        return None;
    }
    (!report.is_empty()).then_some(report)
}

/// Formats a report in TEXT form (what Vane's inbound proxy attaches).
pub fn format(r: &LoadReport) -> String {
    let mut parts = Vec::with_capacity(4);
    if let Some(q) = r.queue_depth {
        parts.push(format!("named_metrics.queue_depth={q}"));
    }
    if let Some(x) = r.running {
        parts.push(format!("named_metrics.running={x}"));
    }
    if let Some(k) = r.kv_use {
        parts.push(format!("named_metrics.kv_cache_usage={k:.4}"));
    }
    if let Some(a) = r.age {
        parts.push(format!("named_metrics.age_ms={}", millis(a)));
    }
    if let Some(d) = r.decode_rate {
        parts.push(format!("named_metrics.decode_tokens_per_s={d}"));
    }
    if let Some(t) = r.token_time {
        parts.push(format!("named_metrics.token_time_ms={}", millis(t)));
    }
    format!("TEXT {}", parts.join(", "))
}

/// A duration given in milliseconds, to the nanosecond; `None` when it does not fit.
fn from_millis(ms: f64) -> Option<Duration> {
    let ns = (ms * 1e6).round();
    (ns >= 0.0 && ns < u64::MAX as f64).then(|| Duration::from_nanos(ns as u64))
}

/// Milliseconds to the microsecond, without trailing zeros: `7`, `0.412`, `12.5`.
fn millis(d: Duration) -> String {
    let us = d.as_micros();
    let (whole, frac) = (us / 1000, us % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let mut s = format!("{whole}.{frac:03}");
    while s.ends_with('0') {
        s.pop();
    }
    s
}

/// The wait a `Retry-After` header asks for (seconds form; an HTTP date is not followed).
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim();
    let secs: u64 = s.parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_reports() {
        let r =
            parse(b"TEXT named_metrics.queue_depth=3, named_metrics.kv_cache_usage=0.42, cpu_utilization=0.3").unwrap();
        assert_eq!(r.queue_depth, Some(3.0));
        assert_eq!(r.kv_use, Some(0.42));
        assert_eq!(r.running, None);
        let r = parse(
            b"TEXT named_metrics.num_requests_waiting=7,named_metrics.num_requests_running=20, named_metrics.age_ms=4",
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.running), (Some(7.0), Some(20.0)));
        assert_eq!(r.age, Some(Duration::from_millis(4)));
    }

    #[test]
    fn parses_json_reports() {
        let r = parse(
            br#"JSON {"cpu_utilization": 0.5, "named_metrics": {"queue_depth": 2, "kv_cache_utilization": 0.9}}"#,
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.kv_use), (Some(2.0), Some(0.9)));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            &b"BIN CgQIARAB"[..],
            b"",
            b"TEXT",
            b"TEXT cpu_utilization=0.4",
            b"JSON {not json",
            b"TEXT named_metrics.queue_depth=-1",
            b"TEXT named_metrics.queue_depth=NaN",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // values out of range are clamped or dropped, never trusted blindly
        assert_eq!(parse(b"TEXT named_metrics.kv_cache_usage=7").unwrap().kv_use, Some(1.0));
    }

    #[test]
    fn format_round_trips() {
        let r = LoadReport {
            queue_depth: Some(3.0),
            running: Some(12.0),
            kv_use: Some(0.5),
            age: Some(Duration::from_millis(7)),
            token_time: Some(Duration::from_micros(31_250)),
            decode_rate: Some(412.5),
        };
        let text = format(&r);
        assert_eq!(
            text,
            "TEXT named_metrics.queue_depth=3, named_metrics.running=12, named_metrics.kv_cache_usage=0.5000, \
             named_metrics.age_ms=7, named_metrics.decode_tokens_per_s=412.5, named_metrics.token_time_ms=31.25"
        );
        assert_eq!(parse(text.as_bytes()), Some(r));
        // sub-millisecond ages keep their microseconds, so a fresh figure does not read as 0
        for (us, text) in [(412, "0.412"), (12_500, "12.5"), (1_000_001, "1000.001")] {
            let r = LoadReport { queue_depth: Some(1.0), age: Some(Duration::from_micros(us)), ..Default::default() };
            assert_eq!(format(&r), format!("TEXT named_metrics.queue_depth=1, named_metrics.age_ms={text}"));
            let back = parse(format(&r).as_bytes()).unwrap().age.unwrap();
            assert_eq!((back.as_secs_f64() * 1e6).round() as u64, us);
        }
    }

    #[test]
    fn decode_speed_is_read_from_every_form() {
        let text = parse(b"TEXT named_metrics.token_time_ms=25, named_metrics.decode_tokens_per_s=1200").unwrap();
        let bare = parse(b"TEXT token_time_ms=25, decode_tokens_per_s=1200").unwrap();
        let json = parse(br#"JSON {"named_metrics": {"token_time_ms": 25, "decode_tokens_per_s": 1200}}"#).unwrap();
        let top = parse(br#"JSON {"token_time_ms": 25.0, "decode_tokens_per_s": 1200.0}"#).unwrap();
        for r in [text, bare, json, top] {
            assert_eq!((r.token_time, r.decode_rate), (Some(Duration::from_millis(25)), Some(1200.0)), "{r:?}");
            assert_eq!((r.queue_depth, r.running, r.kv_use), (None, None, None));
            assert!(!r.is_empty(), "a decode speed alone is a report");
        }
        // Only one of them is enough too.
        assert_eq!(parse(b"TEXT named_metrics.decode_tokens_per_s=0").unwrap().decode_rate, Some(0.0));
        assert_eq!(
            parse(b"TEXT named_metrics.token_time_ms=0.04").unwrap().token_time,
            Some(Duration::from_micros(40))
        );
    }

    #[test]
    fn decode_speed_out_of_range_is_dropped() {
        for bad in [
            &b"TEXT named_metrics.token_time_ms=0"[..],
            b"TEXT named_metrics.token_time_ms=-3",
            b"TEXT named_metrics.token_time_ms=1e300",
            b"TEXT named_metrics.token_time_ms=inf",
            b"TEXT named_metrics.decode_tokens_per_s=-1",
            b"TEXT named_metrics.decode_tokens_per_s=NaN",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // An age too large for a duration is dropped rather than trusted (or panicking).
        let r = parse(b"TEXT named_metrics.queue_depth=1, named_metrics.age_ms=1e300").unwrap();
        assert_eq!(r.age, None);
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(retry_after(b"3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
