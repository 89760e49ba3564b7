//! The admin endpoints: `/live`, `/ready` (once every watch has listed), `/metrics`
//! (OpenMetrics text) and `/status` (JSON: table version, services, refused HTTPRoutes), on
//! `vane_runtime::admin`.

use crate::state::Snapshot;
use hyper::StatusCode;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::watch;
use vane_runtime::admin::{self, MetricsPage, Readiness};

/// The admin handler over the metrics registry and the published tables.
pub fn admin(registry: Arc<Registry>, snapshots: watch::Receiver<Arc<Snapshot>>) -> admin::Admin {
    let ready = snapshots.clone();
    admin::Admin::new()
        .ready(move || match ready.borrow().ready {
            true => Readiness::Ready("ready\n".into()),
            false => Readiness::NotReady("not ready: watches not synced\n".into()),
        })
        .metrics(move |_| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).map_err(|e| e.to_string())?;
            Ok(MetricsPage::openmetrics(out))
        })
        .routes(move |parts| {
            (parts.uri.path() == "/status").then(|| {
                let snap = snapshots.borrow().clone();
                admin::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "version": snap.version,
                        "ready": snap.ready,
                        "services": snap.services.len(),
                        "problems": snap.status,
                    }),
                )
            })
        })
        .hint("try /live /ready /metrics /status")
}
