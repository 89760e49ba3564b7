//! What is known of one request when it ends: the fields of its span, its access log line and
//! its model metrics, gathered in one place so that the three say the same.

use super::context::SpanIds;
use crate::metrics::Direction;
use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The request line, kept only for a traced or logged request.
#[derive(Clone, Debug)]
pub struct RequestLine {
    /// `http.request.method`.
    pub method: http::Method,
    /// `url.path`.
    pub path: String,
    /// `server.address`: the authority the request named.
    pub host: String,
}

/// The span of a traced request: its ids and its parent's.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// This span's ids (its trace, its own id).
    pub ids: SpanIds,
    /// The caller's span, when the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Record {
    /// Which listener.
    pub direction: Direction,
    /// When it came in (wall clock, for the span).
    pub start: SystemTime,
    /// The request line (traced or logged requests only).
    pub line: Option<RequestLine>,
    /// Its span, when traced.
    pub span: Option<Span>,
    /// The service, route and backend it went to.
    pub service: Option<Arc<str>>,
    /// The route.
    pub route: Option<Arc<str>>,
    /// The backend (`-` when not routed).
    pub backend: Arc<str>,
    /// The endpoint, when known (a backend of one, or an answer that names it).
    pub endpoint: Option<String>,
    /// The model (label value: capped).
    pub model: Arc<str>,
    /// The caller (label value: capped).
    pub caller: Arc<str>,
    /// The answer's status.
    pub status: u16,
    /// The proxy's own error reason, if it answered.
    pub error: &'static str,
    /// Attempts (`vane-proxy-attempts`, 1 without it).
    pub attempts: u32,
    /// A hedge sent for it: when, and whether its answer was kept.
    pub hedge: Option<crate::hedge::Hedged>,
    /// Answered from another request's upstream call.
    pub coalesced: bool,
    /// Time to the answer's head.
    pub head: Duration,
    /// Time to the first body byte, if any came.
    pub first_byte: Option<Duration>,
    /// Time to the body's end (or its break).
    pub end: Duration,
    /// The body ended cleanly.
    pub complete: bool,
    /// Reported prompt tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens (reported, else counted).
    pub output_tokens: Option<u64>,
    /// GPU-seconds apportioned.
    pub gpu_seconds: Option<f64>,
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

