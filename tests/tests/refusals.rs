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
