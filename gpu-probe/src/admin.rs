//! The probe's HTTP surface on localhost: `/load`, `/orca`, `/metrics`, `/live`, `/ready`, on
//! `vane_runtime::admin`.
//!
//! Every answer is built from the pre-rendered snapshot loaded once from its `ArcSwap`; `/load`
//! costs one atomic load and the serialization of one small document.
//!
//! `GET /load?watch=1` keeps the response open and writes one `/load` JSON line (NDJSON) per
//! scrape, as soon as the scrape is done: the local proxy learns each reading at once instead of
//! polling for it, so a reading's age when it leaves the pod is the scrape's own age.

use crate::metrics::{ProbeMetrics, content_type};
use crate::snapshot::{ORCA_HEADER, OrcaReport, Rendered};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use vane_runtime::CancellationToken;
use vane_runtime::admin::{self, Admin, AdminBody, MetricsPage, Readiness};
use vane_runtime::load_doc;
use vane_runtime::ndjson::ChannelBody;

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

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("ready", &self.ready.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// Lines a watcher may fall behind by; a slower reader skips readings rather than queueing them.
const WATCH_BUFFER: usize = 4;

/// Whether the request asks for `/load` as a stream (`watch=1` or `watch=true`).
pub fn wants_watch(req: &Parts) -> bool {
    req.method == Method::GET
        && req.uri.path() == load_doc::PATH
        && req.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=1" || kv == "watch=true"))
}

/// Answers `/load?watch=1`: the current `/load` line at once, then one line per scrape. The
/// writer task ends when the client disconnects or the probe stops.
pub fn watch_load(shared: Arc<Shared>, stop: CancellationToken) -> Response<AdminBody> {
    let (tx, body) = ChannelBody::channel(WATCH_BUFFER);
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
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let mut resp = Response::new(body.boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(load_doc::STREAM_CONTENT_TYPE));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The probe's admin server: the built-in `/live`, `/ready` and `/metrics`, plus `/load`,
/// `/load?watch=1` and `/orca`. `stop` ends the watch streams.
pub fn admin(shared: Arc<Shared>, stop: CancellationToken) -> Admin {
    let ready = shared.clone();
    let metrics = shared.clone();
    Admin::new()
        .ready(move || match ready.ready.load(Ordering::Acquire) {
            true => Readiness::Ready("ready\n".into()),
            false => Readiness::NotReady("not ready: no good scrape yet\n".into()),
        })
        .metrics(move |headers| {
            let snap = metrics.snapshot.load();
            let now = Instant::now();
            let openmetrics = admin::wants_openmetrics(headers);
            let page = metrics.metrics.encode(snap.age(now), snap.is_stale(now), openmetrics);
            Ok(MetricsPage { content_type: content_type(openmetrics), body: Bytes::from(page) })
        })
        .routes(move |req| route(req, &shared, &stop))
        .hint("try /load, /load?watch=1, /orca, /metrics, /live or /ready")
}

/// `/load` (whole or watched) and `/orca`; `None` for any other path.
fn route(req: &Parts, shared: &Arc<Shared>, stop: &CancellationToken) -> Option<Response<AdminBody>> {
    if wants_watch(req) {
        return Some(watch_load(shared.clone(), stop.clone()));
    }
    let now = Instant::now();
    match req.uri.path() {
        load_doc::PATH => {
            let mut resp = admin::full(StatusCode::OK, shared.snapshot.load().load_body(now));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(load_doc::CONTENT_TYPE));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Some(resp)
        }
        "/orca" => Some(match shared.snapshot.load().orca(now) {
            OrcaReport::Fresh(value) => {
                let mut body = Vec::with_capacity(value.len() + 1);
                body.extend_from_slice(value.as_bytes());
                body.push(b'\n');
                let mut resp = admin::text(StatusCode::OK, body);
                resp.headers_mut().insert(HeaderName::from_static(ORCA_HEADER), value);
                resp
            }
            OrcaReport::Unavailable(why) => admin::text(StatusCode::SERVICE_UNAVAILABLE, why),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::{Figures, ServerKind};
    use crate::snapshot::{GoodReading, State};
    use http::Request;
    use http::header::ALLOW;
    use std::time::{Duration, SystemTime};

    fn shared(state: &State) -> Arc<Shared> {
        let s = Shared::new(Rendered::render(state, Duration::from_secs(1)));
        s.ready.store(state.last_good.is_some(), Ordering::Release);
        Arc::new(s)
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    fn handle(req: &Request<()>, s: &Arc<Shared>) -> Response<AdminBody> {
        let mut copy = Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        admin(s.clone(), CancellationToken::new()).handle(copy)
    }

    async fn body(resp: Response<AdminBody>) -> String {
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
        let refused = handle(&post, &s);
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, HEAD");
        assert!(body(handle(&get("/nope"), &s)).await.contains("/load?watch=1"));
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
