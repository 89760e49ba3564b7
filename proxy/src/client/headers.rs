//! The request an endpoint receives: hop-by-hop headers removed, and the caller's authority as
//! `Host` over HTTP/1.1 or as `:authority` over HTTP/2.

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Uri, Version};
use vane_route::config::Protocol;

/// Rewrites a request head for an endpoint speaking `protocol`. `fallback` is the endpoint's own
/// address, used only when the request names no authority at all.
pub fn for_endpoint(parts: &mut http::request::Parts, protocol: Protocol, fallback: &Authority) {
    strip_hop_by_hop(&mut parts.headers);
    // The endpoint sees the caller's authority.
    let authority = match parts.uri.authority() {
        Some(a) => Some(a.clone()),
        None => parts.headers.get(header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok()),
    };
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        Protocol::Http1 => {
            parts.uri = Uri::from(path);
            parts.version = Version::HTTP_11;
            if !parts.headers.contains_key(header::HOST) {
                let host = authority.as_ref().unwrap_or(fallback);
                if let Ok(v) = http::HeaderValue::from_str(host.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        Protocol::Http2 => {
            parts.uri = endpoint_uri(authority.as_ref().unwrap_or(fallback), &path);
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
}

fn endpoint_uri(authority: &Authority, path: &PathAndQuery) -> Uri {
    let mut p = http::uri::Parts::default();
    p.scheme = Some(Scheme::HTTP);
    p.authority = Some(authority.clone());
    p.path_and_query = Some(path.clone());
    Uri::from_parts(p).unwrap_or_default()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes connection-specific headers (RFC 9110 §7.6.1), including those the `Connection`
/// header names. `TE: trailers` is kept: gRPC needs it.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Fast path: one pass over the names, no hashing, when there is nothing to remove.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(s) = conn.to_str()
    {
        for name in s.split(',') {
            if let Ok(n) = HeaderName::from_bytes(name.trim().as_bytes())
                && n != header::TE
            {
                h.remove(n);
            }
        }
    }
    for name in ["keep-alive", "proxy-connection"] {
        h.remove(name);
    }
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::UPGRADE);
    if let Some(te) = h.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        h.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-keep"]);
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn endpoint_uris() {
        let a = Authority::from_static("127.0.0.1:9000");
        let u = endpoint_uri(&a, &PathAndQuery::from_static("/v1/x?y=1"));
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/v1/x?y=1");
    }

    #[test]
    fn heads_per_protocol() {
        let fallback = Authority::from_static("10.0.0.1:8000");
        let req = || http::Request::get("/v1/x").header("host", "llm").header("connection", "close").body(()).unwrap();
        let (mut p, _) = req().into_parts();
        for_endpoint(&mut p, Protocol::Http1, &fallback);
        assert_eq!((p.uri.to_string().as_str(), p.version), ("/v1/x", Version::HTTP_11));
        assert_eq!(p.headers["host"], "llm");
        assert!(!p.headers.contains_key("connection"));
        let (mut p, _) = req().into_parts();
        for_endpoint(&mut p, Protocol::Http2, &fallback);
        assert_eq!((p.uri.to_string().as_str(), p.version), ("http://llm/v1/x", Version::HTTP_2));
        assert!(!p.headers.contains_key("host"));
        let (mut p, _) = http::Request::get("/").body(()).unwrap().into_parts();
        for_endpoint(&mut p, Protocol::Http1, &fallback);
        assert_eq!(p.headers["host"], "10.0.0.1:8000");
    }
}
