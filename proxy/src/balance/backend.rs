//! A backend as the balancer sees it: its endpoints' live state and how to choose among them.

use super::endpoint::{Endpoint, Policy};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use vane_route::table::Settings;

/// A backend with live endpoint state.
#[derive(Debug)]
pub struct Backend {
    /// Backend name.
    pub name: Arc<str>,
    /// Endpoints, in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How endpoints are chosen.
    pub policy: Policy,
    /// Round-robin position.
    pub rr: AtomicUsize,
    /// The config's proxy-wide settings (timeouts, ejection, decay), shared by every backend of
    /// one snapshot.
    pub settings: Arc<Settings>,
    /// Age of the reported load used at each balancing decision.
    pub load_age: Histogram,
}

/// Request extension: where the balancer sends the request (left by the route layer).
#[derive(Clone, Debug)]
pub struct Target {
    /// The backend chosen by the route's split (or the inbound target).
    pub backend: Arc<Backend>,
    /// Response-header deadline.
    pub timeout: Duration,
}

/// Error extension: the endpoint an attempt went to (by index in its backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempted(pub usize);
