//! The admin endpoints: `/live`, `/ready` (once every watch has listed), `/metrics`
//! (OpenMetrics text) and `/status` (JSON: table version, services, refused HTTPRoutes).

use super::{Body, text};
use crate::state::Snapshot;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::watch;

/// Admin request handler.
#[derive(Clone, Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl Admin {
    /// A handler over the metrics registry and the published tables.
    pub fn new(registry: Arc<Registry>, snapshots: watch::Receiver<Arc<Snapshot>>) -> Admin {
        Admin { registry, snapshots }
    }

    /// Answers one request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => {
                if self.snapshots.borrow().ready {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready: watches not synced\n")
                }
            }
            "/metrics" => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => {
                        let mut resp = text(StatusCode::OK, out);
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        resp
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            "/status" => {
                let snap = self.snapshots.borrow().clone();
                let body = serde_json::json!({
                    "version": snap.version,
                    "ready": snap.ready,
                    "services": snap.services.len(),
                    "problems": snap.status,
                });
                let mut resp = Response::new(
                    Full::new(bytes::Bytes::from(serde_json::to_vec_pretty(&body).expect("status serializes")))
                        .boxed_unsync(),
                );
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found; try /live /ready /metrics /status\n"),
        }
    }
}
