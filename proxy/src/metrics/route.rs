//! The handles of one route's requests: resolved when a config is applied, carried by the
//! request as a [`Tag`], so that the request path only touches atomics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::fmt::Write;
use std::sync::Arc;

/// A label value that is cheap to clone (names from the config).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(s.into())
    }
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local app.
    Outbound,
    /// From a peer, to the local model server.
    Inbound,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        })
    }
}

/// Metric handles for one (direction, service, route, backend), resolved when a config is
/// applied so that a request only touches atomics.
#[derive(Debug)]
pub struct RouteStats {
    pub(super) labels: RouteLabels,
    pub(super) latency: Histogram,
    pub(super) ok: Counter,
    pub(super) retries: Family<RetryLabels, Counter>,
    pub(super) budget_exhausted: Counter,
    pub(super) hedges: Counter,
    pub(super) hedges_won: Counter,
}

impl RouteStats {
    /// Counts an attempt sent again, by why (`vane_retries_total`).
    pub fn retried(&self, reason: &'static str) {
        self.retries.get_or_create(&RetryLabels { route: self.labels.clone(), reason }).inc();
    }

    /// Counts a hedge sent (`vane_hedges_total`), and whether its answer was the one kept
    /// (`vane_hedges_won_total`).
    pub fn hedged(&self, won: Option<bool>) {
        match won {
            None => {
                self.hedges.inc();
            }
            Some(true) => {
                self.hedges_won.inc();
            }
            Some(false) => {}
        }
    }

    /// Counts a retry the backend's budget refused (`vane_retry_budget_exhausted_total`).
    pub fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }
}

/// Response extension: where a request went, for the metrics layer. The route layer leaves it
/// on the response (or on the error that becomes one).
#[derive(Clone, Debug)]
pub enum Tag {
    /// Routed to a backend (or the inbound target): its handles.
    Route(Arc<RouteStats>),
    /// The service was found but the request went no further.
    Service(Name),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(super) direction: Direction,
    pub(super) service: Name,
    pub(super) route: Name,
    pub(super) backend: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) direction: Direction,
    pub(super) service: Name,
    pub(super) route: Name,
    pub(super) backend: Name,
    pub(super) status: u16,
    pub(super) error: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RetryLabels {
    #[prometheus(flatten)]
    pub(super) route: RouteLabels,
    pub(super) reason: &'static str,
}

impl RequestLabels {
    pub(super) fn new(l: &RouteLabels, status: u16, error: &'static str) -> RequestLabels {
        RequestLabels {
            direction: l.direction,
            service: l.service.clone(),
            route: l.route.clone(),
            backend: l.backend.clone(),
            status,
            error,
        }
    }
}
