//! The coalescing counters, per service and route.

use super::route::Name;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    service: Name,
    route: Name,
}

/// `vane_coalesce_leaders_total`, `vane_coalesce_followers_total`, `vane_coalesce_saved_bytes_total`.
#[derive(Debug, Default)]
pub struct CoalesceMetrics {
    leaders: Family<RouteLabels, Counter>,
    followers: Family<RouteLabels, Counter>,
    saved: Family<RouteLabels, Counter>,
}

/// The counters of one route.
#[derive(Clone, Debug, Default)]
pub struct CoalesceStats {
    /// Requests that went upstream for a group (whether or not anyone followed).
    pub leaders: Counter,
    /// Requests answered from another request's upstream call.
    pub followers: Counter,
    /// Response body bytes that followers received without an upstream call of their own.
    pub saved_bytes: Counter,
}

impl CoalesceMetrics {
    pub(super) fn register(registry: &mut Registry) -> CoalesceMetrics {
        let m = CoalesceMetrics::default();
        registry.register(
            "coalesce_leaders",
            "Requests on coalescing routes that went upstream (and others could follow)",
            m.leaders.clone(),
        );
        registry.register(
            "coalesce_followers",
            "Requests answered from an identical request's upstream call",
            m.followers.clone(),
        );
        registry.register_with_unit(
            "coalesce_saved",
            "Response body bytes followers received without an upstream call of their own",
            Unit::Bytes,
            m.saved.clone(),
        );
        m
    }

    /// The counters of a route.
    pub fn stats(&self, service: &Arc<str>, route: &Arc<str>) -> CoalesceStats {
        let l = RouteLabels { service: Name(Arc::clone(service)), route: Name(Arc::clone(route)) };
        CoalesceStats {
            leaders: self.leaders.get_or_create(&l).clone(),
            followers: self.followers.get_or_create(&l).clone(),
            saved_bytes: self.saved.get_or_create(&l).clone(),
        }
    }
}
