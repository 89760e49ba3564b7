//! The one place the request path is composed. Order, outermost first:
//!
//! 1. [`MetricsLayer`]: sees every request, including ones the proxy answers itself;
//! 2. inbound only, [`LoadReportLayer`]: the pod's load (ORCA) on every response;
//! 3. [`RouteLayer`]: snapshot → service → route → backend (or the inbound target);
//! 4. [`ForwardService`]: endpoint choice, pooled client, ejection, retry on connect failure.

use crate::config::Store;
use crate::forward::ForwardService;
use crate::load::{LoadReportLayer, LoadReportService, LocalLoad};
use crate::metrics::{Direction, Metrics, MetricsLayer, MetricsService};
use crate::route::{RouteLayer, RouteService};
use std::sync::Arc;
use tower::ServiceBuilder;

/// The outbound per-request service.
pub type Outbound = MetricsService<RouteService<ForwardService>>;

/// The inbound per-request service: as outbound, plus the pod's load on every response.
pub type Inbound = MetricsService<LoadReportService<RouteService<ForwardService>>>;

/// Builds the outbound stack.
pub fn outbound(store: Arc<Store>, metrics: Arc<Metrics>) -> Outbound {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics, Direction::Outbound))
        .layer(RouteLayer::new(store, Direction::Outbound))
        .service(ForwardService)
}

/// Builds the inbound stack.
pub fn inbound(store: Arc<Store>, metrics: Arc<Metrics>, load: Arc<LocalLoad>) -> Inbound {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics, Direction::Inbound))
        .layer(LoadReportLayer::new(load, Arc::clone(&store)))
        .layer(RouteLayer::new(store, Direction::Inbound))
        .service(ForwardService)
}
