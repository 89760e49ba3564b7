//! Following the local load probe (`vane-gpu-probe`'s `/load?watch=1`, a line per scrape; an
//! endpoint without streams is polled every `inbound.load_interval`).

use super::{LoadConfig, LocalLoad};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vane_route::orca::LoadReport;

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
pub async fn poll<C: LoadConfig>(config: Arc<C>, load: Arc<LocalLoad>) {
    let mut conn: Option<(SocketAddr, http1::SendRequest<Empty<Bytes>>)> = None;
    loop {
        let (target, interval, staleness) = (config.probe(), config.probe_interval(), config.staleness());
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
                match follow_probe(body, &*config, (addr, &path), staleness, &load).await {
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
        *conn = Some((addr, crate::client::open_h1(addr, timeout).await?));
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
async fn follow_probe<C: LoadConfig>(
    mut body: hyper::body::Incoming,
    config: &C,
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
        if config.probe().is_none_or(|(a, p)| a != addr || p != path) {
            return Ok(());
        }
    }
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
}
