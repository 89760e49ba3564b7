//! The pod's own load, attached to every inbound response as an ORCA `endpoint-load-metrics`
//! header, so that every caller's balancer learns the model server's queue with each answer.
//!
//! A task follows the local load probe (`vane-gpu-probe`'s `/load?watch=1`, a line per scrape;
//! an endpoint without streams is polled every `inbound.load_interval`); [`LoadReportLayer`]
//! adds the latest figures, with their age, to each inbound response that does not already carry
//! a report (vLLM can emit its own).

use crate::body::RespBody;
use crate::config::Store;
use crate::metrics::Info;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vane_route::orca::{self, LoadReport};

/// The path on the inbound listener where callers subscribe to the pod's load.
pub const LOAD_STREAM_PATH: &str = "/.vane/load-stream";

/// The latest figures and when they were read (process clock, nanoseconds).
#[derive(Debug)]
pub struct LocalLoad {
    current: ArcSwapOption<(LoadReport, u64)>,
    /// Bumped on every new reading, for the load streams.
    updates: tokio::sync::watch::Sender<u64>,
}

impl Default for LocalLoad {
    fn default() -> Self {
        LocalLoad { current: ArcSwapOption::empty(), updates: tokio::sync::watch::channel(0).0 }
    }
}

impl LocalLoad {
    /// The figures, if fresher than `max_age`, with their age filled in.
    pub fn get(&self, max_age: Duration) -> Option<LoadReport> {
        let cur = self.current.load();
        let (report, read_at) = cur.as_deref()?;
        let age = crate::now_ns().saturating_sub(*read_at);
        (age <= max_age.as_nanos() as u64).then(|| LoadReport { age: Some(Duration::from_nanos(age)), ..*report })
    }

    /// Stores new figures that were already `age` old.
    pub fn set(&self, report: Option<LoadReport>, age: Duration) {
        let read_at = crate::now_ns().saturating_sub(age.as_nanos() as u64);
        let had = self.current.load().is_some();
        let has = report.is_some();
        self.current.store(report.map(|r| Arc::new((r, read_at))));
        if has || had {
            self.updates.send_modify(|n| *n += 1);
        }
    }

    /// A stream of ORCA TEXT lines, one per new reading, while the receiver is read.
    fn stream(self: &Arc<Self>, staleness: Duration) -> RespBody {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
        let mut updates = self.updates.subscribe();
        let load = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Some(r) = load.get(staleness) {
                    let mut line = orca::format(&r);
                    line.push('\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        RespBody::Channel(rx)
    }
}

/// Lines buffered per load-stream subscriber; a slow reader skips readings rather than queueing.
const STREAM_BUFFER: usize = 4;

/// Reads the probe's `/load` JSON into a report; `None` when it says its figures are stale.
/// The age is `age_us` when the probe gives it (to the microsecond), else `age_ms`.
pub fn parse_probe(body: &[u8]) -> Option<(LoadReport, Duration)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v.get("stale").and_then(|s| s.as_bool()) == Some(true) {
        return None;
    }
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite() && *x >= 0.0);
    let report =
        LoadReport { queue_depth: f("queue_depth"), running: f("running"), kv_use: f("kv_cache_usage"), age: None };
    let age = match (f("age_us"), f("age_ms")) {
        (Some(us), _) => Duration::from_micros(us as u64),
        (None, Some(ms)) => Duration::from_micros((ms * 1e3) as u64),
        (None, None) => Duration::ZERO,
    };
    (!report.is_empty()).then_some((report, age))
}

/// The probe URL's path with `watch=1` added to its query.
fn watch_path(path: &str) -> String {
    match path.contains('?') {
        true => format!("{path}&watch=1"),
        false => format!("{path}?watch=1"),
    }
}

