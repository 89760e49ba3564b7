//! Load shedding: when every endpoint of a backend is saturated, requests are answered `429 shed`
//! at once with `Retry-After`, sheddable ones first and critical ones never.

use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vane_tests::*;

/// A model server that reports a waiting queue of `queue` (give or take one, so that the report
/// is never taken as frozen) and counts its requests, answering after `delay`.
async fn model(queue: usize, delay: Duration, hits: &Arc<AtomicUsize>) -> SocketAddr {
    let hits = Arc::clone(hits);
    serve(move |_req: Request<Incoming>| {
        let n = hits.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(delay).await;
            let mut r = Response::new(full("ok"));
            let report = format!("TEXT named_metrics.queue_depth={}", queue + n % 2);
            r.headers_mut().insert("endpoint-load-metrics", report.parse().unwrap());
            r
        }
    })
    .await
}

fn config(eps: &[SocketAddr], shed: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "backends:\n  - {{ name: pool, endpoints: [{}], balancer: {{ shed: {shed} }} }}\n\
         services:\n  - {{ name: svc, routes: [{{ name: main, backends: [{{ backend: pool }}] }}] }}\n",
        eps.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_backend_sheds_by_priority() {
    let hits = Arc::new(AtomicUsize::new(0));
    let a = model(30, Duration::ZERO, &hits).await;
    let b = model(30, Duration::ZERO, &hits).await;
    let proxy = Proxy::start(&config(&[a, b], "{ queue_depth: 20, retry_after: 3s }"));
    let client = h1_client(proxy.outbound);
    // Until each endpoint has reported, its queue is unknown: not known to be full. The first
    // answer is always served, and shedding starts only once both endpoints have answered.
    assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status.as_u16(), 200);
    let mut served = 1;
    while get(&client, "svc", "/", &[]).await.unwrap().status.as_u16() == 200 {
        served += 1;
        assert!(served < 50, "never shed");
    }
    assert!(hits.load(Ordering::Relaxed) >= 2, "shed before every endpoint had reported");
    let before = hits.load(Ordering::Relaxed);
    for priority in ["standard", "sheddable"] {
        let r = get(&client, "svc", "/", &[("vane-priority", priority)]).await.unwrap();
        assert_eq!(r.status.as_u16(), 429, "{priority}: {r:?}");
        assert_eq!(r.headers.get("vane-proxy-error").unwrap(), "shed");
        assert_eq!(r.headers.get("retry-after").unwrap(), "3");
    }
    let r = get(&client, "svc", "/", &[]).await.unwrap();
    assert_eq!(r.status.as_u16(), 429, "no priority is standard: {r:?}");
    assert_eq!(hits.load(Ordering::Relaxed), before, "a shed request reached an endpoint");
    let r = get(&client, "svc", "/", &[("vane-priority", "critical")]).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "critical is never shed: {r:?}");
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_requests_total", &["error=\"shed\""]), Some(4.0), "{m}");
    // By priority: three standard requests shed (the one that ended the loop above, one named
    // standard, one with no header), one sheddable; the critical one answered.
    let by = |p: &str, o: &str| {
        let labels = format!("direction=\"outbound\",priority=\"{p}\",outcome=\"{o}\"");
        metric(&m, "vane_requests_by_priority_total", &[&labels])
    };
    assert_eq!(by("standard", "shed"), Some(3.0), "{m}");
    assert_eq!(by("sheddable", "shed"), Some(1.0), "{m}");
    assert_eq!(by("critical", "shed"), Some(0.0), "{m}");
    assert_eq!(by("critical", "success"), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheddable_requests_go_first_and_one_endpoint_with_room_keeps_the_backend_open() {
    let hits = Arc::new(AtomicUsize::new(0));
    let busy = model(30, Duration::ZERO, &hits).await;
    let half = model(12, Duration::ZERO, &hits).await;
    let proxy = Proxy::start(&config(&[busy, half], "{ queue_depth: 20 }"));
    let client = h1_client(proxy.outbound);
    for _ in 0..6 {
        get(&client, "svc", "/", &[]).await.unwrap();
    }
    // One endpoint has 12–13 waiting: not full for standard requests (20), full for sheddable (10).
    for _ in 0..5 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status.as_u16(), 200);
        let r = get(&client, "svc", "/", &[("vane-priority", "sheddable")]).await.unwrap();
        assert_eq!(r.status.as_u16(), 429, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_limit_sheds_the_requests_past_it() {
    let hits = Arc::new(AtomicUsize::new(0));
    let slow = model(0, Duration::from_millis(600), &hits).await;
    let proxy = Proxy::start(&config(&[slow], "{ max_in_flight: 3 }"));
    let client = h1_client(proxy.outbound);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { get(&c, "svc", "/", &[]).await.unwrap().status.as_u16() }));
    }
    assert!(wait_until(Duration::from_secs(5), || hits.load(Ordering::Relaxed) == 3).await);
    let r = get(&client, "svc", "/", &[]).await.unwrap();
    assert_eq!(r.status.as_u16(), 429, "the 4th request past a limit of 3: {r:?}");
    let r = get(&client, "svc", "/", &[("vane-priority", "critical")]).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status.as_u16(), 200, "room again");
}

/// A request whose answer must come whole within its deadline is refused at once when the
/// backend's endpoints have lately taken longer than that; before they have been measured, and
/// for a longer deadline, it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_the_backend_cannot_meet_is_refused_before_it_is_sent() {
    let hits = Arc::new(AtomicUsize::new(0));
    let slow = model(0, Duration::from_millis(300), &hits).await;
    let yaml = format!(
        "backends:\n  - {{ name: pool, endpoints: [\"{slow}\"] }}\n\
         services:\n  - name: svc\n    routes:\n      - {{ name: quick, match: {{ path: {{ prefix: /quick }} }}, timeout: 100ms, backends: [{{ backend: pool }}] }}\n      - {{ name: patient, backends: [{{ backend: pool }}] }}\n"
    );
    let proxy = Proxy::start(&yaml);
    let client = h1_client(proxy.outbound);
    // Not measured yet: sent, and timed out.
    let r = get(&client, "svc", "/quick", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (504, "response-timeout"));
    // A patient request measures the endpoint's answering time.
    assert_eq!(get(&client, "svc", "/patient", &[]).await.unwrap().status.as_u16(), 200);
    let before = hits.load(Ordering::Relaxed);
    let r = get(&client, "svc", "/quick", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (504, "deadline-unmeetable"), "{r:?}");
    assert_eq!(hits.load(Ordering::Relaxed), before, "the refused request never reached the endpoint");
    assert_eq!(get(&client, "svc", "/patient", &[]).await.unwrap().status.as_u16(), 200, "a longer deadline is sent");
}
