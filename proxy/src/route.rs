//! The route layer: authority → service → route → weighted backend.
//!
//! It loads the config snapshot once, reads the model name when a route needs it (a bounded
//! body prefix, replayed), makes the pure routing decision, and hands the request on with a
//! [`Target`] for the forward layer.

use crate::body::{ReqBody, RespBody};
use crate::config::{Snapshot, Store};
use crate::error::ProxyError;
use crate::metrics::{Direction, Info, Name, RouteStats};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vane_route::matching::RequestFacts;
use vane_route::model::{model_from_json_prefix, model_from_kserve_path};
use vane_route::split::sticky_hash;

/// Where the forward layer sends a request.
#[derive(Clone, Debug)]
pub struct Target {
    /// The snapshot the decision was made on.
    pub snap: Arc<Snapshot>,
    /// Index into `snap.backends`, or `None` for the inbound target.
    pub backend: Option<usize>,
    /// Response-header deadline.
    pub timeout: Duration,
    /// Metric handles of the route and backend.
    pub stats: Arc<RouteStats>,
    /// The caller speaks gRPC (errors become gRPC statuses).
    pub grpc: bool,
}

/// A request with its routing decision: what the forward layer takes.
#[derive(Debug)]
pub struct Routed {
    /// The request, its body ready to stream upstream.
    pub req: Request<ReqBody>,
    /// Where it goes.
    pub target: Target,
}

/// Layer for [`RouteService`].
#[derive(Clone, Debug)]
pub struct RouteLayer {
    store: Arc<Store>,
    direction: Direction,
}

impl RouteLayer {
    /// Routes outbound requests by the table, or inbound ones to the local server.
    pub fn new(store: Arc<Store>, direction: Direction) -> RouteLayer {
        RouteLayer { store, direction }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService { inner, store: Arc::clone(&self.store), direction: self.direction }
    }
}

/// Makes the routing decision and passes `Request<ReqBody>` with a [`Target`] on.
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
    store: Arc<Store>,
    direction: Direction,
}

impl<S> tower::Service<Request<Incoming>> for RouteService<S>
where
    S: tower::Service<Routed, Response = (Response<RespBody>, Info), Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = (Response<RespBody>, Info);
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(Response<RespBody>, Info), Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let snap = self.store.load();
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let direction = self.direction;
        Box::pin(async move {
            let grpc = is_grpc(req.headers());
            let routed = match direction {
                Direction::Outbound => route_outbound(snap, req, grpc).await,
                Direction::Inbound => route_inbound(snap, req, grpc),
            };
            match routed {
                Ok(routed) => inner.call(routed).await,
                Err((e, info)) => {
                    tracing::debug!("not routed: {e}");
                    Ok((e.into_response(grpc), info))
                }
            }
        })
    }
}

type RouteResult = Result<Routed, (ProxyError, Info)>;

fn fail(e: ProxyError, service: Option<&Arc<str>>) -> (ProxyError, Info) {
    let error = Some(e.reason());
    (e, Info { stats: None, service: service.map(|s| Name(Arc::clone(s))), error })
}

/// Whether the request is gRPC (by content type).
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The host part of the request's authority (URI or Host header), without port.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
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
    (!host.is_empty()).then_some(host)
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

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

