//! The probe's `/load` document: one type for `vane-gpu-probe`, which writes it, and for the
//! proxy, which reads it (one document from `GET /load`, or one per line from `/load?watch=1`).
//!
//! ```json
//! {"server":"vllm","queue_depth":3,"running":5,"kv_cache_usage":0.42,
//!  "decode_tokens_per_s":412.5,"token_time_ms":12.121,"decode_age_ms":8,"gpu":null,"gpu_status":null,
//!  "error":null,"updated_unix_ms":1700000000123,"age_ms":12,"age_us":12034,"stale":false}
//! ```
//!
//! `decode_tokens_per_s` is how many tokens the server generates per second, all streams
//! together; `token_time_ms` is the time per output token of one stream, in milliseconds. Both
//! come from the model server's own counters over a short window of scrapes. An idle server keeps
//! its last measured speed, and `decode_age_ms` says how old that measurement is.
//!
//! Reading is lenient: unknown fields are ignored, and a field of an unexpected type reads as
//! absent instead of failing the whole document. [`LoadDoc::report`] turns a document into a
//! [`LoadReport`] and the age of its figures.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::time::Duration;
use vane_route::orca::LoadReport;

/// The path the probe serves the document on.
pub const PATH: &str = "/load";

/// The content type of one document.
pub const CONTENT_TYPE: &str = "application/json";

/// The content type of `/load?watch=1`: one document per line.
pub const STREAM_CONTENT_TYPE: &str = "application/x-ndjson";

/// The `/load` document. `G` is the GPU section: the probe writes its own GPU snapshot type, a
/// reader that does not look at it keeps the default, a JSON value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "G: Serialize", deserialize = "G: serde::de::DeserializeOwned"))]
pub struct LoadDoc<'a, G = serde_json::Value> {
    /// The model server kind the figures are read from (`vllm`, `sglang`, `triton`, `tgi`).
    #[serde(default, deserialize_with = "lenient")]
    pub server: Option<Cow<'a, str>>,
    /// Requests waiting in the model server's queue (written as an integer when it is one).
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub queue_depth: Option<f64>,
    /// Requests the model server is running (written as an integer when it is one).
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub running: Option<f64>,
    /// KV-cache use, 0..1.
    #[serde(default, deserialize_with = "lenient")]
    pub kv_cache_usage: Option<f64>,
    /// Tokens generated per second, all streams together (written as an integer when it is one).
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub decode_tokens_per_s: Option<f64>,
    /// Time per output token for one stream, in milliseconds.
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub token_time_ms: Option<f64>,
    /// How old the decode figures are, in milliseconds: an idle server keeps its last measured
    /// speed, so they may be older than the rest.
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub decode_age_ms: Option<f64>,
    /// The GPU section, when the probe reads a GPU.
    #[serde(default, deserialize_with = "lenient")]
    pub gpu: Option<G>,
    /// Why there is no GPU section, when there is none.
    #[serde(default, deserialize_with = "lenient")]
    pub gpu_status: Option<Cow<'a, str>>,
    /// The last scrape error, cleared by the next good scrape.
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<Cow<'a, str>>,
    /// When the figures were read, on the wall clock (Unix milliseconds).
    #[serde(default, deserialize_with = "lenient")]
    pub updated_unix_ms: Option<u64>,
    /// How old the figures are, in milliseconds (written as an integer when it is one).
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub age_ms: Option<f64>,
    /// How old the figures are, in microseconds (written as an integer when it is one).
    #[serde(default, deserialize_with = "lenient", serialize_with = "number")]
    pub age_us: Option<f64>,
    /// Whether the figures are missing or older than the probe's stale limit.
    #[serde(default, deserialize_with = "lenient")]
    pub stale: Option<bool>,
}

impl<G> Default for LoadDoc<'_, G> {
    fn default() -> Self {
        LoadDoc {
            server: None,
            queue_depth: None,
            running: None,
            kv_cache_usage: None,
            decode_tokens_per_s: None,
            token_time_ms: None,
            decode_age_ms: None,
            gpu: None,
            gpu_status: None,
            error: None,
            updated_unix_ms: None,
            age_ms: None,
            age_us: None,
            stale: None,
        }
    }
}

