//! Retries, as a [`tower::retry::Policy`]: a request is sent again, to an endpoint not yet tried,
//! only when its outcome says that is safe, the proxy still holds the whole request, the route
//! allows another attempt and the backend's retry budget has room.
//!
//! - Safe ([`decide::safe_to_retry`]): an error that says nothing was sent (no connection could
//!   be made) or that the endpoint refused the stream unprocessed (HTTP/2 `REFUSED_STREAM`); a
//!   connection broken before any response header, for an idempotent method only; an answer whose
//!   status the route retries (`429` and `503` by default: the balancer also keeps that endpoint
//!   behind the others for its `Retry-After`), or a gRPC answer with `grpc-status: 14`
//!   (`UNAVAILABLE`) in its headers. All are decided at the response head, before any of its body
//!   is passed on.
//! - Only requests whose body is known in full (empty, or small with a `Content-Length`, read by
//!   the route layer) can be sent again; a streamed body cannot.
//! - At most the route's `max_attempts` (3 by default), and never more than the backend has
//!   endpoints.
//! - The backend's budget (tower's [`TpsBudget`], Finagle's and Linkerd's model): every request
//!   deposits, every retry withdraws, and retries may add at most `ratio` (20 %) of the requests of
//!   the last `window` (10 s) plus `min_per_second` (10): under a total outage upstream load stays
//!   within 1.2 × the request rate, not `max_attempts` times it.
//! - An answer that took more than one attempt carries `vane-proxy-attempts: N`.

mod decide;

pub use decide::{Reason, grpc_unavailable, idempotent, safe_to_retry, should_retry};

use crate::balance::{Attempted, Target, Tried};
use crate::body::{ReqBody, RespBody};
pub use crate::error::ATTEMPTS_HEADER;
use crate::error::{Attempts, Error};
use crate::metrics::Tag;
use http::{Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use vane_route::table::{Retries, RetryBudget};

/// The retry policy (one copy per request: tower clones it for each call).
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryPolicy {
    /// Attempts made so far (0 before the first).
    attempts: u32,
    tried: Tried,
}

/// The retry layer of the outbound stack.
pub fn layer() -> tower::retry::RetryLayer<RetryPolicy> {
    tower::retry::RetryLayer::new(RetryPolicy::default())
}

/// A backend's retry budget, from its settings.
pub fn budget(b: &RetryBudget) -> TpsBudget {
    // The settings were checked when the config was read (window 1..=60 s, ratio 0..=10).
    TpsBudget::new(b.window, b.min_per_second, b.ratio as f32)
}

impl RetryPolicy {
    /// Leaves the attempt count on the final outcome, when there was more than one.
    fn finish(&self, result: &mut Result<Response<RespBody>, Error>) {
        if self.attempts < 2 {
            return;
        }
        match result {
            Ok(resp) => {
                resp.headers_mut().insert(ATTEMPTS_HEADER, http::HeaderValue::from(self.attempts));
            }
            Err(e) => {
                e.extensions_mut().insert(Attempts(self.attempts));
            }
        }
    }
}

impl tower::retry::Policy<Request<ReqBody>, Response<RespBody>, Error> for RetryPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<ReqBody>,
        result: &mut Result<Response<RespBody>, Error>,
    ) -> Option<Self::Future> {
        let attempted = match result {
            Err(e) => e.extensions().get::<Attempted>(),
            Ok(resp) => resp.extensions().get::<Attempted>(),
        };
        let (Some(&Attempted(i)), Some(retries), Some(target)) =
            (attempted, req.extensions().get::<Retries>(), req.extensions().get::<Target>())
        else {
            self.finish(result);
            return None;
        };
        self.tried.insert(i);
        let reason = safe_to_retry(result, retries, idempotent(req.method()));
        let left = retries.max_attempts.saturating_sub(self.attempts);
        if !should_retry(reason.is_some(), self.tried, left, target.backend.endpoints.len()) {
            self.finish(result);
            return None;
        }
        let stats = match req.extensions().get::<Tag>() {
            Some(Tag::Route(s)) => Some(s),
            _ => None,
        };
        if !target.backend.retry_budget.withdraw() {
            tracing::debug!("endpoint {i}: not retried, the backend's retry budget is spent");
            if let Some(s) = stats {
                s.budget_exhausted();
            }
            self.finish(result);
            return None;
        }
        let reason = reason.unwrap_or(Reason::Refused);
        tracing::debug!(reason = reason.label(), "endpoint {i}: trying another endpoint");
        if let Some(s) = stats {
            s.retried(reason.label());
        }
        req.extensions_mut().insert(self.tried);
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        let target = req.extensions().get::<Target>()?;
        if self.attempts == 0 {
            // A request, retried or not, is what the budget's ratio counts.
            target.backend.retry_budget.deposit();
        }
        self.attempts += 1;
        // Keep a copy when another attempt could follow; after a retry always, so that the last
        // attempt's outcome comes back through `retry` and gets its attempt count.
        let retries = req.extensions().get::<Retries>()?;
        if self.attempts == 1 && (retries.max_attempts < 2 || target.backend.endpoints.len() < 2) {
            return None;
        }
        copy_request(req)
    }
}

/// A copy of a request whose body is known in full (`None` otherwise), with what the layers
/// below read from its extensions (target, retries, hedging, the endpoints tried, the metric
/// tag): another attempt of it, by a retry or a hedge.
pub fn copy_request(req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
    let mut copy = Request::new(req.body().try_clone()?);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    let (from, to) = (req.extensions(), copy.extensions_mut());
    if let Some(t) = from.get::<Target>() {
        to.insert(t.clone());
    }
    if let Some(r) = from.get::<Retries>() {
        to.insert(r.clone());
    }
    if let Some(h) = from.get::<vane_route::table::Hedge>() {
        to.insert(*h);
    }
    if let Some(t) = from.get::<Tried>() {
        to.insert(*t);
    }
    if let Some(tag) = from.get::<Tag>() {
        to.insert(tag.clone());
    }
    Some(copy)
}
