//! A backend as the balancer sees it: its endpoints' live state and how to choose among them.

use super::endpoint::{Endpoint, Policy};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vane_route::balance::{BackendPrior, Prior};
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
    /// The backend's typical figures, shared with the previous snapshot's backend of the same name.
    pub typical: Arc<Typical>,
    /// Ask its endpoints for an ORCA load report with every request.
    pub ask_load_reports: bool,
}

impl Backend {
    /// The figures an endpoint without samples of its own reads (and decays towards): the
    /// backend's typical ones, or the configured default RTT (and no body time) where it has
    /// measured nothing.
    pub fn prior(&self, now_ns: u64) -> Prior {
        let default = Prior { rtt_ns: self.settings.default_rtt.as_nanos() as f64, body_ns: 0.0 };
        self.typical.get(now_ns, self.settings.ewma_decay, default)
    }
}

/// A backend's typical first-byte and body times: every sample of every endpoint of it, averaged
/// ([`BackendPrior`]).
#[derive(Debug)]
pub struct Typical(Mutex<BackendPrior>);

impl Default for Typical {
    fn default() -> Self {
        Typical(Mutex::new(BackendPrior::new(crate::now_ns())))
    }
}

impl Typical {
    /// Adds one answer's figures.
    pub fn observe(&self, rtt: Option<Duration>, body: Option<Duration>, decay: Duration) {
        crate::lock(&self.0).observe(rtt, body, crate::now_ns(), decay);
    }

    fn get(&self, now_ns: u64, decay: Duration, default: Prior) -> Prior {
        crate::lock(&self.0).get(now_ns, decay, default)
    }
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
