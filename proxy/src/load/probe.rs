//! Following the local load probe (`vane-gpu-probe`'s `/load?watch=1`, a line per scrape; an
//! endpoint without streams is polled every `inbound.load_interval`).

use super::config::LoadConfig;
use super::local::LocalLoad;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vane_route::orca::LoadReport;
use vane_runtime::load_doc::{self, parse_report};
use vane_runtime::ndjson;

/// The longest line a probe's stream may send.
const MAX_LINE: usize = 64 * 1024;

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
        .is_some_and(|ct| ct.starts_with(load_doc::STREAM_CONTENT_TYPE));
    if ndjson {
        return Ok(Answer::Stream(resp.into_body()));
    }
    let body = tokio::time::timeout(timeout, resp.into_body().collect()).await??.to_bytes();
    Ok(Answer::Once(parse_report(&body)))
}

/// Stores each line of a probe's stream as it arrives. Returns `Ok` when the config stops naming
/// this probe, an error when the stream ends, breaks, or is silent for `staleness`.
async fn follow_probe<C: LoadConfig>(
    body: hyper::body::Incoming,
    config: &C,
    (addr, path): (SocketAddr, &str),
    staleness: Duration,
    load: &LocalLoad,
) -> anyhow::Result<()> {
    let mut lines = ndjson::lines(body, MAX_LINE);
    loop {
        let line = tokio::time::timeout(staleness, lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no reading for {staleness:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the probe closed the stream"))??;
        match parse_report(line.as_bytes()) {
            Some((report, age)) => load.set(Some(report), age),
            None => load.set(None, Duration::ZERO),
        }
        if !config.names_probe(addr, path) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers() {
        let (r, age) = parse_report(
            br#"{"server":"vllm","queue_depth":5,"running":21,"kv_cache_usage":0.42,"age_ms":3,"stale":false}"#,
        )
        .unwrap();
        assert_eq!((r.queue_depth, r.running, r.kv_use), (Some(5.0), Some(21.0), Some(0.42)));
        assert_eq!(age, Duration::from_millis(3));
        assert!(parse_report(br#"{"queue_depth":5,"stale":true}"#).is_none());
        assert!(parse_report(br#"{"queue_depth":null,"running":null,"kv_cache_usage":null}"#).is_none());
        assert!(parse_report(b"not json").is_none());
    }
}
