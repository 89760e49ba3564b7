//! The balance service, the bottom of the stack: one attempt of one request. It picks an endpoint
//! of the request's [`Target`] backend (not one already [`Tried`]), sends the request over a
//! pooled connection, and learns from the answer.
//!
//! - Latency is measured to the first byte of the response body (for a streaming model server the
//!   first token, after queueing and prefill; headers come at once) and fed to the endpoint's
//!   peak-EWMA.
//! - A refused connection ejects the endpoint at once; 5xx answers, resets and timeouts eject
//!   after `consecutive_failures` in a row. A failure that is the client's (its body broke off or
//!   went over `max_body_bytes` while it streamed) is answered as such and never counted against
//!   the endpoint.
//! - Errors are classified ([`crate::error::Retryable`]) and carry the endpoint tried
//!   ([`Attempted`]); whether to try again is the retry layer's decision.

use super::backend::{Attempted, Picked, Target};
use super::endpoint::Endpoint;
use super::guard::InFlightGuard;
use crate::body::{ReqBody, RespBody};
use crate::error::{Error, ProxyError};
use http::header;
use http::{Request, Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use vane_route::health::Outcome;
use vane_route::orca;
use vane_route::select::Tried;
use vane_route::table::Settings;

/// Sends a request with a [`Target`] extension to one endpoint of its backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct BalanceService;

impl tower::Service<Request<ReqBody>> for BalanceService {
    type Response = Response<RespBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        Box::pin(attempt(req))
    }
}

async fn attempt(req: Request<ReqBody>) -> Result<Response<RespBody>, Error> {
    let (mut parts, body) = req.into_parts();
    // What the layers above left on the request (target, tried set, metric tag) goes back to them
    // on the response or the error, in the same map; nothing of it travels upstream.
    let ext = std::mem::take(&mut parts.extensions);
    let Some(target) = ext.get::<Target>().cloned() else {
        return Err(Error::with_extensions(
            ProxyError::Internal("request reached the balancer without a target".into()),
            ext,
        ));
    };
    let tried = ext.get::<Tried>().copied().unwrap_or_default();
    let backend = &target.backend;
    let settings = &*backend.settings;
    let mut rng = fastrand::Rng::new();
    let own = backend.typical.expected_tokens(target.asked_tokens);
    let Some((i, load_age)) = super::pick::pick(backend, tried, &mut rng, own) else {
        return Err(Error::with_extensions(ProxyError::NoEndpoint(backend.name.to_string()), ext));
    };
    if let Some(age) = load_age {
        backend.load_age.observe(age as f64 / 1e9);
    }
    if let Some(p) = ext.get::<Picked>() {
        p.0.store(i + 1, std::sync::atomic::Ordering::Relaxed);
    }
    let ep = &backend.endpoints[i];
    let attempted = |e: ProxyError, mut ext: http::Extensions| {
        ext.insert(Attempted(i));
        Error::with_extensions(e, ext)
    };
    crate::client::headers::for_endpoint(&mut parts, ep.protocol, &ep.authority);
    // vLLM reports its load (ORCA) only when asked; a caller's own choice of form stands.
    if backend.ask_load_reports {
        parts.headers.entry(ASK_FORMAT).or_insert(http::HeaderValue::from_static("TEXT"));
    }
    let failure = body.failure();
    let up = Request::from_parts(parts, body);

    let typical = (backend.endpoints.len() > 1).then_some(&backend.typical);
    let mut guard = InFlightGuard::start(ep, typical, settings.ewma_decay).asking(target.asked_tokens, own);
    let send = crate::client::send(
        &ep.pool,
        ep.addr,
        ep.protocol,
        ep.mesh.as_ref(),
        up,
        settings.connect_timeout,
        settings.idle_timeout,
    );
    let sent = tokio::time::timeout(target.timeout, send).await;
    // The client's body broke off or went over the limit: its fault, not the endpoint's.
    let client_fault = || match failure.as_ref().and_then(|f| f.get()) {
        Some(true) => Some(ProxyError::BodyTooLarge(settings.max_body_bytes)),
        Some(false) => Some(ProxyError::BodyAborted(ep.addr)),
        None => None,
    };
    match sent {
        Err(_) => {
            let e = client_fault().unwrap_or_else(|| {
                ep.record(Outcome::Failure, &settings.ejection);
                // It takes at least this long to answer: known, though not how much longer.
                ep.observe(Some(target.timeout), None, settings.ewma_decay);
                ProxyError::Timeout(ep.addr, target.timeout)
            });
            Err(attempted(e, ext))
        }
        Ok(Err(e)) => {
            let e = client_fault().unwrap_or_else(|| {
                if e.is_connect() {
                    ep.record(Outcome::ConnectFailed, &settings.ejection);
                    ProxyError::ConnectFailed(ep.addr, e)
                } else {
                    ep.record(Outcome::Failure, &settings.ejection);
                    ProxyError::Upstream(ep.addr, e)
                }
            });
            Err(attempted(e, ext))
        }
        Ok(Ok((resp, conn, sent_at))) => {
            let measure = learn_from(ep, &resp, settings);
            let outcome = if resp.status().is_server_error() { Outcome::Failure } else { Outcome::Success };
            ep.record(outcome, &settings.ejection);
            let (mut rparts, rbody) = resp.into_parts();
            crate::client::headers::strip_hop_by_hop(&mut rparts.headers);
            if rparts.extensions.is_empty() {
                rparts.extensions = ext;
            } else {
                rparts.extensions.extend(ext);
            }
            if rparts.status.is_client_error()
                || rparts.status.is_server_error()
                || rparts.headers.contains_key("grpc-status")
            {
                // An answer the retry layer may send to another endpoint (a 429 or 503, a gRPC
                // UNAVAILABLE, as the route says): which endpoint it came from.
                rparts.extensions.insert(Attempted(i));
            }
            // Timed from when the request went out on its connection (a new one's setup excluded).
            guard.hold(conn, settings.idle_timeout, measure.then_some((sent_at, settings.ewma_decay)));
            if measure && let Some(sse) = streams_tokens(&rparts.headers) {
                guard.streams(sse, settings.ewma_decay);
            }
            let done: Option<Box<dyn crate::body::Completion>> = if http_body::Body::is_end_stream(&rbody) {
                // No body to wait for: the connection is free now.
                guard.finish();
                None
            } else {
                Some(Box::new(guard))
            };
            Ok(Response::from_parts(rparts, RespBody::Upstream { body: rbody, done }))
        }
    }
}

