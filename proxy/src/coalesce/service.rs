//! The coalescing layer and service.

use super::drive::{drive, follow, lead};
use super::flight::Flights;
use super::key::{Key, KeyInput, key};
use super::policy::{Coalescing, eligible};
use crate::body::{ReqBody, RespBody};
use crate::error::Error;
use crate::metrics::Metrics;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Layer for [`CoalesceService`]. Its clones share one map of groups in flight.
#[derive(Clone, Debug)]
pub struct CoalesceLayer {
    flights: Arc<Flights>,
    metrics: Arc<Metrics>,
}

impl CoalesceLayer {
    /// A layer counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> CoalesceLayer {
        CoalesceLayer { flights: Arc::default(), metrics }
    }

    /// The groups in flight (for tests and introspection).
    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }
}

impl<S> tower::Layer<S> for CoalesceLayer {
    type Service = CoalesceService<S>;
    fn layer(&self, inner: S) -> CoalesceService<S> {
        CoalesceService { inner, flights: Arc::clone(&self.flights), metrics: Arc::clone(&self.metrics) }
    }
}

/// Lets identical requests in flight share one upstream call (requests without a
/// [`Coalescing`] extension pass straight through).
#[derive(Clone, Debug)]
pub struct CoalesceService<S> {
    inner: S,
    flights: Arc<Flights>,
    metrics: Arc<Metrics>,
}

type Answer = Result<Response<RespBody>, Error>;

impl<S> tower::Service<Request<ReqBody>> for CoalesceService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<RespBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(c) = req.extensions().get::<Coalescing>() else {
            return ResponseFuture::Inner { fut: self.inner.call(req) };
        };
        let Some(key) = key_of(c, &req) else {
            return ResponseFuture::Inner { fut: self.inner.call(req) };
        };
        let stats = self.metrics.coalesce.stats(&c.service, &c.route);
        let (cap, max) = (c.policy.max_buffer_bytes, c.policy.max_followers);
        let fut: Pin<Box<dyn Future<Output = Answer> + Send>> = match self.flights.join_or_lead(key, cap, max) {
            Ok(sub) => Box::pin(follow(sub, req, self.inner.clone(), stats)),
            Err((flight, sub)) => {
                stats.leaders.inc();
                let (tx, rx) = tokio::sync::oneshot::channel();
                // Spawned now, not when the leader's future is first polled: followers may join
                // before that, and the upstream call must go on if the leader's client leaves.
                tokio::spawn(drive(self.inner.call(req), flight, key, Arc::clone(&self.flights), tx));
                Box::pin(lead(rx, sub))
            }
        };
        ResponseFuture::Shared { fut }
    }
}

/// The request's key, when it may share: its body known in full and the policy's `when` met.
fn key_of(c: &Coalescing, req: &Request<ReqBody>) -> Option<Key> {
    let body: &[u8] = match req.body() {
        ReqBody::Empty | ReqBody::Full(None) => &[],
        ReqBody::Full(Some(b)) => b,
        ReqBody::Stream { .. } => return None,
    };
    let json: Option<serde_json::Value> = if body.is_empty() { None } else { serde_json::from_slice(body).ok() };
    if !eligible(c.policy.when, req.method(), req.headers(), req.uri().path(), json.as_ref()) {
        return None;
    }
    Some(key(&KeyInput {
        service: &c.service,
        route: &c.route,
        backend: &c.backend,
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        vary: &c.policy.vary,
        across_callers: c.policy.across_callers,
        json: json.as_ref(),
        body,
    }))
}

pin_project! {
    /// The response future of [`CoalesceService`]: the inner service's own future for requests
    /// that do not coalesce (no box on their path), a boxed one for those that do.
    #[project = ResponseProj]
    // Internal: pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    pub enum ResponseFuture<F> {
        /// Passed straight through.
        Inner { #[pin] fut: F },
        /// A leader's or a follower's answer.
        Shared { fut: Pin<Box<dyn Future<Output = Answer> + Send>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseFuture::Inner { .. } => "ResponseFuture::Inner",
            ResponseFuture::Shared { .. } => "ResponseFuture::Shared",
        })
    }
}

impl<F: Future<Output = Answer>> Future for ResponseFuture<F> {
    type Output = Answer;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.project() {
            ResponseProj::Inner { fut } => fut.poll(cx),
            ResponseProj::Shared { fut } => fut.as_mut().poll(cx),
        }
    }
}
