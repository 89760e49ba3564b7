//! A small admin server: `GET /live`, `/ready` and `/metrics`, plus routes of the binary's own.
//!
//! The binary supplies the decisions (is it ready? what is the metrics page? what else is
//! served?) as closures; [`Admin::handle`] is a pure function of those and the request, and
//! [`serve`] puts it on a listener with [`crate::serve::serve_http`]. Methods other than GET and
//! HEAD get 405 with `Allow: GET, HEAD`; an unknown path gets 404 with a hint of what exists.
//!
//! ```
//! use vane_runtime::admin::{Admin, MetricsPage, Readiness, text};
//!
//! let admin = Admin::new()
//!     .ready(|| Readiness::NotReady("not ready: no good scrape yet\n".into()))
//!     .metrics(|_headers| Ok(MetricsPage::openmetrics("# EOF\n")))
//!     .routes(|parts| (parts.uri.path() == "/status").then(|| text(http::StatusCode::OK, "{}")))
//!     .hint("try /live /ready /metrics /status");
//! let resp = admin.handle(http::Request::get("/ready").body(()).unwrap());
//! assert_eq!(resp.status(), 503);
//! ```

use crate::serve::{AcceptCounters, HttpOptions, serve_http};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, request::Parts};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The response body of admin answers (whole or streamed).
pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// The OpenMetrics text content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/ready` answers: 200 or 503, with this body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// 200.
    Ready(String),
    /// 503.
    NotReady(String),
}

/// A rendered metrics page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsPage {
    /// Its content type.
    pub content_type: &'static str,
    /// The page.
    pub body: Bytes,
}

impl MetricsPage {
    /// An OpenMetrics page.
    pub fn openmetrics(body: impl Into<Bytes>) -> MetricsPage {
        MetricsPage { content_type: OPENMETRICS, body: body.into() }
    }
}

/// Whether the request's `Accept` asks for OpenMetrics (else serve the classic text format).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("application/openmetrics-text")))
}

type ReadyFn = dyn Fn() -> Readiness + Send + Sync;
type MetricsFn = dyn Fn(&HeaderMap) -> Result<MetricsPage, String> + Send + Sync;
type RoutesFn = dyn Fn(&Parts) -> Option<Response<AdminBody>> + Send + Sync;

/// The admin request handler. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    ready: Arc<ReadyFn>,
    metrics: Arc<MetricsFn>,
    routes: Option<Arc<RoutesFn>>,
    hint: Arc<str>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("hint", &self.hint).finish_non_exhaustive()
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin::new()
    }
}

impl Admin {
    /// Always ready (`ready\n`), an empty OpenMetrics page, no extra routes.
    pub fn new() -> Admin {
        Admin {
            ready: Arc::new(|| Readiness::Ready("ready\n".into())),
            metrics: Arc::new(|_| Ok(MetricsPage::openmetrics("# EOF\n"))),
            routes: None,
            hint: "try /live /ready /metrics".into(),
        }
    }

    /// What `/ready` answers.
    pub fn ready(self, f: impl Fn() -> Readiness + Send + Sync + 'static) -> Admin {
        Admin { ready: Arc::new(f), ..self }
    }

    /// Renders `/metrics`, given the request headers (for content negotiation). An error is
    /// answered 500 with its text.
    pub fn metrics(self, f: impl Fn(&HeaderMap) -> Result<MetricsPage, String> + Send + Sync + 'static) -> Admin {
        Admin { metrics: Arc::new(f), ..self }
    }

    /// Extra routes, asked after the built-in ones (GET and HEAD only): `None` passes.
    pub fn routes(self, f: impl Fn(&Parts) -> Option<Response<AdminBody>> + Send + Sync + 'static) -> Admin {
        Admin { routes: Some(Arc::new(f)), ..self }
    }

    /// The 404 body's hint, e.g. `try /live /ready /metrics /status` (the body is
    /// `not found; <hint>\n`).
    pub fn hint(self, hint: impl Into<String>) -> Admin {
        Admin { hint: hint.into().into(), ..self }
    }

