//! An endpoint that refuses with 429 (its queue is full) does not pass the refusal to the client
//! while another endpoint has room: the request is sent there instead.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use vane_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_on_another_endpoint() {
    let refusals = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&refusals);
    let full = serve(move |_req: Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut r = Response::new(full("queue full"));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
    })
    .await;
    let ok = Backend::start("ok").await;
    let proxy = Proxy::start(&split_config(&[("pool", &[full, ok.addr], 1)], ""));
    for client in [h1_client(proxy.outbound), h2_client(proxy.outbound)] {
        // The full endpoint is kept behind the other for 1 s after each refusal; requests spread
        // over more than that so that it is tried again.
        for i in 0..30 {
            let r = if i % 2 == 0 {
                get(&client, "svc", "/", &[]).await.unwrap()
            } else {
                send(&client, "POST", "svc", "/v1/completions", &[], "{\"model\":\"m\"}").await.unwrap()
            };
            assert_eq!((r.status.as_u16(), r.served_by()), (200, "ok"), "request {i}: {r:?}");
            if i % 10 == 9 {
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            }
        }
    }
    assert!(refusals.load(Ordering::Relaxed) >= 2, "the full endpoint was never tried");
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_requests_total", &["status=\"429\""]), None, "a 429 reached a client:\n{m}");
}

/// An endpoint that answers with `status` every time, counting its requests.
async fn always(status: StatusCode, hits: &Arc<AtomicUsize>) -> std::net::SocketAddr {
    let counted = Arc::clone(hits);
    serve(move |_req: Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut r = Response::new(full("unavailable"));
            *r.status_mut() = status;
            r
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_another_endpoint_and_the_answer_says_how_many_attempts_it_took() {
    let hits = Arc::new(AtomicUsize::new(0));
    let down = always(StatusCode::SERVICE_UNAVAILABLE, &hits).await;
    let ok = Backend::start("ok").await;
    let proxy = Proxy::start(&split_config(&[("pool", &[down, ok.addr], 1)], ""));
    let client = h1_client(proxy.outbound);
    let mut retried = 0;
    for i in 0..20 {
        let r = get(&client, "svc", "/", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.served_by()), (200, "ok"), "request {i}: {r:?}");
        if let Some(n) = r.headers.get("vane-proxy-attempts") {
            assert_eq!(n, "2", "request {i}");
            retried += 1;
        }
        if i % 5 == 4 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }
    let h = hits.load(Ordering::Relaxed);
    assert!(h >= 2, "the unavailable endpoint was never tried");
    assert_eq!(retried, h, "every answer that was retried says so, and only those");
    let m = proxy.metrics();
    let counted = metric(&m, "vane_retries_total", &["reason=\"status\"", "route=\"main\""]);
    assert_eq!(counted, Some(h as f64), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_turn_retries_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let full = always(StatusCode::TOO_MANY_REQUESTS, &hits).await;
    let full2 = always(StatusCode::TOO_MANY_REQUESTS, &hits).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[full, full2], 1)], "        retries: { max_attempts: 1 }\n"));
    let client = h1_client(proxy.outbound);
    for _ in 0..5 {
        let r = get(&client, "svc", "/", &[]).await.unwrap();
        assert_eq!(r.status.as_u16(), 429, "{r:?}");
        assert!(r.headers.get("vane-proxy-attempts").is_none());
    }
    assert_eq!(hits.load(Ordering::Relaxed), 5, "one attempt per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_total_outage_the_retry_budget_holds_upstream_load_within_its_ratio() {
    let hits = Arc::new(AtomicUsize::new(0));
    let mut eps = Vec::new();
    for _ in 0..3 {
        eps.push(always(StatusCode::SERVICE_UNAVAILABLE, &hits).await);
    }
    // 20 % of the requests, plus 1 a second over a 10 s window (10 retries).
    let config = format!(
        "proxy: {{ retry_budget: {{ ratio: 0.2, min_per_second: 1, window: 10s }}, ejection: {{ consecutive_failures: 1000 }} }}\n{}",
        split_config(&[("pool", &eps, 1)], "")
    );
    let proxy = Proxy::start(&config);
    let client = h1_client(proxy.outbound);
    let requests = 200;
    for i in 0..requests {
        let r = get(&client, "svc", "/", &[]).await.unwrap();
        assert_eq!(r.status.as_u16(), 503, "request {i}: {r:?}");
    }
    let upstream = hits.load(Ordering::Relaxed);
    eprintln!("{upstream} upstream attempts for {requests} requests");
    // Without a budget every request would take 3 attempts (600).
    let most = requests + requests / 5 + 10 + 2;
    assert!((requests..=most).contains(&upstream), "{upstream} upstream attempts for {requests} requests");
    let m = proxy.metrics();
    let exhausted = metric(&m, "vane_retry_budget_exhausted_total", &["route=\"main\""]).unwrap_or(0.0);
    let retried = metric(&m, "vane_retries_total", &["reason=\"status\""]).unwrap_or(0.0);
    assert_eq!(retried as usize, upstream - requests, "{m}");
    assert!(exhausted >= (requests - 60) as f64, "the budget was not what stopped retries: {exhausted}\n{m}");
}
