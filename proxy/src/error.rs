//! Data-plane errors and the one place they become responses.
//!
//! Every error response carries `vane-proxy-error: <reason>` so that an operator can tell the
//! proxy's answers from the application's. gRPC requests get a trailers-only gRPC error instead
//! (HTTP 200 with `grpc-status`), as gRPC clients expect.

use crate::body::RespBody;
use http::{HeaderValue, Response, StatusCode};

/// The response header that says why the proxy answered itself.
pub const ERROR_HEADER: &str = "vane-proxy-error";

/// Why the proxy could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request has no usable authority or is otherwise malformed. (400)
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// No service has this authority (not in the file, or not known to the control service). (503)
    #[error("no service for authority {0:?}")]
    UnknownService(String),
    /// The service has no route matching the request. (404)
    #[error("no route of service {0:?} matches the request")]
    NoRoute(String),
    /// The request body is over `max_body_bytes`. (413)
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// Reading the request body failed. (400)
    #[error("reading the request body failed: {0}")]
    BodyRead(#[source] hyper::Error),
    /// The backend has no endpoint that is configured and not ejected. (503)
    #[error("backend {0:?} has no endpoint ready")]
    NoEndpoint(String),
    /// No connection could be made to the endpoint. (502)
    #[error("connecting to {0} failed: {1}")]
    ConnectFailed(std::net::SocketAddr, #[source] crate::pool::SendError),
    /// The endpoint failed while answering (reset, protocol error). (502)
    #[error("upstream {0} failed: {1}")]
    Upstream(std::net::SocketAddr, #[source] crate::pool::SendError),
    /// No response headers within the timeout. (504)
    #[error("no response from {0} within {1:?}")]
    Timeout(std::net::SocketAddr, std::time::Duration),
    /// The proxy is shutting down. (503)
    #[error("proxy is shutting down")]
    ShuttingDown,
}

impl ProxyError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::UnknownService(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoEndpoint(_) | ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed(..) | ProxyError::Upstream(..) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short machine-readable reason, sent in `vane-proxy-error` and used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "malformed-request",
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::NoRoute(_) => "no-route",
            ProxyError::BodyTooLarge(_) => "body-too-large",
            ProxyError::BodyRead(_) => "body-read-failed",
            ProxyError::NoEndpoint(_) => "no-endpoint-ready",
            ProxyError::ConnectFailed(..) => "connect-failed",
            ProxyError::Upstream(..) => "upstream-failed",
            ProxyError::Timeout(..) => "response-timeout",
            ProxyError::ShuttingDown => "shutting-down",
        }
    }

    /// The gRPC status code for gRPC callers.
    fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyRead(_) => 13, // INTERNAL
            ProxyError::NoRoute(_) => 12,                              // UNIMPLEMENTED
            ProxyError::BodyTooLarge(_) => 8,                          // RESOURCE_EXHAUSTED
            ProxyError::Timeout(..) => 4,                              // DEADLINE_EXCEEDED
            _ => 14,                                                   // UNAVAILABLE
        }
    }

    /// The response the client gets.
    pub fn into_response(self, grpc: bool) -> Response<RespBody> {
        let reason = HeaderValue::from_static(self.reason());
        let message = self.to_string();
        if grpc {
            let mut r = Response::new(RespBody::empty());
            let h = r.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(u16::from(self.grpc_status())));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
                h.insert("grpc-message", v);
            }
            h.insert(ERROR_HEADER, reason);
            return r;
        }
        let mut r = Response::new(RespBody::full(format!("{message}\n")));
        *r.status_mut() = self.status();
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(ERROR_HEADER, reason);
        r
    }
}

/// gRPC's `grpc-message` is percent-encoded outside printable ASCII.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (ProxyError::BadRequest("x"), 400, "malformed-request"),
            (ProxyError::UnknownService("a".into()), 503, "unknown-service"),
            (ProxyError::BodyTooLarge(10), 413, "body-too-large"),
            (ProxyError::NoEndpoint("b".into()), 503, "no-endpoint-ready"),
            (ProxyError::Timeout(addr, std::time::Duration::from_secs(1)), 504, "response-timeout"),
        ];
        for (e, status, reason) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.reason(), reason);
            let r = e.into_response(false);
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(r.headers()[ERROR_HEADER], reason);
        }
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let r =
            ProxyError::Timeout("127.0.0.1:1".parse().unwrap(), std::time::Duration::from_secs(1)).into_response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(percent_encode("a%b\n"), "a%25b%0A");
    }
}
