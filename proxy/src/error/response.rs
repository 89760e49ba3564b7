//! How an [`Error`] becomes the response the client gets.

use super::kind::{Error, ProxyError};
use crate::body::RespBody;
use http::{HeaderMap, HeaderValue, Response};

/// The response header that says why the proxy answered itself.
pub const ERROR_HEADER: &str = "vane-proxy-error";

/// The response header giving the attempts an answer took, when more than one.
pub const ATTEMPTS_HEADER: &str = "vane-proxy-attempts";

/// Error extension: the attempts made before the error (when more than one), answered as
/// [`ATTEMPTS_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// Response extension on every answer the proxy made itself: the error's reason (as in
/// [`ERROR_HEADER`]), for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered(pub &'static str);

/// Whether the request is gRPC (by content type): its errors are answered as gRPC statuses.
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl Error {
    /// The response the client gets; the error's extensions become the response's.
    pub fn into_response(self, grpc: bool) -> Response<RespBody> {
        let (kind, extensions) = self.into_parts();
        let reason = kind.reason();
        let retry_after = match &kind {
            ProxyError::Shed(_, after) => Some(after.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        };
        let message = kind.to_string();
        let mut r = if grpc {
            let mut r = Response::new(RespBody::empty());
            let h = r.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(u16::from(kind.grpc_status())));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
                h.insert("grpc-message", v);
            }
            r
        } else {
            let mut r = Response::new(RespBody::full(format!("{message}\n")));
            *r.status_mut() = kind.status();
            r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            r
        };
        r.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static(reason));
        if let Some(secs) = retry_after {
            r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(Attempts(n)) = extensions.get::<Attempts>() {
            r.headers_mut().insert(ATTEMPTS_HEADER, HeaderValue::from(*n));
        }
        *r.extensions_mut() = extensions;
        r.extensions_mut().insert(Answered(reason));
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
    use crate::error::ProxyError;

    #[test]
    fn answers_carry_status_reason_and_extensions() {
        let mut e = Error::from(ProxyError::BodyTooLarge(10));
        e.extensions_mut().insert(7u32);
        let r = e.into_response(false);
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[ERROR_HEADER], "body-too-large");
        assert_eq!(r.extensions().get::<u32>(), Some(&7));
        assert_eq!(r.extensions().get::<Answered>(), Some(&Answered("body-too-large")));
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let e = ProxyError::Timeout("127.0.0.1:1".parse().unwrap(), std::time::Duration::from_secs(1));
        let r = Error::from(e).into_response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()[ERROR_HEADER], "response-timeout");
        assert_eq!(percent_encode("a%b\n"), "a%25b%0A");
    }
}
