//! The admin listener: `/live`, `/ready`, `/metrics`, `/config`, `/identity`, on the admin
//! server every Vane binary shares (`vane_runtime::admin`).

use crate::config::Store;
use crate::control::ControlStatus;
use crate::identity::Identity;
use crate::metrics::{EndpointRow, Metrics};
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vane_runtime::admin::{Admin, MetricsPage, Readiness};

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The config store.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown starts: `/ready` turns 503 so that no new traffic is sent here.
    pub draining: AtomicBool,
    /// The control service connection, when one is used.
    pub control: Option<Arc<ControlStatus>>,
    /// This proxy's workload identity (`/ready` waits for its first certificate).
    pub identity: Arc<Identity>,
}

impl AdminState {
    /// What `/ready` says: 503 while draining, before the first certificate (with an identity,
    /// and once it expired) or before the control service's first snapshot is live, else the
    /// config version (and the control connection, when there is one).
    pub fn readiness(&self) -> Readiness {
        let control = match &self.control {
            Some(c) => format!("control: {}\n", c.describe()),
            None => String::new(),
        };
        if self.draining.load(Ordering::Relaxed) {
            Readiness::NotReady("draining\n".into())
        } else if let Some(why) = self.identity.not_ready() {
            Readiness::NotReady(format!("{why}\n{control}"))
        } else if !self.store.discovery_synced() {
            Readiness::NotReady(format!("waiting for the control service's first snapshot\n{control}"))
        } else {
            Readiness::Ready(format!("ready (config version {})\n{control}", self.store.load().version))
        }
    }

    /// The `/metrics` page, with every endpoint's gauges read from the active snapshot.
    pub fn metrics_page(&self) -> MetricsPage {
        let snap = self.store.load();
        let now = crate::now_ns();
        let settings = &snap.table.settings;
        let decay = settings.ewma_decay;
        let rows = snap.backends.iter().chain(snap.inbound.iter()).flat_map(|b| {
            let prior = b.prior(now);
            b.endpoints.iter().map(move |e| EndpointRow {
                backend: &b.name,
                addr: e.addr,
                rtt_seconds: e.rtt_seconds(now, decay, prior),
                token_seconds: e.token_seconds(now, decay, prior),
                report_trust: e.report_trust(now, settings),
                in_flight: e.in_flight(),
                ejected: e.ejected(now),
            })
        });
        let now = std::time::SystemTime::now();
        let expiry = self.identity.load().map(|l| match l.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        });
        self.metrics.identity.expires_in(expiry);
        MetricsPage::openmetrics(self.metrics.render(rows))
    }

    /// The admin server.
    pub fn admin(self: &Arc<Self>) -> Admin {
        let (ready, metrics, config) = (Arc::clone(self), Arc::clone(self), Arc::clone(self));
        Admin::new()
            .ready(move || ready.readiness())
            .metrics(move |_| Ok(metrics.metrics_page()))
            .routes(move |parts| match parts.uri.path() {
                "/config" => {
                    let snap = config.store.load();
                    let body = serde_json::json!({ "version": snap.version, "config": snap.table.source });
                    Some(vane_runtime::admin::json(StatusCode::OK, &body))
                }
                "/identity" => Some(vane_runtime::admin::json(StatusCode::OK, &config.identity.report())),
                _ => None,
            })
            .hint("try /live /ready /metrics /config /identity")
    }
}
