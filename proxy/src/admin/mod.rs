//! The admin listener: `/live`, `/ready`, `/metrics`, `/config`.

use crate::body::RespBody;
use crate::config::Store;
use crate::metrics::{EndpointRow, Metrics};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared state of the admin endpoints.
#[derive(Debug)]
pub struct Admin {
    /// The config store.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown starts: `/ready` turns 503 so that no new traffic is sent here.
    pub draining: AtomicBool,
    /// The control service connection, when one is used.
    pub control: Option<Arc<crate::control::ControlStatus>>,
}

impl Admin {
    /// Answers one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<RespBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => {
                let control = match &self.control {
                    Some(c) => format!("control: {}\n", c.describe()),
                    None => String::new(),
                };
                if self.draining.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if !self.store.discovery_synced() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("waiting for the control service's first snapshot\n{control}"),
                    )
                } else {
                    let v = self.store.load().version;
                    text(StatusCode::OK, &format!("ready (config version {v})\n{control}"))
                }
            }
            "/metrics" => {
                let snap = self.store.load();
                let now = crate::now_ns();
                let decay = snap.table.settings.ewma_decay;
                let rows = snap.backends.iter().chain(snap.inbound.iter()).flat_map(|b| {
                    b.endpoints.iter().map(move |e| EndpointRow {
                        backend: &b.name,
                        addr: e.addr,
                        rtt_seconds: e.rtt_seconds(now, decay),
                        in_flight: e.in_flight(),
                        ejected: e.ejected(now),
                    })
                });
                let body = self.metrics.render(rows);
                let mut r = text(StatusCode::OK, &body);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                r
            }
            "/config" => {
                let snap = self.store.load();
                let body = serde_json::json!({ "version": snap.version, "config": snap.table.source });
                let mut r = text(StatusCode::OK, &format!("{body:#}\n"));
                r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found; try /live /ready /metrics /config\n"),
        }
    }

    /// A tower service answering admin requests.
    pub fn service(
        self: &Arc<Self>,
    ) -> impl tower::Service<
        Request<hyper::body::Incoming>,
        Response = Response<RespBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<RespBody>, Infallible>>,
    > + Clone
    + Send
    + 'static {
        let admin = Arc::clone(self);
        tower::service_fn(move |req: Request<hyper::body::Incoming>| std::future::ready(Ok(admin.handle(&req))))
    }
}

fn text(status: StatusCode, body: &str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
