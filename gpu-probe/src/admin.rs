//! The probe's HTTP surface on localhost: `/load`, `/orca`, `/metrics`, `/live`, `/ready`.
//!
//! Every answer is built from the pre-rendered snapshot loaded once from its `ArcSwap`; `/load`
//! costs one atomic load and one small copy.
//!
//! `GET /load?watch=1` keeps the response open and writes one `/load` JSON line (NDJSON) per
//! scrape, as soon as the scrape is done: the local proxy learns each reading at once instead of
//! polling for it, so a reading's age when it leaves the pod is the scrape's own age.

use crate::metrics::{ProbeMetrics, content_type};
use crate::snapshot::{ORCA_HEADER, OrcaReport, Rendered};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Full;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What the poll loop and the HTTP handlers share.
pub struct Shared {
    /// The current snapshot.
    pub snapshot: ArcSwap<Rendered>,
    /// The probe's metrics.
    pub metrics: ProbeMetrics,
    /// Set after the first good scrape, and never cleared.
    pub ready: AtomicBool,
    /// Bumped after every scrape (good or not), for `/load?watch=1`.
    pub updates: watch::Sender<u64>,
}

impl Shared {
    /// Starts from `snapshot`, not ready.
    pub fn new(snapshot: Rendered) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics: ProbeMetrics::new(),
            ready: AtomicBool::new(false),
            updates: watch::channel(0).0,
        }
    }

    /// Publishes a new snapshot and wakes the watchers.
    pub fn publish(&self, snapshot: Rendered) {
        self.snapshot.store(Arc::new(snapshot));
        self.updates.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A response body: a whole answer, or the lines of a `/load?watch=1` stream.
#[derive(Debug)]
pub enum ProbeBody {
    /// A complete answer.
    Full(Full<Bytes>),
    /// One line per scrape until the client goes away.
    Lines(mpsc::Receiver<Bytes>),
}

impl Body for ProbeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ProbeBody::Full(b) => Pin::new(b).poll_frame(cx),
            ProbeBody::Lines(rx) => rx.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l)))),
        }
    }
}

/// Lines a watcher may fall behind by; a slower reader skips readings rather than queueing them.
const WATCH_BUFFER: usize = 4;

/// Whether the request asks for `/load` as a stream (`watch=1` or `watch=true`).
pub fn wants_watch<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.uri().path() == "/load"
        && req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=1" || kv == "watch=true"))
}

/// Answers `/load?watch=1`: the current `/load` line at once, then one line per scrape. The
/// writer task ends when the client disconnects or the probe stops.
pub fn watch_load(shared: Arc<Shared>, mut stop: watch::Receiver<()>) -> Response<ProbeBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
    let mut updates = shared.updates.subscribe();
    tokio::spawn(async move {
        loop {
            let mut line = shared.snapshot.load().load_body(Instant::now()).to_vec();
            line.push(b'\n');
            // A full buffer means the reader is behind: drop this reading, the next is newer.
            match tx.try_send(Bytes::from(line)) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let mut resp = Response::new(ProbeBody::Lines(rx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("ready", &self.ready.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// Answers one request. Never fails: every path has an answer.
pub fn handle<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let now = Instant::now();
    match req.uri().path() {
        "/load" => {
            let snap = shared.snapshot.load();
            let mut resp = Response::new(Full::new(snap.load_body(now)));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        "/orca" => match shared.snapshot.load().orca(now) {
            OrcaReport::Fresh(value) => {
                let mut body = Vec::with_capacity(value.len() + 1);
                body.extend_from_slice(value.as_bytes());
                body.push(b'\n');
                let mut resp = text_bytes(StatusCode::OK, Bytes::from(body));
                resp.headers_mut().insert(HeaderName::from_static(ORCA_HEADER), value);
                resp
            }
            OrcaReport::Unavailable(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        "/metrics" => {
            let snap = shared.snapshot.load();
            let openmetrics = wants_openmetrics(req);
            let page = shared.metrics.encode(snap.age(now), snap.is_stale(now), openmetrics);
            let mut resp = Response::new(Full::new(Bytes::from(page)));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type(openmetrics)));
            resp
        }
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if shared.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: no good scrape yet\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /load, /load?watch=1, /orca, /metrics, /live or /ready\n"),
    }
}

fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("application/openmetrics-text")))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text_bytes(status, Bytes::from_static(body.as_bytes()))
}

fn text_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::{Figures, ServerKind};
    use crate::snapshot::{GoodReading, State};
    use http_body_util::BodyExt;
    use std::time::{Duration, SystemTime};

    fn shared(state: &State) -> Shared {
        let s = Shared::new(Rendered::render(state, Duration::from_secs(1)));
        s.ready.store(state.last_good.is_some(), Ordering::Release);
        s
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    async fn body(resp: Response<Full<Bytes>>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn answers_every_path() {
        let fresh = State {
            last_good: Some(GoodReading {
                kind: ServerKind::Tgi,
                figures: Figures { queue_depth: Some(1.0), running: Some(2.0), kv_cache_usage: None },
                at: Instant::now(),
                at_wall: SystemTime::now(),
            }),
            ..State::default()
        };
        let s = shared(&fresh);
        let load = handle(&get("/load"), &s);
        assert_eq!(load.status(), StatusCode::OK);
        assert_eq!(load.headers()[CONTENT_TYPE], "application/json");
        assert!(body(load).await.contains("\"server\":\"tgi\""));
        let orca = handle(&get("/orca"), &s);
        assert_eq!(orca.headers()[ORCA_HEADER], "TEXT named_metrics.queue_depth=1, named_metrics.running=2");
        assert_eq!(handle(&get("/ready"), &s).status(), StatusCode::OK);
        assert_eq!(handle(&get("/live"), &s).status(), StatusCode::OK);
        assert_eq!(handle(&get("/nope"), &s).status(), StatusCode::NOT_FOUND);
        let post = Request::post("/load").body(()).unwrap();
        assert_eq!(handle(&post, &s).status(), StatusCode::METHOD_NOT_ALLOWED);
        let metrics = handle(&get("/metrics"), &s);
        assert!(metrics.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
        let om = Request::get("/metrics").header("accept", "application/openmetrics-text").body(()).unwrap();
        let om = handle(&om, &s);
        assert!(om.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
        assert!(body(om).await.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn before_the_first_scrape_it_is_not_ready_and_has_no_orca() {
        let s = shared(&State::default());
        assert_eq!(handle(&get("/ready"), &s).status(), StatusCode::SERVICE_UNAVAILABLE);
        let orca = handle(&get("/orca"), &s);
        assert_eq!(orca.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(orca.headers().get(ORCA_HEADER).is_none());
        assert!(body(handle(&get("/load"), &s)).await.ends_with("\"age_ms\":null,\"age_us\":null,\"stale\":true}"));
    }
}
