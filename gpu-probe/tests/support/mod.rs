//! Test support: a fake model server whose behaviour can be switched mid-test, and a tiny
//! HTTP client.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Reads a fixture page from `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What the fake model server does with `/metrics`.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Answers 200 with this page.
    Serve(String),
    /// Answers 200 with the page this makes at the moment of the request.
    Dynamic(PageFn),
    /// Accepts the request and never answers.
    Hang,
    /// Answers with this status and no page.
    Status(StatusCode),
}

/// Makes a page when asked.
#[derive(Clone)]
pub struct PageFn(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for PageFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageFn")
    }
}

/// A model server stand-in on 127.0.0.1:0.
pub struct FakeServer {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(mode: Mode) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake server");
        let addr = listener.local_addr().expect("local addr");
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (m, h, c) = (mode.clone(), hits.clone(), connections.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them too.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (m, h) = (m.clone(), h.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (m, h) = (m.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::Relaxed);
                        let mode = m.lock().expect("mode lock").clone();
                        let resp = match (req.uri().path(), mode) {
                            ("/metrics", Mode::Serve(page)) => Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from(page))),
                            ("/metrics", Mode::Dynamic(page)) => Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from((page.0)()))),
                            ("/metrics", Mode::Hang) => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                            ("/metrics", Mode::Status(s)) => {
                                Response::builder().status(s).body(Full::new(Bytes::new()))
                            }
                            _ => Response::builder().status(404).body(Full::new(Bytes::new())),
                        };
                        Ok::<_, Infallible>(resp.expect("valid response"))
                    }
                });
                conns.spawn(async move {
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FakeServer { addr, mode, hits, connections, task }
    }

    pub fn metrics_url(&self) -> http::Uri {
        format!("http://{}/metrics", self.addr).parse().expect("valid url")
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    /// Requests answered or pending so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One GET over a fresh connection: status, headers, body.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.expect("connect to probe");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).expect("utf-8 body"))
}

/// GET /load as JSON.
pub async fn load(addr: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(addr, "/load").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/load is not JSON ({e}): {body}"))
}

/// Polls `check` every 10 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the first sample named `name` (with `label` = `value` if given) on a
/// Prometheus page.
pub fn sample(page: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    vane_gpu_probe::expo::parse(page)
        .expect("the probe's /metrics parses")
        .into_iter()
        .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.get(k).as_deref() == Some(v)))
        .map(|s| s.value)
}

/// Opens `GET /load?watch=1` and returns the response's content type and a reader of its lines.
pub async fn watch(addr: SocketAddr) -> (String, LineReader) {
    let stream = TcpStream::connect(addr).await.expect("connect to probe");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req =
        Request::get("/load?watch=1").header("host", addr.to_string()).body(Empty::<Bytes>::new()).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (ct, LineReader { lines: vane_runtime::ndjson::lines(resp.into_body(), 1 << 20) })
}

/// Reads NDJSON lines from a streamed body.
pub struct LineReader {
    lines: vane_runtime::ndjson::Lines<hyper::body::Incoming>,
}

impl LineReader {
    /// The next line as JSON, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        let line = self.lines.next_line().await?.expect("a complete line");
        Some(serde_json::from_str(&line).expect("a JSON line"))
    }
}
