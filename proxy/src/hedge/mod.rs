//! Hedging, on routes that ask for it (`hedge: { delay }` or `{ percentile }`): when no first
//! byte of an attempt's answer has come within the delay, a copy of the request goes to another
//! endpoint, the answer that starts first is kept and the other is dropped (which cancels it: an
//! HTTP/2 stream is reset, an HTTP/1.1 connection closed).
//!
//! - *First byte*: the response head and, unless the answer ends there, its first body frame
//!   (for a streaming model server the first token, which comes after queueing and prefill; its
//!   headers come at once). The frame read ahead is passed on first ([`RespBody::Prefixed`]).
//! - The delay is fixed, or a percentile of the backend's last 128 times to first byte (at least
//!   `min_delay`; before any answer, the fixed floor alone).
//! - Only requests whose body is known in full (as for retries), to a backend with another
//!   endpoint not yet tried; each hedge withdraws from the backend's retry budget, so hedges and
//!   retries together stay within it.
//! - An attempt that fails while the other is still running waits for the other; the retry layer
//!   above sees one outcome per attempt.

use crate::balance::{Attempted, Picked, Target, Tried};
use crate::body::{ReqBody, RespBody};
use crate::error::{Error, ProxyError};
use crate::metrics::Tag;
use futures_util::future::{Either, select};
use http::{Request, Response};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::retry::budget::Budget;
use vane_route::table::Hedge;

/// The hedging layer (outbound, under the retries).
#[derive(Clone, Copy, Debug, Default)]
pub struct HedgeLayer;

impl<S> tower::Layer<S> for HedgeLayer {
    type Service = HedgeService<S>;
    fn layer(&self, inner: S) -> HedgeService<S> {
        HedgeService { inner }
    }
}

/// See [`HedgeLayer`].
#[derive(Clone, Debug)]
pub struct HedgeService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Outcome = Result<Response<RespBody>, Error>;

impl<S> tower::Service<Request<ReqBody>> for HedgeService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<RespBody>;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<Outcome>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(&hedge) = req.extensions().get::<Hedge>() else {
            return Either::Left(self.inner.call(req));
        };
        let Some(copy) = copy_of(&req) else {
            return Either::Left(self.inner.call(req));
        };
        let picked = Picked::default();
        req.extensions_mut().insert(picked.clone());
        let primary = self.inner.call(req);
        Either::Right(Box::pin(hedged(self.inner.clone(), primary, copy, picked, hedge)))
    }
}

/// The delay after which a copy is sent, for `hedge` on `target`'s backend.
pub fn delay(hedge: Hedge, target: &Target) -> Duration {
    match hedge {
        Hedge::Fixed(d) => d,
        Hedge::Percentile(p, floor) => target.backend.typical.first_byte_percentile(p).map_or(floor, |d| d.max(floor)),
    }
}

/// A copy of `req` to send elsewhere (see [`crate::retry::copy_request`]); `None` when its body
/// cannot be copied or its backend has no other endpoint.
fn copy_of(req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
    if req.extensions().get::<Target>()?.backend.endpoints.len() < 2 {
        return None;
    }
    crate::retry::copy_request(req)
}

/// An attempt's outcome once its first byte has come: the head, and the first body frame read
/// ahead (a body that breaks off there is the endpoint's failure).
async fn first_byte(attempt: impl Future<Output = Outcome>, picked: Picked) -> Outcome {
    let resp = attempt.await?;
    if http_body::Body::is_end_stream(resp.body()) {
        return Ok(resp);
    }
    let (parts, mut body) = resp.into_parts();
    match body.frame().await {
        None => Ok(Response::from_parts(parts, RespBody::empty())),
        Some(Ok(frame)) => {
            Ok(Response::from_parts(parts, RespBody::Prefixed { first: Some(frame), rest: Box::new(body) }))
        }
        Some(Err(e)) => {
            let mut ext = parts.extensions;
            let at =
                picked.get().zip(ext.get::<Target>()).and_then(|(i, t)| Some((i, t.backend.endpoints.get(i)?.addr)));
            let addr = at.map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |(_, a)| a);
            if let Some((i, _)) = at {
                ext.insert(Attempted(i));
            }
            let kind = match e {
                crate::body::RespError::Upstream(e) => {
                    ProxyError::Upstream(addr, crate::client::SendError::Upstream(e))
                }
                crate::body::RespError::SharedBroke => ProxyError::BodyAborted(addr),
            };
            Err(Error::with_extensions(kind, ext))
        }
    }
}

async fn hedged<S>(
    mut inner: S,
    primary: S::Future,
    mut copy: Request<ReqBody>,
    picked: Picked,
    hedge: Hedge,
) -> Outcome
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error>,
{
    let Some(target) = copy.extensions().get::<Target>().cloned() else {
        return primary.await;
    };
    let mut primary = pin!(first_byte(primary, picked.clone()));
    let wait = delay(hedge, &target);
    if let Ok(outcome) = tokio::time::timeout(wait, primary.as_mut()).await {
        return outcome;
    }
    // No first byte yet: a copy to an endpoint not tried, if the budget allows one.
    let mut tried = copy.extensions().get::<Tried>().copied().unwrap_or_default();
    if let Some(i) = picked.get() {
        tried.insert(i);
    }
    let room = (0..target.backend.endpoints.len()).any(|i| !tried.contains(i));
    if !room || !target.backend.retry_budget.withdraw() {
        return primary.await;
    }
    copy.extensions_mut().insert(tried);
    let picked_copy = Picked::default();
    copy.extensions_mut().insert(picked_copy.clone());
    let stats = match copy.extensions().get::<Tag>() {
        Some(Tag::Route(s)) => Some(std::sync::Arc::clone(s)),
        _ => None,
    };
    if let Some(s) = &stats {
        s.hedged(None);
    }
    tracing::debug!("no first byte within {wait:?}: hedging to another endpoint");
    let second = pin!(first_byte(inner.call(copy), picked_copy));
    let (out, won) = match select(primary, second).await {
        Either::Left((Ok(resp), _)) => (Ok(resp), false),
        Either::Right((Ok(resp), _)) => (Ok(resp), true),
        // One failed: the other's outcome, whatever it is.
        Either::Left((Err(_), other)) => (other.await, true),
        Either::Right((Err(_), other)) => (other.await, false),
    };
    out.map(|mut resp| {
        if let Some(s) = &stats {
            s.hedged(Some(won));
        }
        resp.extensions_mut().insert(Hedged { after: wait, won });
        resp
    })
}

/// Response extension of a hedged request: when the hedge was sent (after the request started
/// here) and whether its answer is the one kept; the observe layer puts it on the span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hedged {
    /// The hedging delay that passed without a first byte.
    pub after: std::time::Duration,
    /// Whether the hedge's answer was kept.
    pub won: bool,
}
