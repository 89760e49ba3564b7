//! The `proxy.observe` and `proxy.tracing` settings, compiled.

use super::Validator;
use crate::config::{Config, TracingConfig};
use http::HeaderName;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How model traffic is observed, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Observe {
    /// The header that names the caller.
    pub caller_header: Option<HeaderName>,
    /// Most distinct caller label values (the rest are `other`).
    pub max_callers: usize,
    /// Most distinct model label values (the rest are `other`).
    pub max_models: usize,
    /// Price of a GPU-hour, by backend name.
    pub gpu_hour_price: HashMap<Arc<str>, f64>,
    /// The access log, when on.
    pub access_log: Option<AccessLog>,
    /// Trace export, when on.
    pub tracing: Option<Tracing>,
}

impl Default for Observe {
    fn default() -> Self {
        Observe {
            caller_header: None,
            max_callers: 100,
            max_models: 100,
            gpu_hour_price: HashMap::new(),
            access_log: None,
            tracing: None,
        }
    }
}

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// The process's standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

/// The access log, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    /// Where lines go.
    pub to: LogTarget,
    /// Share of requests logged (0 to 1).
    pub sample: f64,
}

/// Trace export, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// The OTLP/gRPC collector URL.
    pub otlp: String,
    /// Share of new traces sampled (0 to 1).
    pub sample: f64,
    /// The spans' `service.name`.
    pub service_name: String,
    /// Most spans waiting for export.
    pub max_queue: usize,
    /// Most spans per export call.
    pub max_batch: usize,
    /// Longest wait for a batch to fill.
    pub flush: Duration,
}

/// The most label values a cap may keep.
const MAX_CAP: usize = 10_000;

impl Validator {
    fn share(&mut self, field: &str, v: f64) -> f64 {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            self.err(field.into(), "must be a number from 0 to 1");
            return 0.0;
        }
        v
    }

    pub(super) fn observe(&mut self, config: &Config) -> Observe {
        let o = &config.proxy.observe;
        let caller_header =
            o.caller_header.as_ref().and_then(|h| self.header_name("proxy.observe.caller_header".into(), h));
        for (field, n) in [("proxy.observe.max_callers", o.max_callers), ("proxy.observe.max_models", o.max_models)] {
            if n == 0 || n > MAX_CAP {
                self.err(field.into(), format!("must be from 1 to {MAX_CAP}"));
            }
        }
        let mut gpu_hour_price = HashMap::new();
        for (backend, price) in &o.gpu_hour_price {
            let field = format!("proxy.observe.gpu_hour_price.{backend}");
            if !price.is_finite() || *price < 0.0 {
                self.err(field, "must be a finite number >= 0");
            } else if !config.backends.iter().any(|b| &b.name == backend) {
                self.err(field, format!("no backend named {backend:?}"));
            } else {
                gpu_hour_price.insert(Arc::from(backend.as_str()), *price);
            }
        }
        let access_log = o.access_log.as_ref().map(|a| {
            let sample = self.share("proxy.observe.access_log.sample", a.sample);
            let to = match a.to.as_str() {
                "stderr" => LogTarget::Stderr,
                "" => {
                    self.err("proxy.observe.access_log.to".into(), "must be `stderr` or a file path");
                    LogTarget::Stderr
                }
                path => LogTarget::File(path.into()),
            };
            AccessLog { to, sample }
        });
        let tracing = config.proxy.tracing.as_ref().map(|t| self.tracing(t));
        Observe {
            caller_header,
            max_callers: o.max_callers.clamp(1, MAX_CAP),
            max_models: o.max_models.clamp(1, MAX_CAP),
            gpu_hour_price,
            access_log,
            tracing,
        }
    }

    fn tracing(&mut self, t: &TracingConfig) -> Tracing {
        let ok_url = t
            .otlp
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
        if !ok_url {
            self.err("proxy.tracing.otlp".into(), format!("{:?} is not an http(s)://host:port URL", t.otlp));
        }
        let sample = self.share("proxy.tracing.sample", t.sample);
        if t.service_name.is_empty() {
            self.err("proxy.tracing.service_name".into(), "must not be empty");
        }
        if t.max_queue == 0 || t.max_queue > 1 << 20 {
            self.err("proxy.tracing.max_queue".into(), "must be from 1 to 1048576");
        }
        if t.max_batch == 0 || t.max_batch > t.max_queue.max(1) {
            self.err("proxy.tracing.max_batch".into(), "must be from 1 to max_queue");
        }
        if t.flush.0.is_zero() || t.flush.0 > Duration::from_secs(60) {
            self.err("proxy.tracing.flush".into(), "must be from 1ms to 60s");
        }
        Tracing {
            otlp: t.otlp.clone(),
            sample,
            service_name: t.service_name.clone(),
            max_queue: t.max_queue.clamp(1, 1 << 20),
            max_batch: t.max_batch.clamp(1, t.max_queue.clamp(1, 1 << 20)),
            flush: t.flush.0.clamp(Duration::from_millis(1), Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Table;

    fn errors(yaml: &str) -> String {
        match Table::from_yaml(yaml) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_off() {
        let t = Table::from_yaml("{}").unwrap();
        assert_eq!(t.observe, super::Observe::default());
    }

    #[test]
    fn settings_compile() {
        let t = Table::from_yaml(
            "proxy:\n  observe:\n    caller_header: x-caller\n    max_callers: 3\n    gpu_hour_price: { a: 2.5 }\n    access_log: { to: /tmp/x.log, sample: 0.5 }\n  tracing: { otlp: \"http://127.0.0.1:4317\", sample: 1 }\nbackends:\n  - { name: a, endpoints: [\"127.0.0.1:1\"] }\n",
        )
        .unwrap();
        let o = &t.observe;
        assert_eq!(o.caller_header.as_ref().map(|h| h.as_str()), Some("x-caller"));
        assert_eq!(o.max_callers, 3);
        assert_eq!(o.gpu_hour_price.get("a"), Some(&2.5));
        assert_eq!(o.access_log.as_ref().map(|a| a.sample), Some(0.5));
        let tr = o.tracing.as_ref().unwrap();
        assert_eq!((tr.sample, tr.max_queue, tr.service_name.as_str()), (1.0, 2048, "vane-proxy"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let e = errors(
            "proxy:\n  observe:\n    caller_header: \"bad header\"\n    max_models: 0\n    gpu_hour_price: { nope: 1, a: -1 }\n    access_log: { sample: 2 }\n  tracing: { otlp: \"localhost\", sample: -1, max_queue: 4, max_batch: 8 }\nbackends:\n  - { name: a, endpoints: [\"127.0.0.1:1\"] }\n",
        );
        for field in [
            "proxy.observe.caller_header",
            "proxy.observe.max_models",
            "proxy.observe.gpu_hour_price.nope: no backend",
            "proxy.observe.gpu_hour_price.a",
            "proxy.observe.access_log.sample",
            "proxy.tracing.otlp",
            "proxy.tracing.sample",
            "proxy.tracing.max_batch",
        ] {
            assert!(e.contains(field), "{field} not in {e}");
        }
    }
}