/// Reads the probe named by the active config (re-read each round, so reloads apply).
///
/// It asks for `/load?watch=1`: a `vane-gpu-probe` keeps that response open and writes a line
/// per scrape the moment the scrape is done, so a reading reaches the load streams and response
/// headers with no polling delay. Any other answer (an endpoint that ignores `watch`) is read as
/// one `/load` document, and the endpoint is then polled every `inbound.load_interval`.
pub async fn poll(store: Arc<Store>, load: Arc<LocalLoad>) {
    let mut conn: Option<(SocketAddr, http1::SendRequest<Empty<Bytes>>)> = None;
    loop {
        let (target, interval, staleness) = probe_target(&store);
        let Some((addr, path)) = target else {
            load.set(None, Duration::ZERO);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match read_once(&mut conn, addr, &path, staleness).await {
            Ok(Answer::Once(Some((report, age)))) => load.set(Some(report), age),
            Ok(Answer::Once(None)) => load.set(None, Duration::ZERO),
            Ok(Answer::Stream(body)) => {
                conn = None;
                match follow_probe(body, &store, (addr, &path), staleness, &load).await {
                    // The config now names another probe: go to it at once.
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::debug!("load probe stream at {addr} ended: {e}");
                        load.set(None, Duration::ZERO);
                    }
                }
            }
            Err(e) => {
                tracing::debug!("load probe at {addr} unreadable: {e}");
                conn = None;
                load.set(None, Duration::ZERO);
            }
        }
        tokio::time::sleep(interval).await;
    }
}

type Target = (Option<(SocketAddr, String)>, Duration, Duration);

fn probe_target(store: &Store) -> Target {
    let snap = store.load();
    let s = &snap.table.settings;
    match &snap.table.inbound {
        Some(ib) => (ib.load_from.clone(), ib.load_interval, s.load_staleness),
        None => (None, Duration::from_secs(1), s.load_staleness),
    }
}

/// What the probe answered.
enum Answer {
    /// One document (parsed; `None` when stale or empty).
    Once(Option<(LoadReport, Duration)>),
    /// An NDJSON stream of documents.
    Stream(hyper::body::Incoming),
}

async fn read_once(
    conn: &mut Option<(SocketAddr, http1::SendRequest<Empty<Bytes>>)>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    if conn.as_ref().is_none_or(|(a, tx)| *a != addr || tx.is_closed()) {
        *conn = Some((addr, crate::pool::open_h1(addr, timeout).await?));
    }
    let Some((_, tx)) = conn.as_mut() else { return Ok(Answer::Once(None)) };
    tx.ready().await?;
    let req = Request::get(watch_path(path)).header(http::header::HOST, addr.to_string()).body(Empty::new())?;
    let resp = tokio::time::timeout(timeout, tx.send_request(req)).await??;
    if !resp.status().is_success() {
        return Ok(Answer::Once(None));
    }
    let ndjson = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-ndjson"));
    if ndjson {
        return Ok(Answer::Stream(resp.into_body()));
    }
    let body = tokio::time::timeout(timeout, resp.into_body().collect()).await??.to_bytes();
    Ok(Answer::Once(parse_probe(&body)))
}

/// Stores each line of a probe's stream as it arrives. Returns `Ok` when the config stops naming
/// this probe, an error when the stream ends, breaks, or is silent for `staleness`.
async fn follow_probe(
    mut body: hyper::body::Incoming,
    store: &Store,
    (addr, path): (SocketAddr, &str),
    staleness: Duration,
    load: &LocalLoad,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::time::timeout(staleness, body.frame())
            .await
            .map_err(|_| anyhow::anyhow!("no reading for {staleness:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the probe closed the stream"))??;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            match parse_probe(&buf[..i]) {
                Some((report, age)) => load.set(Some(report), age),
                None => load.set(None, Duration::ZERO),
            }
            buf.drain(..=i);
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "probe line too long");
        let snap = store.load();
        let named = snap.table.inbound.as_ref().and_then(|ib| ib.load_from.as_ref());
        if named.is_none_or(|(a, p)| *a != addr || p != path) {
            return Ok(());
        }
    }
}

/// Layer that attaches the pod's load to inbound responses.
#[derive(Clone, Debug)]
pub struct LoadReportLayer {
    load: Arc<LocalLoad>,
    store: Arc<Store>,
}

impl LoadReportLayer {
    /// Attaches figures from `load` no older than the config's `load_staleness`.
    pub fn new(load: Arc<LocalLoad>, store: Arc<Store>) -> LoadReportLayer {
        LoadReportLayer { load, store }
    }
}

