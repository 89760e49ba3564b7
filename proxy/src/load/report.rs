//! The inbound layer that attaches the pod's load (ORCA) to every response, and serves the
//! load stream to callers.

use super::{LOAD_STREAM_PATH, LoadConfig, LocalLoad};
use crate::body::RespBody;
use crate::metrics::Tag;
use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use vane_route::orca;

/// Layer that attaches the pod's load to inbound responses.
#[derive(Clone, Debug)]
pub struct LoadReportLayer<C> {
    load: Arc<LocalLoad>,
    config: Arc<C>,
}

impl<C> LoadReportLayer<C> {
    /// Attaches figures from `load` no older than the config's `load_staleness`.
    pub fn new(load: Arc<LocalLoad>, config: Arc<C>) -> LoadReportLayer<C> {
        LoadReportLayer { load, config }
    }
}

impl<S, C> tower::Layer<S> for LoadReportLayer<C> {
    type Service = LoadReportService<S, C>;
    fn layer(&self, inner: S) -> LoadReportService<S, C> {
        LoadReportService { inner, load: Arc::clone(&self.load), config: Arc::clone(&self.config) }
    }
}

/// See [`LoadReportLayer`].
#[derive(Debug)]
pub struct LoadReportService<S, C> {
    inner: S,
    load: Arc<LocalLoad>,
    config: Arc<C>,
}

impl<S: Clone, C> Clone for LoadReportService<S, C> {
    fn clone(&self) -> Self {
        LoadReportService { inner: self.inner.clone(), load: Arc::clone(&self.load), config: Arc::clone(&self.config) }
    }
}

impl<S, B, C> tower::Service<Request<B>> for LoadReportService<S, C>
where
    S: tower::Service<Request<B>, Response = Response<RespBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    C: LoadConfig,
{
    type Response = Response<RespBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let load = Arc::clone(&self.load);
        let staleness = self.config.staleness();
        if req.uri().path() == LOAD_STREAM_PATH && req.method() == http::Method::GET {
            let mut resp = Response::new(load.stream(staleness));
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            resp.extensions_mut().insert(Tag::Service("load-stream".into()));
            return Box::pin(std::future::ready(Ok(resp)));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if !resp.headers().contains_key(&LOAD_REPORT)
                && let Some(report) = load.get(staleness)
                && let Ok(v) = HeaderValue::from_str(&orca::format(&report))
            {
                resp.headers_mut().insert(LOAD_REPORT, v);
            }
            Ok(resp)
        })
    }
}

/// [`orca::HEADER`], parsed once (a name given as a string is parsed on every use).
const LOAD_REPORT: http::HeaderName = http::HeaderName::from_static(orca::HEADER);
