//! Pointing a request of a captured connection at the service its original destination picked.

use http::Request;
use http::uri::{Authority, Uri};

/// Sets the request's authority to `service`: the request target's authority when it has one
/// (HTTP/2 `:authority`, HTTP/1 absolute form) and the `Host` header when there is one or the
/// target has none. The route layer then finds the service by name as for any request.
pub fn set_authority<B>(req: &mut Request<B>, service: &str) {
    let Ok(authority) = Authority::try_from(service) else { return };
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if (req.headers().contains_key(http::header::HOST) || req.uri().authority().is_none())
        && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_replaced_where_the_request_has_one() {
        let cases: [(&str, Option<&str>, &str, Option<&str>); 4] = [
            ("/v1/models", Some("10.96.0.10"), "/v1/models", Some("llm")),
            ("/v1/models", None, "/v1/models", Some("llm")),
            ("http://10.96.0.10:80/v1/models?x=1", None, "http://llm/v1/models?x=1", None),
            ("http://10.96.0.10/v1/models", Some("10.96.0.10"), "http://llm/v1/models", Some("llm")),
        ];
        for (uri, host, want_uri, want_host) in cases {
            let mut b = Request::get(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let mut req = b.body(()).unwrap();
            set_authority(&mut req, "llm");
            assert_eq!(req.uri().to_string(), want_uri, "{uri}");
            assert_eq!(req.headers().get("host").map(|v| v.to_str().unwrap()), want_host, "{uri}");
        }
    }
}