    /// Answers one request. Never fails: every request has an answer.
    pub fn handle<B>(&self, req: Request<B>) -> Response<AdminBody> {
        let (parts, _body) = req.into_parts();
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match parts.uri.path() {
            "/live" => return text(StatusCode::OK, "live\n"),
            "/ready" => {
                return match (self.ready)() {
                    Readiness::Ready(body) => text(StatusCode::OK, body),
                    Readiness::NotReady(body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
                };
            }
            "/metrics" => {
                return match (self.metrics)(&parts.headers) {
                    Ok(page) => {
                        let mut resp = full(StatusCode::OK, page.body);
                        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
                        resp
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render metrics: {e}\n")),
                };
            }
            _ => {}
        }
        if let Some(resp) = self.routes.as_ref().and_then(|r| r(&parts)) {
            return resp;
        }
        text(StatusCode::NOT_FOUND, format!("not found; {}\n", self.hint))
    }
}

/// Serves `admin` on `listener` (HTTP/1.1 and h2c) until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    options: HttpOptions,
    shutdown: CancellationToken,
) -> Arc<AcceptCounters> {
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, Infallible>(admin.handle(req)))
    });
    serve_http(listener, svc, options, shutdown).await
}

/// A whole body as an [`AdminBody`].
pub fn body(bytes: impl Into<Bytes>) -> AdminBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with a whole body and no content type.
pub fn full(status: StatusCode, bytes: impl Into<Bytes>) -> Response<AdminBody> {
    let mut resp = Response::new(body(bytes));
    *resp.status_mut() = status;
    resp
}

/// A `text/plain; charset=utf-8` response.
pub fn text(status: StatusCode, bytes: impl Into<Bytes>) -> Response<AdminBody> {
    let mut resp = full(status, bytes);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// An `application/json` response of `value`; 500 if it cannot be serialized.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<AdminBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => {
            let mut resp = full(status, bytes);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot serialize: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder().method(method).uri(path).body(()).unwrap()
    }

    async fn body_of(resp: Response<AdminBody>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn admin(ready: Arc<AtomicBool>) -> Admin {
        Admin::new()
            .ready(move || match ready.load(Ordering::Relaxed) {
                true => Readiness::Ready("ready\n".into()),
                false => Readiness::NotReady("not ready: warming up\n".into()),
            })
            .metrics(|h| match wants_openmetrics(h) {
                true => Ok(MetricsPage::openmetrics("up 1\n# EOF\n")),
                false => Err("only OpenMetrics here".into()),
            })
            .routes(|p| (p.uri.path() == "/status").then(|| json(StatusCode::OK, &serde_json::json!({"v": 1}))))
            .hint("try /live /ready /metrics /status")
    }

    #[tokio::test]
    async fn built_in_and_extra_routes_answer() {
        let ready = Arc::new(AtomicBool::new(false));
        let a = admin(ready.clone());
        assert_eq!(a.handle(req(Method::GET, "/live")).status(), StatusCode::OK);
        let r = a.handle(req(Method::HEAD, "/ready"));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_of(r).await, "not ready: warming up\n");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(a.handle(req(Method::GET, "/ready")).status(), StatusCode::OK);
        let om = Request::get("/metrics").header("accept", "application/openmetrics-text").body(()).unwrap();
        let m = a.handle(om);
        assert_eq!(m.headers()[CONTENT_TYPE], OPENMETRICS);
        assert!(body_of(m).await.ends_with("# EOF\n"));
        assert_eq!(a.handle(req(Method::GET, "/metrics")).status(), StatusCode::INTERNAL_SERVER_ERROR);
        let s = a.handle(req(Method::GET, "/status"));
        assert_eq!(s.headers()[CONTENT_TYPE], "application/json");
        assert!(body_of(s).await.contains("\"v\": 1"));
    }

    #[tokio::test]
    async fn wrong_method_and_unknown_path() {
        let a = admin(Arc::new(AtomicBool::new(true)));
        let r = a.handle(req(Method::POST, "/status"));
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        let r = a.handle(req(Method::GET, "/nope"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_of(r).await, "not found; try /live /ready /metrics /status\n");
    }

    #[tokio::test]
    async fn served_over_a_socket() {
        let listener = crate::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Admin::new(), HttpOptions::default(), shutdown.clone()));
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get("/live").header("host", "x").body(http_body_util::Empty::<Bytes>::new()).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drop(send);
        shutdown.cancel();
        let counters = tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap();
        assert_eq!(counters.accepted(), 1);
    }
}
