//! The forward layer: picks an endpoint (power of two choices over peak-EWMA × in-flight),
//! sends the request over a pooled connection, and learns from the answer.
//!
//! - Latency is measured to the first byte of the response body (for a streaming model server the
//!   first token, after queueing and prefill; headers come at once) and fed
//!   to the endpoint's peak-EWMA.
//! - A refused connection ejects the endpoint at once; 5xx answers, resets and timeouts eject
//!   after `consecutive_failures` in a row.
//! - A request whose body is known in full (empty, or small with a Content-Length) is retried
//!   on another endpoint when the connection could not be made: nothing was sent, so it is safe.
//!   Nothing is retried once the request may have reached an endpoint.

use crate::body::{ReqBody, RespBody};
use crate::config::BackendRuntime;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::metrics::Info;
use crate::route::{Routed, Target};
use http::StatusCode;
use http::header::{self, HeaderName};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri, Version};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use vane_route::config::Protocol;
use vane_route::health::Outcome;
use vane_route::orca;
use vane_route::table::Settings;

/// At most this many endpoints are tried for one request (the first plus retries after
/// connection failures), so a backend full of dead endpoints cannot hold a request for long.
const MAX_ATTEMPTS: usize = 3;

/// Sends routed requests to an endpoint of their target backend.
#[derive(Clone, Debug, Default)]
pub struct ForwardService;

impl tower::Service<Routed> for ForwardService {
    type Response = (Response<RespBody>, Info);
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(Response<RespBody>, Info), Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        Box::pin(async move {
            let Routed { req, target } = routed;
            let mut info = Info { stats: Some(Arc::clone(&target.stats)), service: None, error: None };
            let resp = match forward(&target, req).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!("forward failed: {e}");
                    info.error = Some(e.reason());
                    e.into_response(target.grpc)
                }
            };
            Ok((resp, info))
        })
    }
}

async fn forward(target: &Target, req: Request<ReqBody>) -> Result<Response<RespBody>, ProxyError> {
    let snap = &target.snap;
    let backend: &BackendRuntime = match target.backend {
        Some(i) => &snap.backends[i],
        None => snap.inbound.as_ref().ok_or_else(|| ProxyError::NoEndpoint("inbound".into()))?,
    };
    let settings = &snap.table.settings;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The endpoint sees the caller's authority: as `Host` over HTTP/1.1, as `:authority` over HTTP/2.
    let authority = match parts.uri.authority() {
        Some(a) => Some(a.clone()),
        None => parts.headers.get(header::HOST).and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok()),
    };
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut rng = fastrand::Rng::new();
    let mut tried = 0u64;
    let mut body = Some(body);
    for attempt in 0..MAX_ATTEMPTS {
        let Some((i, load_age)) =
            crate::endpoint::pick(&backend.endpoints, tried, settings, &backend.policy, &backend.rr, &mut rng)
        else {
            break;
        };
        if let Some(age) = load_age {
            snap.load_age.observe(age as f64 / 1e9);
        }
        tried |= 1u64.checked_shl(i as u32).unwrap_or(0);
        let ep = &backend.endpoints[i];
        // Keep what a retry needs only when a retry is possible.
        let can_retry = attempt + 1 < MAX_ATTEMPTS && backend.endpoints.len() > 1;
        let this_body = match body.take() {
            Some(b) => {
                if can_retry {
                    body = b.try_clone();
                }
                b
            }
            None => break,
        };
        let mut up = Request::new(this_body);
        *up.method_mut() = parts.method.clone();
        *up.headers_mut() = if body.is_some() { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
        match ep.protocol {
            Protocol::Http1 => {
                *up.uri_mut() = Uri::from(path.clone());
                *up.version_mut() = Version::HTTP_11;
                if !up.headers().contains_key(header::HOST) {
                    let host = authority.as_ref().unwrap_or(&ep.authority);
                    if let Ok(v) = http::HeaderValue::from_str(host.as_str()) {
                        up.headers_mut().insert(header::HOST, v);
                    }
                }
            }
            Protocol::Http2 => {
                *up.uri_mut() = endpoint_uri(authority.as_ref().unwrap_or(&ep.authority), &path);
                *up.version_mut() = Version::HTTP_2;
                up.headers_mut().remove(header::HOST);
            }
        }

        let mut guard = ep.start();
        let started = Instant::now();
        let send =
            crate::pool::send(&ep.pool, ep.addr, ep.protocol, up, settings.connect_timeout, settings.idle_timeout);
        let sent = tokio::time::timeout(target.timeout, send).await;
        match sent {
            Err(_) => {
                ep.record(Outcome::Failure, &settings.ejection);
                return Err(ProxyError::Timeout(ep.addr, target.timeout));
            }
            Ok(Err(e)) if e.is_connect() => {
                ep.record(Outcome::ConnectFailed, &settings.ejection);
                if body.is_some() {
                    tracing::debug!(endpoint = %ep.addr, "connect failed, trying another endpoint: {e}");
                    continue;
                }
                return Err(ProxyError::ConnectFailed(ep.addr, e));
            }
            Ok(Err(e)) => {
                ep.record(Outcome::Failure, &settings.ejection);
                return Err(ProxyError::Upstream(ep.addr, e));
            }
            Ok(Ok((resp, conn))) => {
                let measure = learn_from(ep, &resp, settings);
                let outcome = if resp.status().is_server_error() { Outcome::Failure } else { Outcome::Success };
                ep.record(outcome, &settings.ejection);
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                guard.hold(conn, settings.idle_timeout, measure.then_some((started, settings.ewma_decay)));
                let guard = if http_body::Body::is_end_stream(&rbody) {
                    // No body to wait for: the connection is free now.
                    guard.finish();
                    None
                } else {
                    Some(guard)
                };
                return Ok(Response::from_parts(rparts, RespBody::Upstream { body: rbody, guard }));
            }
        }
    }
    Err(ProxyError::NoEndpoint(backend.name.to_string()))
}

/// What an answer's head tells the balancer: the endpoint's own load report (ORCA), and
/// for a 429/503 a penalty for as long as `Retry-After` asks (a fast refusal is not a fast
/// endpoint, so its latency is not averaged in).
/// Returns whether the answer's latency should be sampled (at its first body byte).
fn learn_from<B>(ep: &Endpoint, resp: &Response<B>, settings: &Settings) -> bool {
    let now = crate::now_ns();
    if let Some(v) = resp.headers().get(orca::HEADER)
        && let Some(report) = orca::parse(v.as_bytes())
    {
        ep.report(report, now);
    }
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        let wait = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| orca::retry_after(v.as_bytes()))
            .unwrap_or(settings.penalty_time)
            .min(MAX_PENALTY);
        ep.penalize(now.saturating_add(wait.as_nanos() as u64));
        false
    } else {
        true
    }
}

/// A `Retry-After` longer than this is not followed (the endpoint is probed again after it).
const MAX_PENALTY: std::time::Duration = std::time::Duration::from_secs(30);

fn endpoint_uri(authority: &http::uri::Authority, path: &PathAndQuery) -> Uri {
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
        let a = http::uri::Authority::from_static("127.0.0.1:9000");
        let u = endpoint_uri(&a, &PathAndQuery::from_static("/v1/x?y=1"));
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/v1/x?y=1");
    }
}
