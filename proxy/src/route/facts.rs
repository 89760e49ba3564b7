//! What the route layer reads off a request head: its host, whether its authority is
//! unambiguous, its gRPC deadline, its declared body length.

use http::{HeaderMap, Request};
use std::time::Duration;

/// The host the request is for (the authority of the request target, else the `Host` header),
/// without port or user info; `Ok(None)` when it names none. An ambiguous destination is an
/// error: more than one `Host` header, or a `Host` that disagrees with the request target's
/// authority (HTTP/1.1 absolute form, HTTP/2 `:authority`). RFC 9112 §3.2 asks for a 400, since
/// the proxy and the endpoint could otherwise each act on a different one.
pub fn destination<B>(req: &Request<B>) -> Result<Option<&str>, &'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let authority = match (req.uri().authority(), host) {
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
            return Err("the Host header and the request's authority disagree");
        }
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => match h.to_str() {
            Ok(h) => h,
            Err(_) => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => h,
        None => authority,
    };
    let host = if host.starts_with('[') {
        host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    Ok((!host.is_empty()).then_some(host))
}

/// gRPC's `grpc-timeout` header: 1–8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.as_bytes();
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 || !num.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(num).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The request's `Content-Length`, when it has a valid one.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_authority_or_host_header() {
        let cases = [
            ("http://llm:8080/x", None, Some("llm")),
            ("/x", Some("llm.models:80"), Some("llm.models")),
            ("/x", Some("[::1]:4140"), Some("::1")),
            ("/x", Some("127.0.0.1"), Some("127.0.0.1")),
            ("/x", None, None),
            ("/x", Some(""), None),
        ];
        for (uri, host, want) in cases {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let req = b.body(()).unwrap();
            assert_eq!(destination(&req), Ok(want), "{uri} {host:?}");
        }
    }

    #[test]
    fn conflicting_authorities() {
        let conflict = |r: &Request<()>| destination(r).err();
        let req = |uri: &str, hosts: &[&str]| {
            let mut b = Request::builder().uri(uri);
            for h in hosts {
                b = b.header("host", *h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(conflict(&req("/x", &["llm"])), None);
        assert_eq!(conflict(&req("/x", &[])), None);
        assert_eq!(conflict(&req("http://llm/x", &[])), None);
        assert_eq!(conflict(&req("http://llm:80/x", &["LLM:80"])), None);
        assert_eq!(conflict(&req("/x", &["llm", "llm"])), Some("more than one Host header"));
        assert_eq!(conflict(&req("/x", &["llm", "other"])), Some("more than one Host header"));
        assert!(conflict(&req("http://llm/x", &["other"])).is_some());
    }

    #[test]
    fn grpc_timeouts() {
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
            ("", None),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), want, "{v}");
        }
    }
}
