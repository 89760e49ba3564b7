//! The webhook's HTTPS listener: `POST /inject` with an AdmissionReview, answered by
//! [`super::review::respond`]; the TLS handshake on `tokio-rustls`, the accept loop and drain
//! from `vane-runtime`, HTTP/1.1 and h2 (the API server speaks either) by ALPN.
//!
//! | metric | labels |
//! |---|---|
//! | `vane_injector_injected_total` | |
//! | `vane_injector_skipped_total` | `reason`: not-enabled, disabled, already-injected, host-network, name-conflict, invalid-annotation, namespace-unknown, not-a-pod, not-create, invalid-review, no-spec, internal |

use super::review::{self, Outcome};
use super::settings::InjectSettings;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vane_runtime::CancellationToken;
use vane_runtime::serve::{Accepted, Acceptor, HttpOptions};

/// The largest AdmissionReview read. The API server stores objects of at most 1.5 MiB, and a
/// review carries the object (and for updates the old one too) with a little around it.
pub const MAX_REVIEW_BYTES: usize = 4 << 20;

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespace name → its labels, or `None` when the namespace is not known (yet).
pub type NamespaceLabels = Arc<dyn Fn(&str) -> Option<BTreeMap<String, String>> + Send + Sync>;

/// Labels of `vane_injector_skipped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// Why the pod was left as it is.
    pub reason: &'static str,
}

/// The injector's metrics. Cloning shares the series.
#[derive(Clone, Debug, Default)]
pub struct InjectorMetrics {
    /// Pods patched.
    pub injected: Counter,
    /// Reviews answered without a patch, by reason.
    pub skipped: Family<SkipLabels, Counter>,
}

// === impl InjectorMetrics ===

impl InjectorMetrics {
    /// Creates the metrics and registers them under `vane_injector_`.
    pub fn new(registry: &mut Registry) -> InjectorMetrics {
        let m = InjectorMetrics::default();
        let r = registry.sub_registry_with_prefix("vane_injector");
        r.register("injected", "Pods the injector patched", m.injected.clone());
        r.register("skipped", "Admission reviews answered without a patch, by reason", m.skipped.clone());
        m
    }
}

/// The `/inject` handler. Cheap to clone.
#[derive(Clone)]
pub struct Injector {
    settings: Arc<InjectSettings>,
    namespaces: NamespaceLabels,
    metrics: InjectorMetrics,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("settings", &self.settings).finish_non_exhaustive()
    }
}

// === impl Injector ===

impl Injector {
    /// A handler with these settings, namespace labels and metrics.
    pub fn new(settings: InjectSettings, namespaces: NamespaceLabels, metrics: InjectorMetrics) -> Injector {
        Injector { settings: Arc::new(settings), namespaces, metrics }
    }

    /// Answers one request: `POST /inject` with an AdmissionReview, else 404 or 405.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/inject" {
            return plain(StatusCode::NOT_FOUND, "try POST /inject\n");
        }
        if req.method() != Method::POST {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return r;
        }
        let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.count(&Outcome::Skipped { pod: String::new(), reason: "invalid-review", detail: e.to_string() });
                return plain(StatusCode::BAD_REQUEST, format!("cannot read the review: {e}\n"));
            }
        };
        let namespaces = self.namespaces.clone();
        let (answer, outcome) = review::respond(&body, &self.settings, &move |ns| namespaces(ns));
        self.count(&outcome);
        let mut r = Response::new(Full::new(Bytes::from(answer)));
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        r
    }

    fn count(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Injected { pod, ops } => {
                self.metrics.injected.inc();
                tracing::info!(%pod, ops, "injected");
            }
            Outcome::Skipped { pod, reason, detail } => {
                self.metrics.skipped.get_or_create(&SkipLabels { reason }).inc();
                // Pods outside the opt-in are the common case: not worth a line at info.
                if matches!(*reason, "not-enabled" | "disabled" | "already-injected" | "not-create") {
                    tracing::debug!(%pod, reason, "not injected: {detail}");
                } else {
                    tracing::warn!(%pod, reason, "not injected: {detail}");
                }
            }
        }
    }
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Serves `injector` over TLS on `listener` until `shutdown`, then drains for at most
/// `options.grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    injector: Injector,
    options: HttpOptions,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(options.max_concurrent_streams);
    let builder = Arc::new(builder);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    Acceptor::new(listener)
        .max_connections(options.max_connections)
        .run(shutdown, |Accepted { stream, peer, guard }| {
            let (acceptor, builder, injector, watcher) =
                (acceptor.clone(), builder.clone(), injector.clone(), graceful.watcher());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
                let service = hyper::service::service_fn(move |req| {
                    let injector = injector.clone();
                    async move { Ok::<_, Infallible>(injector.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(guard);
            });
        })
        .await;
    if tokio::time::timeout(options.grace, graceful.shutdown()).await.is_err() {
        tracing::debug!("webhook connections still open after {:?}; closing them", options.grace);
    }
}