impl Record {
    /// The span of a traced request.
    pub fn span_data(&self, span: &Span, scope: &InstrumentationScope) -> SpanData {
        let mut attrs = Vec::with_capacity(20);
        let method = self.line.as_ref().map_or("_OTHER", |l| l.method.as_str());
        if let Some(l) = &self.line {
            attrs.push(kv("http.request.method", l.method.to_string()));
            attrs.push(kv("url.path", l.path.clone()));
            attrs.push(kv("server.address", l.host.clone()));
        }
        attrs.push(kv("http.response.status_code", i64::from(self.status)));
        if &*self.model != "-" {
            attrs.push(kv("gen_ai.request.model", self.model.to_string()));
        }
        if let Some(n) = self.input_tokens {
            attrs.push(kv("gen_ai.usage.input_tokens", n as i64));
        }
        if let Some(n) = self.output_tokens {
            attrs.push(kv("gen_ai.usage.output_tokens", n as i64));
        }
        if let Some(s) = &self.service {
            attrs.push(kv("vane.service", s.to_string()));
        }
        if let Some(r) = &self.route {
            attrs.push(kv("vane.route", r.to_string()));
        }
        attrs.push(kv("vane.backend", self.backend.to_string()));
        if let Some(e) = &self.endpoint {
            attrs.push(kv("vane.endpoint", e.clone()));
        }
        attrs.push(kv("vane.caller", self.caller.to_string()));
        attrs.push(kv("vane.retries", i64::from(self.attempts.saturating_sub(1))));
        attrs.push(kv("vane.coalesced", self.coalesced));
        if let Some(t) = self.first_byte {
            attrs.push(kv("vane.time_to_first_byte_ms", t.as_secs_f64() * 1e3));
        }
        if !self.error.is_empty() {
            attrs.push(kv("error.type", self.error));
        }
        let mut events = SpanEvents::default();
        if self.attempts > 1 {
            let at = self.start + self.head;
            events.events.push(Event::new("retried", at, vec![kv("vane.attempts", i64::from(self.attempts))], 0));
        }
        if let Some(h) = self.hedge {
            let at = self.start + h.after;
            events.events.push(Event::new("hedged", at, vec![kv("vane.hedge_won", h.won)], 0));
        }
        // Semantic conventions: a 4xx is an error of a client span, not of a server span.
        let failed = match self.direction {
            Direction::Outbound => self.status >= 400,
            Direction::Inbound => self.status >= 500,
        };
        let status = if failed {
            Status::error(if self.error.is_empty() { "server error" } else { self.error })
        } else {
            Status::Unset
        };
        let name = match &self.route {
            Some(r) => format!("{method} {r}"),
            None => method.to_string(),
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(span.ids.trace),
                SpanId::from_bytes(span.ids.span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: span.parent.is_some(),
            span_kind: match self.direction {
                Direction::Outbound => SpanKind::Client,
                Direction::Inbound => SpanKind::Server,
            },
            name: name.into(),
            start_time: self.start,
            end_time: self.start + self.end,
            attributes: attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    /// The access log line (JSON, no newline).
    pub fn json_line(&self) -> String {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let time = self.start.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let v = serde_json::json!({
            "time": (time * 1e3).round() / 1e3,
            "direction": match self.direction { Direction::Outbound => "outbound", Direction::Inbound => "inbound" },
            "method": self.line.as_ref().map(|l| l.method.as_str()),
            "path": self.line.as_ref().map(|l| l.path.as_str()),
            "host": self.line.as_ref().map(|l| l.host.as_str()),
            "status": self.status,
            "error": (!self.error.is_empty()).then_some(self.error),
            "service": self.service.as_deref(),
            "route": self.route.as_deref(),
            "backend": &*self.backend,
            "endpoint": self.endpoint.as_deref(),
            "model": &*self.model,
            "caller": &*self.caller,
            "attempts": self.attempts,
            "coalesced": self.coalesced,
            "hedged": self.hedge.map(|h| if h.won { "won" } else { "lost" }),
            "head_ms": ms(self.head),
            "ttfb_ms": self.first_byte.map(ms),
            "duration_ms": ms(self.end),
            "complete": self.complete,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "gpu_seconds": self.gpu_seconds,
            "trace_id": self.span.map(|s| hex(&s.ids.trace)),
            "span_id": self.span.map(|s| hex(&s.ids.span)),
        });
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hedge::Hedged;

    fn record(attempts: u32, hedge: Option<Hedged>) -> Record {
        Record {
            direction: Direction::Outbound,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
            line: None,
            span: None,
            service: None,
            route: None,
            backend: "b".into(),
            endpoint: None,
            model: "-".into(),
            caller: "-".into(),
            status: 200,
            error: "",
            attempts,
            hedge,
            coalesced: false,
            head: Duration::from_millis(150),
            first_byte: None,
            end: Duration::from_millis(300),
            complete: true,
            input_tokens: None,
            output_tokens: None,
            gpu_seconds: None,
        }
    }

    #[test]
    fn retries_and_hedges_are_span_events_at_their_time() {
        let span = Span { ids: SpanIds { trace: [1; 16], span: [2; 8], sampled: true }, parent: None };
        let scope = InstrumentationScope::builder("t").build();
        let names = |r: &Record| {
            let d = r.span_data(&span, &scope);
            d.events.events.iter().map(|e| (e.name.to_string(), e.timestamp)).collect::<Vec<_>>()
        };
        assert!(names(&record(1, None)).is_empty());
        let hedge = Hedged { after: Duration::from_millis(100), won: true };
        let r = record(2, Some(hedge));
        let start = r.start;
        assert_eq!(
            names(&r),
            [
                ("retried".to_string(), start + Duration::from_millis(150)),
                ("hedged".to_string(), start + Duration::from_millis(100))
            ]
        );
        let line: serde_json::Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(line["hedged"], "won");
        assert!(serde_json::from_str::<serde_json::Value>(&record(1, None).json_line()).unwrap()["hedged"].is_null());
    }
}
