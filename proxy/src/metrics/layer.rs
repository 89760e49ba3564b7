//! The metrics layer: counts, latency, the in-flight gauge and the count by priority and outcome
//! of every request, including those
//! the proxy answers itself. It reads where the request went from the response's [`Tag`] and the
//! proxy's own error reason from its [`Answered`] extension.

use super::registry::{Direction, Metrics};
use super::route::Tag;
use crate::body::RespBody;
use crate::error::Answered;
use http::{Request, Response};
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use vane_route::priority::{Outcome, Priority};

/// Layer that records request metrics.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    direction: Direction,
}

impl MetricsLayer {
    /// A layer recording into `metrics` for one listener.
    pub fn new(metrics: Arc<Metrics>, direction: Direction) -> MetricsLayer {
        MetricsLayer { metrics, direction }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        let in_flight = self.metrics.in_flight(self.direction);
        MetricsService { inner, metrics: Arc::clone(&self.metrics), direction: self.direction, in_flight }
    }
}

/// Records the count, latency and in-flight gauge of each request.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    direction: Direction,
    in_flight: Gauge,
}

impl<S, B> tower::Service<Request<B>> for MetricsService<S>
where
    S: tower::Service<Request<B>, Response = Response<RespBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<RespBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let direction = self.direction;
        let priority = Priority::of(req.headers());
        self.in_flight.inc();
        let guard = GaugeGuard(self.in_flight.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            drop(guard);
            let error = resp.extensions().get::<Answered>().map_or("", |a| a.0);
            let tag = resp.extensions().get::<Tag>();
            let status = resp.status().as_u16();
            metrics.record(direction, tag, error, status, start.elapsed().as_secs_f64());
            metrics.priority.record(direction, priority, Outcome::of(status, error));
            Ok(resp)
        })
    }
}

/// Decrements the in-flight gauge when the request is answered or abandoned.
struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
