//! The retry decision, as pure functions of an attempt's outcome, the request and what is left.

use crate::balance::Tried;
use crate::body::RespBody;
use crate::error::Error;
use http::{HeaderMap, Method, Response};
use vane_route::table::Retries;

/// Why an attempt is sent again (the label of `vane_retries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No connection could be made, or the endpoint refused the stream unprocessed.
    Refused,
    /// The connection broke before any response header, for an idempotent request.
    Reset,
    /// The endpoint answered a status the route retries (429, 503 by default).
    Status,
    /// A gRPC answer with status `UNAVAILABLE`.
    GrpcUnavailable,
}

impl Reason {
    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::Reset => "reset",
            Reason::Status => "status",
            Reason::GrpcUnavailable => "grpc_unavailable",
        }
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): a request that may have been processed can
/// be sent again only then.
pub fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether a gRPC answer's headers carry `grpc-status: 14` (`UNAVAILABLE`): a trailers-only
/// answer, sent before any message.
pub fn grpc_unavailable(h: &HeaderMap) -> bool {
    h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"14")
}

/// Why an attempt's outcome allows sending the request again, if it does: an error that says
/// nothing was sent or the stream was refused (or, for an idempotent request, a reset before the
/// response headers), or an answer whose status the route retries, decided at its head.
pub fn safe_to_retry(
    result: &Result<Response<RespBody>, Error>,
    retries: &Retries,
    idempotent: bool,
) -> Option<Reason> {
    use crate::error::Retryable;
    match result {
        Err(e) => match e.kind().retryable()? {
            Retryable::NothingSent | Retryable::Refused => Some(Reason::Refused),
            r @ Retryable::ResetBeforeHeaders => r.safe(idempotent).then_some(Reason::Reset),
        },
        Ok(resp) if retries.statuses.contains(&resp.status()) => Some(Reason::Status),
        Ok(resp) if retries.grpc_unavailable && grpc_unavailable(resp.headers()) => Some(Reason::GrpcUnavailable),
        Ok(_) => None,
    }
}

/// Whether an attempt whose outcome was safe to retry may be followed by another, given the
/// endpoints tried so far (including its own), the retries left and the backend's size.
pub fn should_retry(safe: bool, tried: Tried, retries_left: u32, endpoints: usize) -> bool {
    safe && retries_left > 0 && (0..endpoints).any(|i| !tried.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;

    fn err(e: ProxyError) -> Result<Response<RespBody>, Error> {
        Err(Error::from(e))
    }

    fn answer(status: u16, grpc_status: Option<&'static str>) -> Result<Response<RespBody>, Error> {
        let mut r = Response::new(RespBody::empty());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(g) = grpc_status {
            r.headers_mut().insert("grpc-status", http::HeaderValue::from_static(g));
        }
        Ok(r)
    }

    fn retries() -> Retries {
        Retries {
            max_attempts: 3,
            statuses: vec![http::StatusCode::TOO_MANY_REQUESTS, http::StatusCode::SERVICE_UNAVAILABLE].into(),
            grpc_unavailable: true,
        }
    }

    #[test]
    fn what_is_safe_to_retry() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = || crate::client::SendError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let r = retries();
        let none = Retries { statuses: Vec::new().into(), grpc_unavailable: false, ..retries() };
        let cases = [
            (err(ProxyError::ConnectFailed(addr, refused())), &r, false, Some(Reason::Refused)),
            (err(ProxyError::Timeout(addr, std::time::Duration::from_secs(1))), &r, true, None),
            (err(ProxyError::BodyTooLarge(1)), &r, true, None),
            (err(ProxyError::NoEndpoint("b".into())), &r, true, None),
            (answer(429, None), &r, false, Some(Reason::Status)),
            (answer(503, None), &r, false, Some(Reason::Status)),
            (answer(502, None), &r, true, None),
            (answer(200, None), &r, true, None),
            (answer(200, Some("14")), &r, false, Some(Reason::GrpcUnavailable)),
            (answer(200, Some("2")), &r, true, None),
            (answer(200, Some("0")), &r, true, None),
            // A route may retry no status at all.
            (answer(429, None), &none, true, None),
            (answer(200, Some("14")), &none, true, None),
            (err(ProxyError::ConnectFailed(addr, refused())), &none, false, Some(Reason::Refused)),
        ];
        for (result, retries, idem, want) in cases {
            let got = safe_to_retry(&result, retries, idem);
            assert_eq!(got, want, "{:?} idempotent {idem}", result.as_ref().map(|r| r.status()));
        }
    }

    #[test]
    fn only_with_endpoints_and_retries_left() {
        let mut one = Tried::new();
        one.insert(0);
        let mut two = one;
        two.insert(1);
        let cases = [
            (true, one, 2, 3, true),
            (true, one, 0, 3, false),
            (true, two, 2, 2, false),
            (true, two, 2, 3, true),
            (false, one, 2, 3, false),
        ];
        for (safe, tried, left, endpoints, want) in cases {
            assert_eq!(should_retry(safe, tried, left, endpoints), want, "{safe} {tried:?} {left} {endpoints}");
        }
    }

    #[test]
    fn idempotent_methods() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m), "{m}");
        }
    }
}
