//! The observe layer, near the top of the stack: it sees every request, answers the proxy made
//! itself included. Per request it starts the span (when tracing is on and the request is
//! sampled, putting the next hop's `traceparent` on it), decides whether to log it, and, when
//! the answer's head comes back, builds its [`Record`] and watches its body
//! ([`Watch`]) for a model answer (JSON or SSE), a traced or a logged request. Any other
//! answer passes untouched: with tracing and the access log off, an answer to a request the
//! model layer found nothing in (no model, no body) costs one extension lookup, and one that is
//! neither JSON nor SSE a content-type check more.

use super::body::{Kind, Watch, Watched};
use super::model::RequestInfo;
use super::observer::Observer;
use super::record::{Record, RequestLine};
use crate::balance::{Attempted, Target};
use crate::body::{BoxedBody, RespBody};
use crate::error::{ATTEMPTS_HEADER, Answered};
use crate::metrics::{Direction, Tag};
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

/// The response header of an answer shared from another request's upstream call.
const COALESCED: &str = "vane-coalesced";

/// Layer for [`ObserveService`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    observer: Arc<Observer>,
    direction: Direction,
}

impl ObserveLayer {
    /// Observes one listener's requests with `observer`.
    pub fn new(observer: Arc<Observer>, direction: Direction) -> ObserveLayer {
        ObserveLayer { observer, direction }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;
    fn layer(&self, inner: S) -> ObserveService<S> {
        ObserveService { inner, observer: Arc::clone(&self.observer), direction: self.direction }
    }
}

/// Spans, model metrics and the access log of each request; see the module docs.
#[derive(Clone, Debug)]
pub struct ObserveService<S> {
    inner: S,
    observer: Arc<Observer>,
    direction: Direction,
}

fn host<B>(req: &Request<B>) -> String {
    match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_string())
            .unwrap_or_default(),
    }
}

impl<S, B> tower::Service<Request<B>> for ObserveService<S>
where
    S: tower::Service<Request<B>, Response = Response<RespBody>>,
{
    type Response = Response<RespBody>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let span = self.observer.begin_span(req.headers_mut());
        let log = self.observer.log_this();
        let line = (span.is_some() || log).then(|| RequestLine {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            host: host(&req),
        });
        // The wall clock only for a span or a log line.
        let wall = line.as_ref().map(|_| SystemTime::now());
        // The caller is its mTLS identity when it has one, else the configured header.
        let caller = match req.extensions().get::<crate::server::PeerIdentity>().and_then(|p| p.0.as_ref()) {
            Some(peer) => Some(peer.text.clone()),
            None => self.observer.caller(req.headers()),
        };
        let pending = Pending {
            observer: Arc::clone(&self.observer),
            direction: self.direction,
            start,
            wall,
            span,
            log,
            line,
            caller,
        };
        Observed { fut: self.inner.call(req), pending: Some(pending) }
    }
}

/// What the request side of the observe layer knows, until the answer's head comes.
#[derive(Debug)]
struct Pending {
    observer: Arc<Observer>,
    direction: Direction,
    start: Instant,
    wall: Option<SystemTime>,
    span: Option<super::record::Span>,
    log: bool,
    line: Option<RequestLine>,
    caller: Option<http::HeaderValue>,
}

pin_project_lite::pin_project! {
    /// The inner answer, observed when its head comes.
    #[derive(Debug)]
    pub struct Observed<F> {
        #[pin]
        fut: F,
        pending: Option<Pending>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response<RespBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = ready!(this.fut.poll(cx));
        Poll::Ready(match (out, this.pending.take()) {
            (Ok(resp), Some(p)) => Ok(answered(resp, p)),
            (out, _) => out,
        })
    }
}

/// The answer's head has come: its record, and its body watched, unless it is of no interest.
fn answered(mut resp: Response<RespBody>, p: Pending) -> Response<RespBody> {
    // Without a span or log line, only a model request's answer is of interest: one the model
    // layer found a model or GPU work in (a body) for.
    if p.line.is_none() && resp.extensions().get::<RequestInfo>().is_none() {
        return resp;
    }
    let kind = Kind::of(resp.headers());
    if kind == Kind::Other && p.line.is_none() {
        return resp;
    }
    let Pending { observer, direction, start, wall, span, log, line, caller } = p;
    let wall = wall.unwrap_or_else(|| SystemTime::now().checked_sub(start.elapsed()).unwrap_or_else(SystemTime::now));
    let info = resp.extensions_mut().remove::<RequestInfo>().unwrap_or_default();
    let ext = resp.extensions();
    let (service, route, backend) = match ext.get::<Tag>() {
        Some(Tag::Route(st)) => {
            (Some(Arc::clone(st.service())), Some(Arc::clone(st.route())), Arc::clone(st.backend()))
        }
        Some(Tag::Service(s)) => (Some(Arc::clone(&s.0)), None, "-".into()),
        None => (None, None, "-".into()),
    };
    let endpoint = ext.get::<Target>().and_then(|t| {
        let eps = &t.backend.endpoints;
        let i = if eps.len() == 1 { Some(0) } else { ext.get::<Attempted>().map(|a| a.0) };
        i.and_then(|i| eps.get(i)).map(|e| e.addr.to_string())
    });
    let h = resp.headers();
    let attempts = h.get(ATTEMPTS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(1);
    let record = Record {
        direction,
        start: wall,
        line,
        span,
        service,
        route,
        backend,
        endpoint,
        model: observer.model_label(info.model.as_deref()),
        caller: observer.caller_label(caller.as_ref()),
        status: resp.status().as_u16(),
        error: ext.get::<Answered>().map_or("", |a| a.0),
        attempts,
        hedge: ext.get::<crate::hedge::Hedged>().copied(),
        coalesced: h.get(COALESCED).is_some_and(|v| v.as_bytes() == b"true"),
        head: start.elapsed(),
        first_byte: None,
        end: Default::default(),
        complete: false,
        input_tokens: None,
        output_tokens: None,
        gpu_seconds: None,
    };
    let body = resp.body_mut();
    match body {
        // The balancer's own watch of the endpoint's body: the observe layer's goes in front.
        RespBody::Upstream { done, .. } if done.is_some() => {
            let w = Watch::new(done.take(), observer, start, record, info, kind, log);
            *done = Some(Box::new(w));
        }
        // A shared answer, from its group's buffer.
        RespBody::Shared(_) => {
            let w = Watch::new(None, observer, start, record, info, kind, log);
            let inner = std::mem::replace(body, RespBody::empty());
            *body = RespBody::Boxed(BoxedBody(Box::pin(Watched::new(inner, w))));
        }
        // No body to watch (the proxy's own answer, or none): over now.
        _ => Watch::new(None, observer, start, record, info, kind, log).end(true),
    }
    resp
}
