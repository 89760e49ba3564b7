//! The one place the request path is composed. Order, outermost first:
//!
//! 1. [`MetricsLayer`]: sees every request, including ones the proxy answers itself;
//! 2. [`RouteLayer`]: snapshot → service → route → backend (or the inbound target);
//! 3. [`ForwardService`]: endpoint choice, pooled client, ejection, retry on connect failure.

use crate::config::Store;
use crate::forward::ForwardService;
use crate::metrics::{Direction, Metrics, MetricsLayer, MetricsService};
use crate::route::{RouteLayer, RouteService};
use std::sync::Arc;
use tower::ServiceBuilder;

/// The full per-request service.
pub type Stack = MetricsService<RouteService<ForwardService>>;

/// Builds the stack for one listener.
pub fn build(store: Arc<Store>, metrics: Arc<Metrics>, direction: Direction) -> Stack {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics, direction))
        .layer(RouteLayer::new(store, direction))
        .service(ForwardService)
}