/// A field whose value is not of its type reads as absent.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(Option::<T>::deserialize(v).ok().flatten())
}

/// Writes integral figures as JSON integers (`3`, not `3.0`).
fn number<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => s.serialize_i64(*x as i64),
        Some(x) => s.serialize_f64(*x),
        None => s.serialize_none(),
    }
}

/// Milliseconds as a duration, to the nanosecond; `None` when it does not fit.
fn millis(ms: f64) -> Option<Duration> {
    let ns = (ms * 1e6).round();
    (ns < u64::MAX as f64).then(|| Duration::from_nanos(ns as u64))
}

/// A figure routing can use: finite and not negative.
fn usable(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= 0.0)
}

impl<'a, G> LoadDoc<'a, G> {
    /// The document's age fields for figures `age` old (`None`: no figures yet).
    pub fn with_age(self, age: Option<Duration>, stale: bool) -> LoadDoc<'a, G> {
        LoadDoc {
            age_ms: age.map(|a| a.as_millis() as f64),
            age_us: age.map(|a| a.as_micros() as f64),
            stale: Some(stale),
            ..self
        }
    }

    /// The figures as a load report, and how old they were when the document was written
    /// (`age_us` when present, to the microsecond, else `age_ms`, else zero). `None` when the
    /// document says its figures are stale, or has no usable figure. A figure that is not
    /// finite or is negative counts as absent, and so does a token time of zero. A decode speed
    /// alone is a usable report. The report's own `age` is left `None`.
    pub fn report(&self) -> Option<(LoadReport, Duration)> {
        if self.stale == Some(true) {
            return None;
        }
        let report = LoadReport {
            queue_depth: usable(self.queue_depth),
            running: usable(self.running),
            kv_use: usable(self.kv_cache_usage),
            age: None,
            token_time: usable(self.token_time_ms).and_then(millis).filter(|t| !t.is_zero()),
            decode_rate: usable(self.decode_tokens_per_s),
        };
        let age = match (usable(self.age_us), usable(self.age_ms)) {
            (Some(us), _) => Duration::from_micros(us as u64),
            (None, Some(ms)) => Duration::from_micros((ms * 1e3) as u64),
            (None, None) => Duration::ZERO,
        };
        (!report.is_empty()).then_some((report, age))
    }
}

impl LoadDoc<'static> {
    /// Parses one document (a whole `/load` body or one line of the stream). `None` when it is
    /// not a JSON object. A key given twice counts once, with its last value.
    pub fn from_json(body: &[u8]) -> Option<LoadDoc<'static>> {
        // Through a `Value`, so that a repeated key is its last value rather than an error.
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if !v.is_object() {
            return None;
        }
        LoadDoc::deserialize(v).ok()
    }
}

