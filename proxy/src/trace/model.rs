//! The request side of observing: a layer just below the route layer, where the request is
//! routed and its body, when the route layer read it, is at hand. It finds the model the
//! request is for, enters its backend's busy clock (requests with a body only), and leaves both
//! on the answer as a [`RequestInfo`] for the [`ObserveLayer`](super::ObserveLayer) above.
//!
//! The model: the `model` field of a JSON body the route layer holds (whole, or the prefix it
//! read for a model route), else a KServe v2 path's model, else (inbound) the `vane-model`
//! header the caller's sidecar set; else none (`-`). A streamed body is never read for it.
//! A KServe v2 request's held body also gives its input tokens, when it names them
//! ([`crate::metrics::kserve`]).

use super::observer::{Observer, Ticket};
use crate::balance::Target;
use crate::body::{ReqBody, RespBody};
use crate::error::Error;
use crate::metrics::Direction;
use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use vane_route::model::{model_from_json_prefix, model_from_kserve_path};

/// The header an outbound sidecar tells the inbound one the model with (the inbound side does
/// not read bodies).
pub const MODEL_HEADER: &str = "vane-model";

/// Where KServe v2 model paths start.
const KSERVE_PREFIX: &str = "/v2/models/";

/// Response (or error) extension: what the request side learnt.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// The model the request named.
    pub model: Option<Arc<str>>,
    /// Its part of the backend's busy clock.
    pub ticket: Option<Arc<Ticket>>,
    /// A KServe v2 request with a body (its answer's tokens are read as KServe gives them).
    pub kserve: bool,
    /// Input tokens the request itself names (a KServe v2 body held by the route layer).
    pub input_tokens: Option<u64>,
}

/// Layer for [`ModelService`].
#[derive(Clone, Debug)]
pub struct ModelLayer {
    observer: Arc<Observer>,
    direction: Direction,
}

impl ModelLayer {
    /// The request side of `observer` for one listener.
    pub fn new(observer: Arc<Observer>, direction: Direction) -> ModelLayer {
        ModelLayer { observer, direction }
    }
}

impl<S> tower::Layer<S> for ModelLayer {
    type Service = ModelService<S>;
    fn layer(&self, inner: S) -> ModelService<S> {
        ModelService { inner, observer: Arc::clone(&self.observer), direction: self.direction }
    }
}

/// Finds the model and enters the busy clock; see the module docs.
#[derive(Clone, Debug)]
pub struct ModelService<S> {
    inner: S,
    observer: Arc<Observer>,
    direction: Direction,
}

/// The model of a routed request.
fn model_of(req: &Request<ReqBody>, direction: Direction) -> Option<Arc<str>> {
    if direction == Direction::Inbound
        && let Some(v) = req.headers().get(MODEL_HEADER).and_then(|v| v.to_str().ok())
    {
        return Some(v.into());
    }
    let body = match req.body() {
        ReqBody::Full(Some(b)) | ReqBody::Stream { prefix: Some(b), .. } => model_from_json_prefix(b),
        _ => None,
    };
    body.map(Arc::from).or_else(|| model_from_kserve_path(req.uri().path()).map(Arc::from))
}

impl<S> tower::Service<Request<ReqBody>> for ModelService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error>,
{
    type Response = Response<RespBody>;
    type Error = Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let model = model_of(&req, self.direction);
        if self.direction == Direction::Outbound
            && let Some(m) = &model
            && !req.headers().contains_key(MODEL_HEADER)
            && let Ok(v) = HeaderValue::from_str(m)
        {
            req.headers_mut().insert(MODEL_HEADER, v);
        }
        // Internal: a request without a body (a health check, `GET /v1/models`) is no GPU work,
        // and passes without touching the clock.
        let has_body = !matches!(req.body(), ReqBody::Empty);
        let ticket = req.extensions().get::<Target>().filter(|_| has_body).map(|t| {
            let k = u32::try_from(t.backend.endpoints.len()).unwrap_or(u32::MAX);
            self.observer.enter(self.direction, &t.backend.name, k)
        });
        let kserve = has_body && req.uri().path().starts_with(KSERVE_PREFIX);
        let input_tokens = match req.body() {
            ReqBody::Full(Some(b)) if kserve => crate::metrics::kserve::input_tokens(b),
            _ => None,
        };
        let info = (model.is_some() || ticket.is_some() || kserve).then_some(RequestInfo {
            model,
            ticket,
            kserve,
            input_tokens,
        });
        Tagged { fut: self.inner.call(req), info }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, with the [`RequestInfo`] put on it.
    #[derive(Debug)]
    pub struct Tagged<F> {
        #[pin]
        fut: F,
        info: Option<RequestInfo>,
    }
}

impl<F> Future for Tagged<F>
where
    F: Future<Output = Result<Response<RespBody>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut out = ready!(this.fut.poll(cx));
        if let Some(info) = this.info.take() {
            match &mut out {
                Ok(r) => {
                    r.extensions_mut().insert(info);
                }
                Err(e) => {
                    e.extensions_mut().insert(info);
                }
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, body: ReqBody, header: Option<&str>) -> Request<ReqBody> {
        let mut b = Request::post(path);
        if let Some(h) = header {
            b = b.header(MODEL_HEADER, h);
        }
        b.body(body).unwrap()
    }

    #[test]
    fn the_model_from_a_held_body_a_kserve_path_or_the_peers_header() {
        let json = || ReqBody::Full(Some(bytes::Bytes::from_static(br#"{"stream":true,"model":"llama-3"}"#)));
        let m = |r: &Request<ReqBody>, d| model_of(r, d).map(|m| m.to_string());
        assert_eq!(m(&req("/v1/chat/completions", json(), None), Direction::Outbound).as_deref(), Some("llama-3"));
        assert_eq!(
            m(&req("/v2/models/resnet/infer", ReqBody::Empty, None), Direction::Outbound).as_deref(),
            Some("resnet")
        );
        assert_eq!(m(&req("/v1/x", ReqBody::Empty, None), Direction::Outbound), None);
        // Inbound, the caller's sidecar says; outbound, a caller's own header is not believed.
        assert_eq!(m(&req("/v1/x", ReqBody::Empty, Some("llama-3")), Direction::Inbound).as_deref(), Some("llama-3"));
        assert_eq!(m(&req("/v1/x", ReqBody::Empty, Some("llama-3")), Direction::Outbound), None);
    }
}
