//! The one place the request path is composed. Every layer takes `http::Request<B>` and returns
//! `http::Response<RespBody>`; below the error layer errors are [`crate::error::Error`]s, passed
//! up, and what a later layer needs travels in request and response extensions. Order,
//! outermost first:
//!
//! 1. [`MetricsLayer`]: sees every request, including ones the proxy answers itself;
//!    then [`ObserveLayer`]: the span, model metrics and access log of every request
//!    ([`crate::trace`]);
//! 2. inbound only, [`LoadReportLayer`]: the pod's load (ORCA) on every response;
//! 3. [`ErrorLayer`]: every error becomes its documented status and `vane-proxy-error`;
//! 4. [`RouteLayer`]: snapshot → service → route → backend (or the inbound target), left as a
//!    [`Target`](crate::balance::Target) request extension; then [`ModelLayer`]: the model and
//!    the backend's busy clock, for the observe layer;
//!    inbound only, [`AuthzLayer`]: the caller's identity (`vane-client-id`) for the app, and
//!    the authorization policy (`403 unauthorized` otherwise), before any load is spent on it;
//! 5. outbound only, [`CoalesceLayer`]: identical requests in flight share one upstream answer
//!    (on routes with `coalesce:`); above the retries, so a leader's retries are one request,
//!    and above shedding, so a follower, which costs the backend nothing, is never shed;
//! 6. [`ShedLayer`]: a request to a backend whose endpoints are all saturated is answered `429`
//!    at once, by its priority (only for backends with `shed` settings);
//! 7. outbound only, the retry layer ([`crate::retry`], tower's `Retry`): another endpoint after
//!    an outcome that says sending again is safe, within the backend's retry budget;
//! 8. outbound only, [`HedgeLayer`]: a copy to another endpoint when an attempt's first byte is
//!    late (on routes with `hedge:`), within the same retry budget;
//! 9. [`BalanceService`]: endpoint choice, pooled client, learning from the answer.

use crate::authz::{AuthzLayer, AuthzService};
use crate::balance::BalanceService;
use crate::coalesce::{CoalesceLayer, CoalesceService};
use crate::config::Store;
use crate::error::{ErrorLayer, ErrorService};
use crate::hedge::{HedgeLayer, HedgeService};
use crate::load::{LoadReportLayer, LoadReportService, LocalLoad};
use crate::metrics::{Direction, Metrics, MetricsLayer, MetricsService};
use crate::retry::RetryPolicy;
use crate::route::{RouteLayer, RouteService};
use crate::shed::{ShedLayer, ShedService};
use crate::trace::{ModelLayer, ModelService, ObserveLayer, ObserveService, Observer};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower::retry::Retry;

/// The outbound per-request service.
pub type Outbound = MetricsService<
    ObserveService<
        ErrorService<
            RouteService<ModelService<CoalesceService<ShedService<Retry<RetryPolicy, HedgeService<BalanceService>>>>>>,
        >,
    >,
>;

/// The inbound per-request service: as outbound without retries, plus the pod's load on every
/// response and authorization.
pub type Inbound = MetricsService<
    ObserveService<
        LoadReportService<ErrorService<RouteService<ModelService<AuthzService<ShedService<BalanceService>>>>>, Store>,
    >,
>;

/// Builds the outbound stack.
pub fn outbound(store: Arc<Store>, metrics: Arc<Metrics>, observer: Arc<Observer>) -> Outbound {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(Arc::clone(&metrics), Direction::Outbound))
        .layer(ObserveLayer::new(Arc::clone(&observer), Direction::Outbound))
        .layer(ErrorLayer)
        .layer(RouteLayer::new(store, Direction::Outbound))
        .layer(ModelLayer::new(observer, Direction::Outbound))
        .layer(CoalesceLayer::new(metrics))
        .layer(ShedLayer)
        .layer(crate::retry::layer())
        .layer(HedgeLayer)
        .service(BalanceService)
}

/// Builds the inbound stack.
pub fn inbound(store: Arc<Store>, metrics: Arc<Metrics>, load: Arc<LocalLoad>, observer: Arc<Observer>) -> Inbound {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(Arc::clone(&metrics), Direction::Inbound))
        .layer(ObserveLayer::new(Arc::clone(&observer), Direction::Inbound))
        .layer(LoadReportLayer::new(load, Arc::clone(&store)))
        .layer(ErrorLayer)
        .layer(RouteLayer::new(Arc::clone(&store), Direction::Inbound))
        .layer(ModelLayer::new(observer, Direction::Inbound))
        .layer(AuthzLayer::new(Arc::clone(&store), Arc::clone(&metrics)))
        .layer(ShedLayer)
        .service(BalanceService)
}
