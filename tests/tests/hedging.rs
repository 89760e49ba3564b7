//! Hedging: when an answer's first byte is late, a copy goes to another endpoint and the answer
//! that starts first is kept.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use vane_tests::*;

/// An SSE model server named `name` whose headers come at once and whose first token comes after
/// `first_token`; it counts its requests, and the ones whose stream was dropped before the end.
async fn model(
    name: &'static str,
    first_token: Duration,
    hits: &Arc<AtomicUsize>,
    cancelled: &Arc<AtomicUsize>,
) -> SocketAddr {
    let (hits, cancelled) = (Arc::clone(hits), Arc::clone(cancelled));
    serve(move |_req: Request<Incoming>| {
        hits.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::clone(&cancelled);
        async move {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                tokio::time::sleep(first_token).await;
                for t in ["a", "b", "c"] {
                    if tx.send(Frame::data(Bytes::from(format!("data: {t}\n\n")))).await.is_err() {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            });
            let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r.headers_mut().insert("x-served-by", name.parse().unwrap());
            r
        }
    })
    .await
}

async fn read_all(client: &TestClient, proxy: SocketAddr) -> (String, String) {
    let req = Request::post(format!("http://{proxy}/v1/completions"))
        .header("host", "svc")
        .body(http_body_util::Full::new(Bytes::from_static(b"{\"model\":\"m\",\"stream\":true}")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let by = resp.headers().get("x-served-by").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (by, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_first_token_is_hedged_to_another_endpoint_and_the_loser_cancelled() {
    let (hits, cancelled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (fast_hits, fast_cancelled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stalled = model("stalled", Duration::from_secs(3), &hits, &cancelled).await;
    let fast = model("fast", Duration::from_millis(5), &fast_hits, &fast_cancelled).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[stalled, fast], 1)], "        hedge: { delay: 100ms }\n"));
    let client = h1_client(proxy.outbound);
    for i in 0..12 {
        let (by, body) = read_all(&client, proxy.outbound).await;
        assert_eq!(by, "fast", "request {i}");
        assert_eq!(body, "data: a\n\ndata: b\n\ndata: c\n\n", "request {i}: the first token read ahead is passed on");
    }
    let tried_stalled = hits.load(Ordering::Relaxed);
    assert!(tried_stalled >= 1, "the stalled endpoint was never tried");
    let m = proxy.metrics();
    let hedges = metric(&m, "vane_hedges_total", &["route=\"main\""]).unwrap_or(0.0);
    let won = metric(&m, "vane_hedges_won_total", &["route=\"main\""]).unwrap_or(0.0);
    assert_eq!(hedges as usize, tried_stalled, "every attempt at the stalled endpoint was hedged\n{m}");
    assert_eq!(won, hedges, "and every hedge won");
    // The stalled endpoint's streams were dropped, not left running.
    assert!(wait_until(Duration::from_secs(6), || cancelled.load(Ordering::Relaxed) == tried_stalled).await);
    assert_eq!(fast_cancelled.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hedging_the_stalled_endpoint_keeps_its_requests() {
    let (hits, cancelled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stalled = model("stalled", Duration::from_millis(400), &hits, &cancelled).await;
    let fast = model("fast", Duration::from_millis(5), &hits, &cancelled).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[stalled, fast], 1)], ""));
    let client = h1_client(proxy.outbound);
    let mut by_stalled = 0;
    for _ in 0..12 {
        if read_all(&client, proxy.outbound).await.0 == "stalled" {
            by_stalled += 1;
        }
    }
    assert!(by_stalled >= 1, "the contrast needs the stalled endpoint to be picked at least once");
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_hedges_total", &["route=\"main\""]).unwrap_or(0.0), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_is_recorded_on_its_request() {
    let (hits, cancelled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stalled = model("stalled", Duration::from_secs(3), &hits, &cancelled).await;
    let fast = model("fast", Duration::from_millis(5), &hits, &cancelled).await;
    let dir = std::env::temp_dir().join(format!("vane-hedge-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let config = format!(
        "proxy:\n  observe:\n    access_log: {{ to: \"{}\", sample: 1 }}\n{}",
        log.display(),
        split_config(&[("pool", &[stalled, fast], 1)], "        hedge: { delay: 100ms }\n")
    );
    let proxy = Proxy::start(&config);
    let client = h1_client(proxy.outbound);
    for _ in 0..6 {
        assert_eq!(read_all(&client, proxy.outbound).await.0, "fast");
    }
    let hedges = metric(&proxy.metrics(), "vane_hedges_total", &["route=\"main\""]).unwrap_or(0.0) as usize;
    assert!(hedges >= 1, "the stalled endpoint was never tried");
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(lines.len(), 6, "{lines:?}");
    let won = lines.iter().filter(|l| l["hedged"] == "won").count();
    let plain = lines.iter().filter(|l| l["hedged"].is_null()).count();
    assert_eq!((won, plain), (hedges, 6 - hedges), "{lines:?}");
}