impl<S> tower::Layer<S> for LoadReportLayer {
    type Service = LoadReportService<S>;
    fn layer(&self, inner: S) -> LoadReportService<S> {
        LoadReportService { inner, load: Arc::clone(&self.load), store: Arc::clone(&self.store) }
    }
}

/// See [`LoadReportLayer`].
#[derive(Clone, Debug)]
pub struct LoadReportService<S> {
    inner: S,
    load: Arc<LocalLoad>,
    store: Arc<Store>,
}

impl<S, B> tower::Service<Request<B>> for LoadReportService<S>
where
    S: tower::Service<Request<B>, Response = (Response<RespBody>, Info), Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = (Response<RespBody>, Info);
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(Response<RespBody>, Info), Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let load = Arc::clone(&self.load);
        let staleness = self.store.load().table.settings.load_staleness;
        if req.uri().path() == LOAD_STREAM_PATH && req.method() == http::Method::GET {
            let mut resp = Response::new(load.stream(staleness));
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            let info = Info { stats: None, service: Some("load-stream".into()), error: None };
            return Box::pin(std::future::ready(Ok((resp, info))));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let (mut resp, info) = fut.await?;
            if !resp.headers().contains_key(orca::HEADER)
                && let Some(report) = load.get(staleness)
                && let Ok(v) = HeaderValue::from_str(&orca::format(&report))
            {
                resp.headers_mut().insert(orca::HEADER, v);
            }
            Ok((resp, info))
        })
    }
}

/// Follows an endpoint's load stream (its Vane inbound proxy's [`LOAD_STREAM_PATH`]) for as long
/// as the endpoint is in the config, feeding each report to the balancer. Reconnects with backoff
/// (100 ms doubling to 5 s); an endpoint that is not a Vane proxy (404) is retried every 5 s.
pub async fn follow(ep: std::sync::Weak<crate::endpoint::Endpoint>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(addr) = ep.upgrade().map(|e| e.addr) else { return };
        match follow_once(&ep, addr).await {
            Ok(true) => return,
            Ok(false) => backoff = Duration::from_millis(100),
            Err(e) => tracing::debug!(endpoint = %addr, "load stream: {e}"),
        }
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection; `Ok(true)` when the endpoint is gone from the config.
async fn follow_once(ep: &std::sync::Weak<crate::endpoint::Endpoint>, addr: SocketAddr) -> anyhow::Result<bool> {
    let mut tx = crate::pool::open_h1(addr, Duration::from_secs(2)).await?;
    let req = Request::get(LOAD_STREAM_PATH).header(http::header::HOST, addr.to_string()).body(Empty::<Bytes>::new())?;
    let resp = tx.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    // A live stream sends a line per reading (every few ms); a long silence means it is stuck.
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await? {
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        let Some(endpoint) = ep.upgrade() else { return Ok(true) };
        let now = crate::now_ns();
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            if let Some(report) = orca::parse(&buf[..i]) {
                endpoint.report(report, now);
            }
            buf.drain(..=i);
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "load stream line too long");
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers() {
        let (r, age) = parse_probe(
            br#"{"server":"vllm","queue_depth":5,"running":21,"kv_cache_usage":0.42,"age_ms":3,"stale":false}"#,
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.running, r.kv_use), (Some(5.0), Some(21.0), Some(0.42)));
        assert_eq!(age, Duration::from_millis(3));
        assert!(parse_probe(br#"{"queue_depth":5,"stale":true}"#).is_none());
        assert!(parse_probe(br#"{"queue_depth":null,"running":null,"kv_cache_usage":null}"#).is_none());
        assert!(parse_probe(b"not json").is_none());
    }

    #[test]
    fn stale_figures_are_not_attached() {
        let l = LocalLoad::default();
        assert!(l.get(Duration::from_secs(1)).is_none());
        let r = LoadReport { queue_depth: Some(2.0), ..Default::default() };
        l.set(Some(r), Duration::from_millis(5));
        let got = l.get(Duration::from_secs(1)).unwrap();
        assert_eq!(got.queue_depth, Some(2.0));
        assert!(got.age.unwrap() >= Duration::from_millis(5));
        l.set(Some(r), Duration::from_secs(5));
        assert!(l.get(Duration::from_secs(1)).is_none());
    }
}