/// Parses a `/load` document straight into a report and its age: [`LoadDoc::from_json`] then
/// [`LoadDoc::report`].
pub fn parse_report(body: &[u8]) -> Option<(LoadReport, Duration)> {
    LoadDoc::from_json(body)?.report()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn probe_answers() {
        let (r, age) = parse_report(
            br#"{"server":"vllm","queue_depth":5,"running":21,"kv_cache_usage":0.42,"age_ms":3,"stale":false}"#,
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.running, r.kv_use, r.age), (Some(5.0), Some(21.0), Some(0.42), None));
        assert_eq!(age, MS(3));
        assert!(parse_report(br#"{"queue_depth":5,"stale":true}"#).is_none());
        assert!(parse_report(br#"{"queue_depth":null,"running":null,"kv_cache_usage":null}"#).is_none());
        assert!(parse_report(b"not json").is_none());
        assert!(parse_report(b"[1,2]").is_none());
        assert!(parse_report(b"{}").is_none());
    }

    #[test]
    fn age_us_is_preferred_and_ms_may_be_fractional() {
        let (_, age) = parse_report(br#"{"running":1,"age_ms":3,"age_us":3456}"#).unwrap();
        assert_eq!(age, Duration::from_micros(3456));
        let (_, age) = parse_report(br#"{"running":1,"age_ms":2.5}"#).unwrap();
        assert_eq!(age, Duration::from_micros(2500));
        let (_, age) = parse_report(br#"{"running":1,"age_us":-4,"age_ms":7}"#).unwrap();
        assert_eq!(age, MS(7), "a negative age_us is ignored");
        let (_, age) = parse_report(br#"{"running":1}"#).unwrap();
        assert_eq!(age, Duration::ZERO);
    }

    #[test]
    fn odd_fields_read_as_absent_without_losing_the_rest() {
        let (r, _) = parse_report(
            br#"{"queue_depth":-1,"running":"many","kv_cache_usage":0.5,"stale":"no","gpu":[1],"extra":{"x":1},
                 "server":7,"updated_unix_ms":"soon"}"#,
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.running, r.kv_use), (None, None, Some(0.5)));
        let doc = LoadDoc::from_json(br#"{"running":2,"running":3}"#).unwrap();
        assert_eq!(doc.running, Some(3.0), "the last of a repeated key");
    }

    #[test]
    fn the_probe_s_field_names_and_number_forms_are_kept() {
        let doc: LoadDoc<'_, ()> = LoadDoc {
            server: Some("vllm".into()),
            queue_depth: Some(3.0),
            running: Some(5.0),
            kv_cache_usage: Some(1.0),
            updated_unix_ms: Some(1_700_000_000_123),
            ..LoadDoc::default()
        }
        .with_age(Some(Duration::from_micros(12_034)), false);
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(
            json,
            r#"{"server":"vllm","queue_depth":3,"running":5,"kv_cache_usage":1.0,"decode_tokens_per_s":null,"token_time_ms":null,"decode_age_ms":null,"gpu":null,"gpu_status":null,"error":null,"updated_unix_ms":1700000000123,"age_ms":12,"age_us":12034,"stale":false}"#
        );
        let back = LoadDoc::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            back.report(),
            Some((
                LoadReport { queue_depth: Some(3.0), running: Some(5.0), kv_use: Some(1.0), ..LoadReport::default() },
                Duration::from_micros(12_034)
            ))
        );
        let empty: LoadDoc<'_, ()> = LoadDoc::default().with_age(None, true);
        assert!(serde_json::to_string(&empty).unwrap().ends_with(r#""age_ms":null,"age_us":null,"stale":true}"#));
        assert!(
            serde_json::to_string(&LoadDoc::<()> { running: Some(0.5), ..LoadDoc::default() })
                .unwrap()
                .contains(r#""running":0.5"#)
        );
    }

    #[test]
    fn decode_speed_is_carried_into_the_report() {
        let doc: LoadDoc<'_, ()> = LoadDoc {
            running: Some(5.0),
            decode_tokens_per_s: Some(400.0),
            token_time_ms: Some(12.5),
            decode_age_ms: Some(3000.0),
            ..LoadDoc::default()
        }
        .with_age(Some(MS(2)), false);
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains(r#""decode_tokens_per_s":400,"token_time_ms":12.5,"decode_age_ms":3000,"#), "{json}");
        let (r, _) = parse_report(json.as_bytes()).unwrap();
        assert_eq!((r.decode_rate, r.token_time), (Some(400.0), Some(Duration::from_micros(12_500))));

        // Alone they are still a report; odd values read as absent.
        let (r, _) = parse_report(br#"{"token_time_ms":0.25}"#).unwrap();
        assert_eq!((r.token_time, r.decode_rate, r.running), (Some(Duration::from_micros(250)), None, None));
        let (r, _) = parse_report(br#"{"decode_tokens_per_s":0,"token_time_ms":null}"#).unwrap();
        assert_eq!((r.decode_rate, r.token_time), (Some(0.0), None), "a stalled server decodes at 0");
        for odd in [
            &br#"{"token_time_ms":0}"#[..],
            br#"{"token_time_ms":-1,"decode_tokens_per_s":"fast"}"#,
            br#"{"token_time_ms":1e300}"#,
            br#"{"decode_tokens_per_s":-5,"stale":false}"#,
        ] {
            assert_eq!(parse_report(odd), None, "{}", String::from_utf8_lossy(odd));
        }
        let (r, _) = parse_report(br#"{"running":1,"token_time_ms":"slow","decode_tokens_per_s":[1]}"#).unwrap();
        assert_eq!((r.running, r.token_time, r.decode_rate), (Some(1.0), None, None), "the rest survives");
    }
}
