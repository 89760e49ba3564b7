//! Load shedding: when every endpoint of a request's backend is saturated, the request is
//! answered `429 shed` at once with `Retry-After` instead of joining a queue without bound, by its
//! priority (`vane-priority: critical | standard | sheddable`; [`decide::shed`]).
//!
//! Deadlines: a request whose answer must come whole within its deadline (a gRPC client's
//! `grpc-timeout`, or the route's timeout on a backend whose answers do not stream) is refused
//! at once with `504 deadline-unmeetable` (gRPC `DEADLINE_EXCEEDED`) when even the fastest of
//! the backend's available endpoints has lately taken longer than that to answer; an endpoint
//! not yet measured is not known to be slow, so then nothing is refused.
//!
//! Off for a backend without `shed` settings: then the layer only looks for them. The load read
//! is the endpoints' believed load reports (their waiting queues) and this proxy's requests in
//! flight to the backend; ejected endpoints do not count (unless all are: panic mode).

mod decide;

pub use decide::{Load, PRIORITY_HEADER, Priority, deadline_unmeetable, shed};

use crate::balance::{Backend, Target};
use crate::error::{Error, ProxyError};
use futures_util::future::{Either, Ready, ready};
use http::Request;
use std::task::{Context, Poll};

/// The shedding layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShedLayer;

impl<S> tower::Layer<S> for ShedLayer {
    type Service = ShedService<S>;
    fn layer(&self, inner: S) -> ShedService<S> {
        ShedService { inner }
    }
}

/// See [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct ShedService<S> {
    inner: S,
}

/// A backend's load now (see [`Load`]).
fn load(backend: &Backend) -> Load {
    let now = crate::now_ns();
    let settings = &backend.settings;
    let mut least: Option<f64> = None;
    let mut unknown = false;
    let mut in_flight = 0u32;
    let any_available = backend.endpoints.iter().any(|e| e.available(now));
    for e in &backend.endpoints {
        in_flight = in_flight.saturating_add(e.in_flight());
        if any_available && !e.available(now) {
            continue;
        }
        match e.queue_depth(now, settings) {
            Some(q) => least = Some(least.map_or(q, |l: f64| l.min(q))),
            None => unknown = true,
        }
    }
    Load { least_queue: if unknown { None } else { least }, in_flight }
}

impl<S, B, R> tower::Service<Request<B>> for ShedService<S>
where
    S: tower::Service<Request<B>, Response = R, Error = Error>,
{
    type Response = R;
    type Error = Error;
    type Future = Either<Ready<Result<R, Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let refused = req.extensions().get::<Target>().and_then(|t| {
            if let Some(s) = t.backend.shed.as_ref()
                && shed(Priority::of(req.headers()), &load(&t.backend), s)
            {
                return Some(ProxyError::Shed(t.backend.name.to_string(), s.retry_after));
            }
            if !t.whole_answer {
                return None;
            }
            let fastest = t.backend.fastest_first_byte(crate::now_ns());
            deadline_unmeetable(t.timeout, fastest).then(|| {
                ProxyError::DeadlineUnmeetable(t.backend.name.to_string(), fastest.unwrap_or_default(), t.timeout)
            })
        });
        if let Some(e) = refused {
            let (parts, _) = req.into_parts();
            tracing::debug!("{e}");
            return Either::Left(ready(Err(Error::with_extensions(e, parts.extensions))));
        }
        Either::Right(self.inner.call(req))
    }
}
