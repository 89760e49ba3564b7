//! Retries, as a [`tower::retry::Policy`]: a request is sent again, to an endpoint not yet tried,
//! only when the error says that is safe and the proxy still holds the whole request.
//!
//! - Only errors classified [`Retryable::NothingSent`] (no connection could be made) or
//!   [`Retryable::Refused`] (an HTTP/2 endpoint refused the stream unprocessed) are retried, and
//!   answers `429 Too Many Requests` (the endpoint refused it unprocessed; the balancer also keeps
//!   the endpoint behind the others for its `Retry-After`). A reset before the response headers
//!   is not: the endpoint may have acted on the request.
//! - Only requests whose body is known in full (empty, or small with a `Content-Length`, read by
//!   the route layer) can be sent again; a streamed body cannot.
//! - At most [`MAX_ATTEMPTS`] attempts, and never more than the backend has endpoints.

use crate::balance::{Attempted, Target, Tried};
use crate::body::{ReqBody, RespBody};
use crate::error::{Error, Retryable};
use crate::metrics::Tag;
use http::{Request, Response};

/// At most this many endpoints are tried for one request (the first plus retries), so a backend
/// full of dead endpoints cannot hold a request for long.
pub const MAX_ATTEMPTS: usize = 3;

/// The retry policy (one copy per request: tower clones it for each call).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    retries_left: usize,
    tried: Tried,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { retries_left: MAX_ATTEMPTS - 1, tried: Tried::default() }
    }
}

/// The retry layer of the outbound stack.
pub fn layer() -> tower::retry::RetryLayer<RetryPolicy> {
    tower::retry::RetryLayer::new(RetryPolicy::default())
}

/// Whether an attempt's outcome allows sending the request again: an error that says nothing was
/// sent or the stream was refused, or a `429` answer.
pub fn safe_to_retry(result: &Result<Response<RespBody>, Error>) -> bool {
    match result {
        Err(e) => matches!(e.kind().retryable(), Some(Retryable::NothingSent | Retryable::Refused)),
        Ok(resp) => resp.status() == http::StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The decision, pure: whether an attempt whose outcome was `safe` to retry may be followed by
/// another, given the endpoints tried so far (including its own), the retries left and the
/// backend's size.
pub fn should_retry(safe: bool, tried: Tried, retries_left: usize, endpoints: usize) -> bool {
    safe && retries_left > 0 && (0..endpoints).any(|i| !tried.contains(i))
}

impl tower::retry::Policy<Request<ReqBody>, Response<RespBody>, Error> for RetryPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<ReqBody>,
        result: &mut Result<Response<RespBody>, Error>,
    ) -> Option<Self::Future> {
        let Attempted(i) = *match result {
            Err(e) => e.extensions().get::<Attempted>(),
            Ok(resp) => resp.extensions().get::<Attempted>(),
        }?;
        self.tried.insert(i);
        let endpoints = req.extensions().get::<Target>()?.backend.endpoints.len();
        if !should_retry(safe_to_retry(result), self.tried, self.retries_left, endpoints) {
            return None;
        }
        match result {
            Err(e) => tracing::debug!("{e}; trying another endpoint"),
            Ok(_) => tracing::debug!("endpoint {i} answered 429; trying another endpoint"),
        }
        self.retries_left -= 1;
        req.extensions_mut().insert(self.tried);
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        // Keep a copy only when another attempt could follow.
        let target = req.extensions().get::<Target>()?;
        if self.retries_left == 0 || target.backend.endpoints.len() < 2 {
            return None;
        }
        let mut copy = Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        // What the layers below and above read travels with the copy.
        copy.extensions_mut().insert(target.clone());
        if let Some(t) = req.extensions().get::<Tried>() {
            copy.extensions_mut().insert(*t);
        }
        if let Some(tag) = req.extensions().get::<Tag>() {
            copy.extensions_mut().insert(tag.clone());
        }
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;

    fn err(e: ProxyError) -> Result<Response<RespBody>, Error> {
        Err(Error::from(e))
    }

    fn answer(status: u16) -> Result<Response<RespBody>, Error> {
        let mut r = Response::new(RespBody::empty());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn only_safe_errors_with_endpoints_and_retries_left_are_retried() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = || crate::client::SendError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let mut one = Tried::new();
        one.insert(0);
        let mut two = one;
        two.insert(1);
        let cases = [
            (err(ProxyError::ConnectFailed(addr, refused())), one, 2, 3, true),
            (err(ProxyError::ConnectFailed(addr, refused())), one, 0, 3, false),
            (err(ProxyError::ConnectFailed(addr, refused())), two, 2, 2, false),
            (err(ProxyError::Timeout(addr, std::time::Duration::from_secs(1))), one, 2, 3, false),
            (err(ProxyError::BodyTooLarge(1)), one, 2, 3, false),
            (err(ProxyError::NoEndpoint("b".into())), one, 2, 3, false),
            (answer(429), one, 2, 3, true),
            (answer(429), two, 2, 2, false),
            (answer(503), one, 2, 3, false),
            (answer(200), one, 2, 3, false),
        ];
        for (result, tried, left, endpoints, want) in cases {
            let got = should_retry(safe_to_retry(&result), tried, left, endpoints);
            assert_eq!(got, want, "{:?} {tried:?} {left} {endpoints}", result.as_ref().map(|r| r.status()));
        }
    }
}
