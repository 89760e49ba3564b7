//! Model-load awareness: ORCA load reports steer traffic, 429s do not attract it, and the
//! inbound proxy attaches the pod's load from the local probe.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use vane_tests::*;

/// A backend that answers 200 with a fixed ORCA report (or a 429 when `throttle` is set).
async fn reporting_backend(report: &'static str, throttle: bool, hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    serve(move |_req: Request<Incoming>| {
        let hits = Arc::clone(&hits);
        async move {
            hits.fetch_add(1, Ordering::Relaxed);
            if throttle {
                let mut r = Response::new(full("slow down"));
                *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut().insert("retry-after", "2".parse().unwrap());
                return r;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut r = Response::new(full("ok"));
            if !report.is_empty() {
                r.headers_mut().insert("endpoint-load-metrics", report.parse().unwrap());
            }
            r
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_queue_depth_steers_traffic_away() {
    let (busy_hits, idle_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let busy = reporting_backend(
        "TEXT named_metrics.queue_depth=30, named_metrics.kv_cache_usage=0.9",
        false,
        Arc::clone(&busy_hits),
    )
    .await;
    let idle = reporting_backend(
        "TEXT named_metrics.queue_depth=0, named_metrics.kv_cache_usage=0.1",
        false,
        Arc::clone(&idle_hits),
    )
    .await;
    let proxy = Proxy::start(&split_config(&[("pool", &[busy, idle], 1)], ""));
    let client = h1_client(proxy.outbound);
    for _ in 0..300 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status, 200);
    }
    let share = busy_hits.load(Ordering::Relaxed) as f64 / 300.0;
    assert!(share < 0.1, "the endpoint reporting a long queue took {:.1} %", share * 100.0);
    let m = proxy.metrics();
    assert!(metric(&m, "vane_balancer_load_age_seconds_count", &[]).unwrap() > 200.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_429s_do_not_attract_traffic() {
    let (throttled_hits, ok_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let throttled = reporting_backend("", true, Arc::clone(&throttled_hits)).await;
    let ok = reporting_backend("", false, Arc::clone(&ok_hits)).await;
    let proxy = Proxy::start(&split_config(&[("pool", &[throttled, ok], 1)], ""));
    let client = h1_client(proxy.outbound);
    let mut ok_answers = 0;
    for _ in 0..300 {
        if get(&client, "svc", "/", &[]).await.unwrap().status == 200 {
            ok_answers += 1;
        }
    }
    // Every 429 is retried on the healthy endpoint, so the client never sees one; and the instant
    // refusal does not make the throttled endpoint look fastest (without the penalty it would).
    assert_eq!(ok_answers, 300, "a 429 reached the client");
    let throttled_tries = throttled_hits.swap(0, Ordering::Relaxed);
    assert!(throttled_tries < 30, "the throttling endpoint was tried {throttled_tries} times in 300");

    // The latency-only algorithm, for contrast, keeps being fooled (this is what the penalty fixes):
    // the client still gets its answers (retried, with a retry budget of one per request, since
    // half its attempts are refused), but the throttled endpoint is tried far more.
    let cfg = format!(
        "proxy: {{ balancer: {{ algorithm: p2c_latency }}, retry_budget: {{ ratio: 1 }} }}\n{}",
        split_config(&[("pool", &[throttled, ok], 1)], "")
    );
    let naive = Proxy::start(&cfg);
    let client = h1_client(naive.outbound);
    for _ in 0..300 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status, 200);
    }
    let naive_tries = throttled_hits.load(Ordering::Relaxed);
    assert!(naive_tries > throttled_tries, "penalty made no difference ({naive_tries} vs {throttled_tries})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_least_request_are_available() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    for algo in ["round_robin", "least_request"] {
        let cfg = format!(
            "proxy: {{ balancer: {{ algorithm: {algo} }} }}\n{}",
            split_config(&[("pool", &[a.addr, b.addr], 1)], "")
        );
        let proxy = Proxy::start(&cfg);
        let client = h1_client(proxy.outbound);
        let before = a.hits();
        let mut order = String::new();
        for _ in 0..100 {
            let r = get(&client, "svc", "/", &[]).await.unwrap();
            assert_eq!(r.status, 200);
            order.push_str(r.served_by());
        }
        let on_a = a.hits() - before;
        if algo == "round_robin" {
            // Whichever endpoint comes first, the other comes next, every time.
            let alternating = order == "ab".repeat(50) || order == "ba".repeat(50);
            assert!(alternating, "round robin over two endpoints served {order}");
            assert_eq!(on_a, 50);
        } else {
            assert!((20..=80).contains(&on_a), "least request spreads sequential requests: {on_a}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_attaches_the_pods_load_from_the_probe() {
    let model = Backend::start("model").await;
    let stale = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stale);
    let probe = serve(move |_req: Request<Incoming>| {
        let stale = s.load(Ordering::Relaxed);
        async move {
            let body = format!(
                r#"{{"server":"vllm","queue_depth":5,"running":21,"kv_cache_usage":0.42,"age_ms":3,"stale":{stale}}}"#
            );
            Response::new(full(Bytes::from(body)))
        }
    })
    .await;
    let cfg = format!(
        "inbound: {{ forward_to: \"{}\", load_from: \"http://{probe}/load\", load_interval: 10ms }}\n",
        model.addr
    );
    let proxy = Proxy::start(&cfg);
    let client = h1_client(proxy.inbound);
    let mut header = String::new();
    for _ in 0..100 {
        let r = get(&client, "model", "/v1/models", &[]).await.unwrap();
        assert_eq!(r.served_by(), "model");
        if let Some(h) = r.headers.get("endpoint-load-metrics") {
            header = h.to_str().unwrap().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(header.starts_with("TEXT named_metrics.queue_depth=5, named_metrics.running=21, named_metrics.kv_cache_usage=0.4200, named_metrics.age_ms="), "{header:?}");
    let report = vane_route::orca::parse(header.as_bytes()).unwrap();
    assert!(report.age.unwrap() >= Duration::from_millis(3));

    // Stale figures are never attached.
    stale.store(true, Ordering::Relaxed);
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if get(&client, "model", "/", &[]).await.unwrap().headers.get("endpoint-load-metrics").is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "stale load kept being attached");
}

/// A fake load probe that always reports `queue` waiting requests, counting the reads in `reads`.
async fn probe(queue: u32, reads: Arc<AtomicUsize>) -> std::net::SocketAddr {
    serve(move |_req: Request<Incoming>| {
        reads.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = format!(
                r#"{{"server":"vllm","queue_depth":{queue},"running":4,"kv_cache_usage":0.3,"age_ms":1,"stale":false}}"#
            );
            Response::new(full(Bytes::from(body)))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_streams_inform_the_first_decision() {
    // Two pods, each a model server behind a Vane inbound proxy with its load probe.
    let (m1, m2) = (Backend::start("busy-pod").await, Backend::start("idle-pod").await);
    let (reads1, reads2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (p1, p2) = (probe(40, Arc::clone(&reads1)).await, probe(0, Arc::clone(&reads2)).await);
    let inbound = |model: std::net::SocketAddr, probe: std::net::SocketAddr| {
        format!("inbound: {{ forward_to: \"{model}\", load_from: \"http://{probe}/load\", load_interval: 10ms }}\n")
    };
    let pod1 = Proxy::start(&inbound(m1.addr, p1));
    let pod2 = Proxy::start(&inbound(m2.addr, p2));
    let cfg = format!(
        "backends:\n  - {{ name: pods, endpoints: [\"{}\", \"{}\"], balancer: {{ load_stream: true }} }}\n\
         services:\n  - {{ name: svc, routes: [{{ name: r, backends: [{{ backend: pods }}] }}] }}\n",
        pod1.inbound, pod2.inbound
    );
    let caller = Proxy::start(&cfg);
    let client = h1_client(caller.outbound);
    // Wait until both streams have delivered (no request has been sent yet, so no response
    // header can have carried any load).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = [&pod1, &pod2].iter().all(|p| {
            metric(&p.metrics(), "vane_requests_total", &["service=\"load-stream\""]).is_some()
                || metric(&p.metrics(), "vane_request_duration_seconds_count", &["service=\"load-stream\""]).is_some()
        });
        if got {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "load streams never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each pod pushes a line down the open stream on every probe read (10 ms): two more reads of
    // each probe mean both streams have carried readings to the caller.
    let (seen1, seen2) = (reads1.load(Ordering::Relaxed), reads2.load(Ordering::Relaxed));
    let pushed = || reads1.load(Ordering::Relaxed) >= seen1 + 2 && reads2.load(Ordering::Relaxed) >= seen2 + 2;
    assert!(wait_until(Duration::from_secs(5), pushed).await, "the pods stopped reading their probes");
    let r = get(&client, "svc", "/", &[]).await.unwrap();
    assert_eq!(r.served_by(), "idle-pod", "the first decision already knew the queues");
    let m = caller.metrics();
    assert_eq!(metric(&m, "vane_balancer_load_age_seconds_count", &[]), Some(1.0), "{m}");
    // Fresh: the first bucket edges are 0.5 ms, 1 ms, ... ; the figures were read within 50 ms.
    assert_eq!(metric(&m, "vane_balancer_load_age_seconds_bucket", &["le=\"0.064\""]), Some(1.0), "{m}");
    for _ in 0..30 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().served_by(), "idle-pod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_pushes_each_reading_to_the_inbound_proxy() {
    // A model server whose vLLM queue the test sets, read by a real vane-gpu-probe every 20 ms.
    let queue = Arc::new(AtomicUsize::new(3));
    let q = Arc::clone(&queue);
    let model = serve(move |req: Request<Incoming>| {
        let queue = q.load(Ordering::Relaxed);
        async move {
            let body = match req.uri().path() {
                "/metrics" => format!(
                    "# HELP vllm:num_requests_waiting Waiting.\n# TYPE vllm:num_requests_waiting gauge\n\
                     vllm:num_requests_waiting{{model_name=\"m\"}} {queue}.0\n\
                     # TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name=\"m\"}} 2.0\n"
                ),
                _ => "ok".to_string(),
            };
            Response::new(full(Bytes::from(body)))
        }
    })
    .await;
    let config = vane_gpu_probe::Config {
        metrics_url: format!("http://{model}/metrics").parse().unwrap(),
        interval: Duration::from_millis(20),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: vane_gpu_probe::gpu::GpuConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let probe = vane_gpu_probe::Probe::bind(config).await.unwrap();
    let probe_addr = probe.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    // Polling every 10 s could not explain a change seen within a second: only the push can.
    let cfg = format!(
        "inbound: {{ forward_to: \"{model}\", load_from: \"http://{probe_addr}/load\", load_interval: 10s }}\n"
    );
    let proxy = Proxy::start(&cfg);
    let client = h1_client(proxy.inbound);
    let queue_seen = |want: f64| {
        let client = client.clone();
        async move {
            for _ in 0..100 {
                let r = get(&client, "model", "/v1/models", &[]).await.unwrap();
                let h = r.headers.get("endpoint-load-metrics").map(|h| h.to_str().unwrap().to_string());
                if let Some(report) = h.as_deref().and_then(|h| vane_route::orca::parse(h.as_bytes()))
                    && report.queue_depth == Some(want)
                {
                    return Some(report);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        }
    };
    assert!(queue_seen(3.0).await.is_some(), "the first reading never reached the inbound proxy");
    queue.store(11, Ordering::Relaxed);
    let report = queue_seen(11.0).await.expect("a new queue depth within a second, with 10 s polling");
    // The age states the scrape's own age, well under the 1 s staleness.
    assert!(report.age.is_some_and(|a| a < Duration::from_millis(500)), "{report:?}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
