//! Whose fault an error is and whether the request may be sent again: what retries, budgets,
//! hedging and ejection read.

use super::kind::ProxyError;
use crate::client::SendError;
use http::StatusCode;

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The endpoint (or the backend having none): counted against the endpoint's health.
    Upstream,
    /// The client: a malformed or oversized request, a body that broke off, an unknown destination.
    /// Never counted against an endpoint.
    Downstream,
    /// The proxy itself.
    Internal,
}

/// Why sending a request again would be safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retryable {
    /// No connection was made: nothing was sent.
    NothingSent,
    /// The endpoint refused the stream before processing it (HTTP/2 `REFUSED_STREAM`).
    Refused,
    /// The connection broke before any response header; the request may have been processed,
    /// so only an idempotent request may be sent again.
    ResetBeforeHeaders,
}

impl Retryable {
    /// Whether a request of this kind may be sent again.
    pub fn safe(self, idempotent: bool) -> bool {
        match self {
            Retryable::NothingSent | Retryable::Refused => true,
            Retryable::ResetBeforeHeaders => idempotent,
        }
    }
}

impl ProxyError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::UnknownService(_)
            | ProxyError::NoRoute(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::BodyRead(_)
            | ProxyError::BodyAborted(_)
            | ProxyError::Unauthorized(_) => Fault::Downstream,
            ProxyError::NoEndpoint(_) | ProxyError::ConnectFailed(..) | ProxyError::Upstream(..) => Fault::Upstream,
            ProxyError::Timeout(..) => Fault::Upstream,
            ProxyError::Overloaded
            | ProxyError::Shed(..)
            | ProxyError::DeadlineUnmeetable(..)
            | ProxyError::ShuttingDown
            | ProxyError::Internal(_) => Fault::Internal,
        }
    }

    /// Why a retry would be safe, if it would be.
    pub fn retryable(&self) -> Option<Retryable> {
        match self {
            ProxyError::ConnectFailed(..) | ProxyError::Overloaded => Some(Retryable::NothingSent),
            ProxyError::Upstream(_, SendError::Upstream(e)) if refused(e) => Some(Retryable::Refused),
            ProxyError::Upstream(_, SendError::Upstream(_)) => Some(Retryable::ResetBeforeHeaders),
            ProxyError::Upstream(..) => Some(Retryable::NothingSent),
            _ => None,
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyRead(_) | ProxyError::BodyAborted(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::UnknownService(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoEndpoint(_) | ProxyError::Overloaded | ProxyError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ConnectFailed(..) | ProxyError::Upstream(..) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Shed(..) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized(_) => StatusCode::FORBIDDEN,
            ProxyError::DeadlineUnmeetable(..) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short machine-readable reason, sent in `vane-proxy-error` and used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "malformed-request",
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::NoRoute(_) => "no-route",
            ProxyError::BodyTooLarge(_) => "body-too-large",
            ProxyError::BodyRead(_) | ProxyError::BodyAborted(_) => "body-read-failed",
            ProxyError::NoEndpoint(_) => "no-endpoint-ready",
            ProxyError::ConnectFailed(..) => "connect-failed",
            ProxyError::Upstream(..) => "upstream-failed",
            ProxyError::Timeout(..) => "response-timeout",
            ProxyError::Overloaded => "overloaded",
            ProxyError::Shed(..) => "shed",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::DeadlineUnmeetable(..) => "deadline-unmeetable",
            ProxyError::ShuttingDown => "shutting-down",
            ProxyError::Internal(_) => "internal-error",
        }
    }

    /// The gRPC status code for gRPC callers.
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyRead(_) | ProxyError::BodyAborted(_) => 13, // INTERNAL
            ProxyError::Internal(_) => 13,                                                          // INTERNAL
            ProxyError::NoRoute(_) => 12,                                                           // UNIMPLEMENTED
            ProxyError::BodyTooLarge(_) | ProxyError::Shed(..) => 8, // RESOURCE_EXHAUSTED
            ProxyError::Timeout(..) | ProxyError::DeadlineUnmeetable(..) => 4, // DEADLINE_EXCEEDED
            ProxyError::Unauthorized(_) => 7,                        // PERMISSION_DENIED
            _ => 14,                                                 // UNAVAILABLE
        }
    }
}

/// Whether an HTTP/2 endpoint refused the stream (it did not process it).
fn refused(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn faults_statuses_and_retries() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused_conn = || SendError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let cases = [
            (ProxyError::BadRequest("x"), 400, "malformed-request", Fault::Downstream, None),
            (ProxyError::UnknownService("a".into()), 503, "unknown-service", Fault::Downstream, None),
            (ProxyError::NoRoute("a".into()), 404, "no-route", Fault::Downstream, None),
            (ProxyError::BodyTooLarge(10), 413, "body-too-large", Fault::Downstream, None),
            (ProxyError::BodyAborted(addr), 400, "body-read-failed", Fault::Downstream, None),
            (ProxyError::NoEndpoint("b".into()), 503, "no-endpoint-ready", Fault::Upstream, None),
            (
                ProxyError::ConnectFailed(addr, refused_conn()),
                502,
                "connect-failed",
                Fault::Upstream,
                Some(Retryable::NothingSent),
            ),
            (
                ProxyError::Upstream(addr, refused_conn()),
                502,
                "upstream-failed",
                Fault::Upstream,
                Some(Retryable::NothingSent),
            ),
            (ProxyError::Timeout(addr, Duration::from_secs(1)), 504, "response-timeout", Fault::Upstream, None),
            (ProxyError::Overloaded, 503, "overloaded", Fault::Internal, Some(Retryable::NothingSent)),
            (ProxyError::Shed("b".into(), Duration::from_secs(1)), 429, "shed", Fault::Internal, None),
            (ProxyError::Unauthorized("deny".into()), 403, "unauthorized", Fault::Downstream, None),
            (
                ProxyError::DeadlineUnmeetable("b".into(), Duration::from_secs(2), Duration::from_secs(1)),
                504,
                "deadline-unmeetable",
                Fault::Internal,
                None,
            ),
            (ProxyError::ShuttingDown, 503, "shutting-down", Fault::Internal, None),
            (ProxyError::Internal("x".into()), 500, "internal-error", Fault::Internal, None),
        ];
        for (e, status, reason, fault, retry) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.reason(), reason, "{e}");
            assert_eq!(e.fault(), fault, "{e}");
            assert_eq!(e.retryable(), retry, "{e}");
        }
    }

    #[test]
    fn a_reset_before_headers_is_retried_only_when_idempotent() {
        assert!(Retryable::NothingSent.safe(false));
        assert!(Retryable::Refused.safe(false));
        assert!(!Retryable::ResetBeforeHeaders.safe(false));
        assert!(Retryable::ResetBeforeHeaders.safe(true));
    }
}