async fn route_outbound(snap: Arc<Snapshot>, req: Request<Incoming>, grpc: bool) -> RouteResult {
    let settings = &snap.table.settings;
    let Some(host) = request_host(&req) else {
        return Err(fail(ProxyError::BadRequest("no authority or Host header"), None));
    };
    let Some(svc_idx) = snap.table.service_index(host) else {
        return Err(fail(ProxyError::UnknownService(host.to_string()), None));
    };
    let service = &snap.table.services[svc_idx];
    let (parts, body) = req.into_parts();
    let svc_name = Some(&service.name);
    let length = content_length(&parts.headers);
    if length.is_some_and(|n| n > settings.max_body_bytes) {
        return Err(fail(ProxyError::BodyTooLarge(settings.max_body_bytes), svc_name));
    }
    let path = parts.uri.path();
    let path_model = if service.needs_model { model_from_kserve_path(path) } else { None };
    let sniff = service.needs_model && path_model.is_none();
    // Small bodies of known length are read whole, so that a failed connection can be retried.
    let small = content_length(&parts.headers).is_some_and(|n| n <= settings.max_sniff_bytes as u64);
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else if sniff || small {
        read_prefix(body, settings.max_sniff_bytes, settings.max_body_bytes).await.map_err(|e| fail(e, svc_name))?
    } else {
        ReqBody::Stream { prefix: None, rest: body, remaining: settings.max_body_bytes, limit: settings.max_body_bytes }
    };
    let body_model = match (&body, sniff) {
        (ReqBody::Full(Some(b)), true) | (ReqBody::Stream { prefix: Some(b), .. }, true) => model_from_json_prefix(b),
        _ => None,
    };
    let facts = RequestFacts {
        method: &parts.method,
        path,
        headers: &parts.headers,
        model: path_model.or(body_model.as_deref()),
    };
    let Some(route_idx) = service.select_index(&facts) else {
        return Err(fail(ProxyError::NoRoute(service.name.to_string()), svc_name));
    };
    let route = &service.routes[route_idx];
    let draw = match route.sticky.as_ref().and_then(|h| parts.headers.get(h)) {
        Some(v) => sticky_hash(v.as_bytes()),
        None => fastrand::u64(..),
    };
    let Some((backend, stats)) = route.split.pick(draw).and_then(|b| Some((b, snap.stats(svc_idx, route_idx, b)?)))
    else {
        return Err(fail(ProxyError::NoRoute(service.name.to_string()), svc_name));
    };
    let stats = Arc::clone(stats);
    let mut timeout = route.timeout.unwrap_or(settings.response_timeout);
    if grpc && let Some(t) = grpc_timeout(&parts.headers) {
        timeout = timeout.min(t);
    }
    let req = Request::from_parts(parts, body);
    Ok(Routed { req, target: Target { snap: Arc::clone(&snap), backend: Some(backend), timeout, stats, grpc } })
}

fn route_inbound(snap: Arc<Snapshot>, req: Request<Incoming>, grpc: bool) -> RouteResult {
    let settings = &snap.table.settings;
    let fail_inbound = |e: ProxyError| {
        let error = Some(e.reason());
        (e, Info { stats: Some(Arc::clone(&snap.inbound_stats)), service: None, error })
    };
    if snap.inbound.is_none() {
        return Err(fail_inbound(ProxyError::NoEndpoint("inbound".into())));
    }
    if content_length(req.headers()).is_some_and(|n| n > settings.max_body_bytes) {
        return Err(fail_inbound(ProxyError::BodyTooLarge(settings.max_body_bytes)));
    }
    let mut timeout = settings.response_timeout;
    if grpc && let Some(t) = grpc_timeout(req.headers()) {
        timeout = timeout.min(t);
    }
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else {
        ReqBody::Stream { prefix: None, rest: body, remaining: settings.max_body_bytes, limit: settings.max_body_bytes }
    };
    let req = Request::from_parts(parts, body);
    let stats = Arc::clone(&snap.inbound_stats);
    Ok(Routed { req, target: Target { snap, backend: None, timeout, stats, grpc } })
}

/// Reads up to `limit` bytes of the body. A body that ends within the limit comes back whole
/// (replayable); a longer one comes back as the prefix plus the rest, streamed.
async fn read_prefix(mut body: Incoming, limit: usize, max_body: u64) -> Result<ReqBody, ProxyError> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let have = first.as_ref().map_or(buf.len(), Bytes::len);
        if have >= limit {
            let prefix = first.unwrap_or_else(|| buf.freeze());
            let remaining = max_body.saturating_sub(prefix.len() as u64);
            return Ok(ReqBody::Stream { prefix: Some(prefix), rest: body, remaining, limit: max_body });
        }
        match body.frame().await {
            None => {
                let b = first.unwrap_or_else(|| buf.freeze());
                return Ok(if b.is_empty() { ReqBody::Empty } else { ReqBody::Full(Some(b)) });
            }
            Some(Err(e)) => return Err(ProxyError::BodyRead(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if (have + data.len()) as u64 > max_body {
                    return Err(ProxyError::BodyTooLarge(max_body));
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(data),
                    None => buf.extend_from_slice(&data),
                    Some(f) => {
                        buf.extend_from_slice(&f);
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
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
            assert_eq!(request_host(&req), want, "{uri} {host:?}");
        }
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
