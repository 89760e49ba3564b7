//! Latency-aware balancing: a slow endpoint gets little traffic, and gets it back when it recovers.
//! Refused endpoints are ejected without failing requests.

use std::time::Duration;
use vane_tests::*;

async fn burst(client: &TestClient, n: usize, concurrency: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for _ in (w..n).step_by(concurrency) {
                match get(&client, "svc", "/", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    _ => failed += 1,
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_gets_a_small_share_and_recovers() {
    let fast1 = Backend::start("fast1").await;
    let fast2 = Backend::start("fast2").await;
    let slow = Backend::start("slow").await;
    for b in [&fast1, &fast2] {
        b.set_delay(Duration::from_millis(2));
    }
    slow.set_delay(Duration::from_millis(20));
    let cfg = format!(
        "proxy: {{ balancer: {{ ewma_decay: 300ms }} }}\n{}",
        split_config(&[("pool", &[fast1.addr, fast2.addr, slow.addr], 1)], "")
    );
    let proxy = Proxy::start(&cfg);
    let client = h1_client(proxy.outbound);
    assert_eq!(burst(&client, 600, 6).await, 0);
    let slow_share = slow.hits() as f64 / 600.0;
    // Round-robin would give it a third; P2C over peak-EWMA x in-flight gives it far less.
    assert!(slow_share < 0.12, "slow endpoint took {:.1} %", slow_share * 100.0);

    // It recovers: within a few decay periods (300 ms each) it takes a fair share again. Rounds of
    // 300 requests until one gives it over a fifth, with a deadline of many decay periods.
    slow.set_delay(Duration::from_millis(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut shares = Vec::new();
    loop {
        let before = slow.hits();
        assert_eq!(burst(&client, 300, 6).await, 0);
        let share = (slow.hits() - before) as f64 / 300.0;
        shares.push(format!("{:.1} %", share * 100.0));
        if share > 0.2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the recovered endpoint never got its share back: {shares:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_is_ejected_and_nothing_fails() {
    let healthy = Backend::start("healthy").await;
    let dead = refused_addr();
    let proxy = Proxy::start(&split_config(&[("pool", &[dead, healthy.addr], 1)], ""));
    for client in [h1_client(proxy.outbound), h2_client(proxy.outbound)] {
        assert_eq!(burst(&client, 200, 4).await, 0);
        // POST bodies with a Content-Length are retried on another endpoint too.
        for _ in 0..20 {
            let r = send(&client, "POST", "svc", "/", &[], "{\"x\":1}").await.unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body.contains("{\\\"x\\\":1}"), "{}", r.body);
        }
    }
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_endpoint_ejected", &[&format!("endpoint=\"{dead}\"")]), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vane_endpoint_ejected", &[&format!("endpoint=\"{}\"", healthy.addr)]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_dead_endpoints_give_502_and_an_empty_backend_503() {
    let proxy = Proxy::start(&split_config(&[("pool", &[refused_addr()], 1)], ""));
    let client = h1_client(proxy.outbound);
    // Ejected after the first refusal, the only endpoint is still tried (panic mode): 502 each time.
    for _ in 0..3 {
        let r = get(&client, "svc", "/", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.proxy_error()), (502, "connect-failed"), "{r:?}");
    }
    let proxy = Proxy::start(&split_config(&[("pool", &[], 1)], ""));
    let r = get(&h1_client(proxy.outbound), "svc", "/", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (503, "no-endpoint-ready"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_endpoint_that_failed_once_is_not_shunned() {
    // The only endpoint refuses once (it restarts), then is back: the next request reaches it at
    // once instead of failing fast for the ejection time.
    let port = refused_addr();
    let proxy = Proxy::start(&split_config(&[("pool", &[port], 1)], ""));
    let client = h1_client(proxy.outbound);
    assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status, 502);
    let listener = tokio::net::TcpListener::bind(port).await.expect("rebind the port");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("back")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let r = get(&client, "svc", "/", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answer_times_out_with_504() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(800));
    let route = "        timeout: 100ms\n";
    let proxy = Proxy::start(&split_config(&[("b", &[slow.addr], 1)], route));
    let r = get(&h1_client(proxy.outbound), "svc", "/", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (504, "response-timeout"));
}

/// A model-server stand-in: headers at once, the first token after `first_token`, then `tokens`
/// more, `gap` apart.
async fn token_streamer(
    first_token: Duration,
    tokens: usize,
    gap: Duration,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    use http_body::Frame;
    serve(move |_req: http::Request<hyper::body::Incoming>| {
        let hits = std::sync::Arc::clone(&hits);
        async move {
            hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = tokio::sync::mpsc::channel(tokens + 1);
            tokio::spawn(async move {
                tokio::time::sleep(first_token).await;
                let _ = tx.send(Frame::data(bytes::Bytes::from_static(b"data: first\n\n"))).await;
                for _ in 0..tokens {
                    tokio::time::sleep(gap).await;
                    let _ = tx.send(Frame::data(bytes::Bytes::from_static(b"data: tok\n\n"))).await;
                }
            });
            let mut r = http::Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_time_to_first_token_not_to_headers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (slow_hits, fast_hits) = (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicUsize::new(0)));
    let slow = token_streamer(Duration::from_millis(40), 0, Duration::ZERO, std::sync::Arc::clone(&slow_hits)).await;
    let fast = token_streamer(Duration::from_millis(2), 0, Duration::ZERO, std::sync::Arc::clone(&fast_hits)).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[slow, fast], 1)], ""));
    let client = h1_client(proxy.outbound);
    for _ in 0..200 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status, 200);
    }
    // Both send headers at once; only the first token tells them apart.
    let share = slow_hits.load(Ordering::Relaxed) as f64 / 200.0;
    let m = proxy.metrics();
    assert!(share < 0.15, "the endpoint with a 20x slower first token took {:.1} %\n{m}", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_streams_slower_gets_less() {
    // Both answer their first token at once; one takes five times longer to stream the rest (a
    // slower GPU decodes every token slower). Time to first byte alone cannot tell them apart.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (fast_hits, slow_hits) = (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicUsize::new(0)));
    let fast = token_streamer(Duration::ZERO, 4, Duration::from_millis(2), fast_hits.clone()).await;
    let slow = token_streamer(Duration::ZERO, 4, Duration::from_millis(10), slow_hits.clone()).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[fast, slow], 1)], ""));
    let client = h1_client(proxy.outbound);
    // One request at a time, so requests in flight cannot tell them apart either.
    assert_eq!(burst(&client, 200, 1).await, 0);
    let slow_share = slow_hits.load(Ordering::Relaxed) as f64 / 200.0;
    // Without the body time both cost about the same and each gets about half.
    assert!(slow_share < 0.25, "the slower-streaming endpoint took {:.1} %", slow_share * 100.0);
    assert_eq!(fast_hits.load(Ordering::Relaxed) + slow_hits.load(Ordering::Relaxed), 200);
}
