//! Watching an answer's body as it streams: the balancer's [`Completion`] of the body is wrapped
//! in a [`Watch`] that times the first byte and the end, scans each chunk for usage (a model
//! answer only: nothing is copied but the usage object itself), and hands the finished
//! [`Record`] to the [`Observer`] when the body ends or breaks off.

use super::model::RequestInfo;
use super::observer::{Observer, Ticket};
use super::record::Record;
use crate::body::{Completion, RespBody, RespError};
use crate::metrics::kserve::AnswerCopy;
use crate::metrics::usage::UsageScanner;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What kind of answer it is, by its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `application/json` (or `+json`): usage in the body.
    Json,
    /// `text/event-stream`: tokens as events, usage in a late event.
    Sse,
    /// Anything else: not a model answer.
    Other,
}

impl Kind {
    /// The kind of an answer with these headers.
    pub fn of(h: &http::HeaderMap) -> Kind {
        let Some(ct) = h.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()) else {
            return Kind::Other;
        };
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let is = |p: &[u8]| essence.eq_ignore_ascii_case(p);
        if is(b"text/event-stream") {
            Kind::Sse
        } else if is(b"application/json")
            || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
        {
            Kind::Json
        } else {
            Kind::Other
        }
    }
}

/// Observes one answer's body.
#[derive(Debug)]
pub struct Watch {
    inner: Option<Box<dyn Completion>>,
    observer: Arc<Observer>,
    start: Instant,
    record: Option<Record>,
    scan: Option<UsageScanner>,
    /// A KServe JSON answer's copy, for its token count.
    kserve: Option<AnswerCopy>,
    ticket: Option<Arc<Ticket>>,
    kind: Kind,
    log: bool,
}

impl Watch {
    /// Watches the body of a request that started at `start`, in front of the balancer's `inner`.
    pub fn new(
        inner: Option<Box<dyn Completion>>,
        observer: Arc<Observer>,
        start: Instant,
        mut record: Record,
        info: RequestInfo,
        kind: Kind,
        log: bool,
    ) -> Watch {
        let scan = (kind != Kind::Other).then(|| UsageScanner::new(kind == Kind::Sse));
        let kserve = (info.kserve && kind == Kind::Json).then(AnswerCopy::default);
        record.input_tokens = info.input_tokens;
        let ticket = info.ticket;
        Watch { inner, observer, start, record: Some(record), scan, kserve, ticket, kind, log }
    }

    /// The answer is over (`complete`: cleanly): the record goes to the observer.
    pub fn end(&mut self, complete: bool) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        let now = Instant::now();
        r.end = now.saturating_duration_since(self.start);
        r.complete = complete;
        if let Some(s) = &self.scan {
            let usage = s.usage();
            r.input_tokens = usage.map(|u| u.input).or(r.input_tokens);
            r.output_tokens = match (&self.kserve, usage) {
                (Some(copy), None) => copy.output_tokens(),
                _ => s.output_tokens(),
            };
        }
        let gpu = self.ticket.take().and_then(|t| t.leave(now));
        // A follower's answer cost the backend nothing of its own.
        r.gpu_seconds = if r.coalesced { None } else { gpu };
        self.observer.finish(&r, self.kind != Kind::Other, self.kind == Kind::Sse, self.log);
    }
}

impl Completion for Watch {
    fn data(&mut self, chunk: &Bytes) {
        if let Some(r) = &mut self.record
            && r.first_byte.is_none()
        {
            r.first_byte = Some(self.start.elapsed());
        }
        if let Some(s) = &mut self.scan {
            s.chunk(chunk);
        }
        if let Some(c) = &mut self.kserve {
            c.chunk(chunk);
        }
        if let Some(i) = &mut self.inner {
            i.data(chunk);
        }
    }

    fn finish(mut self: Box<Self>) {
        if let Some(i) = self.inner.take() {
            i.finish();
        }
        self.end(true);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// A body the balancer does not watch (a shared answer, streamed from its group's buffer),
/// watched on its way to the client.
#[derive(Debug)]
pub struct Watched {
    inner: RespBody,
    watch: Option<Box<Watch>>,
}

impl Watched {
    /// `inner`, with `watch` told of its chunks and its end.
    pub fn new(inner: RespBody, watch: Watch) -> Watched {
        Watched { inner, watch: Some(Box::new(watch)) }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = RespError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RespError>>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_frame(cx);
        match &p {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(w), Some(chunk)) = (this.watch.as_mut(), frame.data_ref()) {
                    w.data(chunk);
                }
                if this.inner.is_end_stream()
                    && let Some(w) = this.watch.take()
                {
                    w.finish();
                }
            }
            Poll::Ready(None) => {
                if let Some(w) = this.watch.take() {
                    w.finish();
                }
            }
            // Dropping the watch ends it as broken off.
            Poll::Ready(Some(Err(_))) => drop(this.watch.take()),
            Poll::Pending => {}
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn kinds_by_content_type() {
        let k = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("content-type", ct.parse().unwrap());
            Kind::of(&h)
        };
        assert_eq!(k("application/json"), Kind::Json);
        assert_eq!(k("Application/JSON; charset=utf-8"), Kind::Json);
        assert_eq!(k("application/problem+json"), Kind::Json);
        assert_eq!(k("text/event-stream"), Kind::Sse);
        assert_eq!(k("text/plain"), Kind::Other);
        assert_eq!(k("application/grpc"), Kind::Other);
        assert_eq!(Kind::of(&http::HeaderMap::new()), Kind::Other);
    }
}