/// Whether an answer streams tokens by its content type: `Some(true)` for server-sent events (a
/// model server's token stream), `Some(false)` for gRPC (a message a token, for a streaming
/// call), `None` otherwise.
fn streams_tokens(headers: &http::HeaderMap) -> Option<bool> {
    let ct = headers.get(header::CONTENT_TYPE)?.as_bytes();
    let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"text/event-stream") {
        Some(true)
    } else if starts(b"application/grpc") {
        Some(false)
    } else {
        None
    }
}

/// What an answer's head tells the balancer: the endpoint's own load report (ORCA), and
/// for a 429/503 a penalty for as long as `Retry-After` asks (a fast refusal is not a fast
/// endpoint, so its latency is not averaged in).
/// Returns whether the answer's latency should be sampled (at its first body byte).
fn learn_from<B>(ep: &Endpoint, resp: &Response<B>, settings: &Settings) -> bool {
    let now = crate::now_ns();
    if let Some(v) = resp.headers().get(&LOAD_REPORT)
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

/// [`orca::HEADER`], parsed once.
const LOAD_REPORT: http::HeaderName = http::HeaderName::from_static(orca::HEADER);

/// [`orca::FORMAT_HEADER`], parsed once (a name given as a string is parsed and checked on every use).
const ASK_FORMAT: http::HeaderName = http::HeaderName::from_static(orca::FORMAT_HEADER);

/// A `Retry-After` longer than this is not followed (the endpoint is probed again after it).
const MAX_PENALTY: Duration = Duration::from_secs(30);
