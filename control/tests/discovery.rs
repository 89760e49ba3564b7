//! End to end: the control service on a fake API server, subscribed to like a proxy would.

mod support;

use std::time::Duration;
use support::fake_api::{FakeApi, Res, endpoint_slice, service, split_route};
use support::subscriber::Subscriber;
use support::{Control, metric};
use vane_route::discovery::Message;

const LLM: &str = "llm.models.svc.cluster.local";
const LLM_80: &str = "llm.models.svc.cluster.local:80";
const V1_80: &str = "llm-v1.models.svc.cluster.local:80";
const V2_80: &str = "llm-v2.models.svc.cluster.local:80";
const QUIET: Duration = Duration::from_secs(3600);

/// Three Services (lists come in pages of two) and llm's endpoints.
fn populate(fake: &FakeApi) {
    for name in ["llm", "llm-v1", "llm-v2"] {
        fake.apply(service("models", name, 80, None));
    }
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.1", true), ("10.0.0.2", true)]));
    fake.apply(endpoint_slice("models", "v1-a", "llm-v1", 8000, &[("10.0.1.1", true)]));
    fake.apply(endpoint_slice("models", "v2-a", "llm-v2", 8000, &[("10.0.2.1", true)]));
}

async fn setup() -> (FakeApi, Control) {
    let fake = FakeApi::start(2).await;
    populate(&fake);
    let control = Control::start(&fake, QUIET).await;
    control.ready().await;
    (fake, control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_reach_subscribers() {
    let (fake, control) = setup().await;
    assert!(fake.lists(Res::Services) >= 2, "the three Services are listed in pages of two");

    let mut sub = Subscriber::h2c(control.listen(), &format!("services={LLM}")).await;
    assert_eq!(sub.status, 200);
    sub.until("snapshot", |s| s.is_synced()).await;
    assert!(matches!(sub.received[0], Message::Snapshot { .. }));
    assert_eq!(sub.endpoints(LLM_80).unwrap(), ["10.0.0.1:8000", "10.0.0.2:8000"]);
    assert_eq!(sub.routes(LLM), ["default"]);
    let svc = &sub.state.services()[LLM];
    let ip = support::objects::cluster_ip("models", "llm");
    assert_eq!(svc.hosts, ["llm.models".to_string(), "llm.models.svc".into(), format!("{ip}:80")]);
    vane_route::Table::from_config(sub.state.to_config(&Default::default())).unwrap();

    let mut all = Subscriber::http1(control.listen(), "services=*").await;
    all.until("snapshot of everything", |s| s.services().len() == 3).await;

    // A new endpoint.
    fake.apply(endpoint_slice(
        "models",
        "llm-a",
        "llm",
        8000,
        &[("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.3", true)],
    ));
    sub.until("third endpoint", |s| s.backends()[LLM_80].endpoints.len() == 3).await;
    assert!(
        matches!(sub.received.last().unwrap(), Message::Update { services, backends, .. }
        if services.is_empty() && backends.len() == 1),
        "only the backend changed: {:?}",
        sub.received.last()
    );

    // An endpoint turning not-ready disappears.
    fake.apply(endpoint_slice(
        "models",
        "llm-a",
        "llm",
        8000,
        &[("10.0.0.1", true), ("10.0.0.2", false), ("10.0.0.3", true)],
    ));
    sub.until("10.0.0.2 gone", |s| s.backends()[LLM_80].endpoints == ["10.0.0.1:8000", "10.0.0.3:8000"]).await;
    all.until("HTTP/1.1 subscriber sees it too", |s| s.backends()[LLM_80].endpoints.len() == 2).await;

    // A change to another service is not sent to this subscriber.
    let before = sub.received.len();
    fake.apply(endpoint_slice("models", "v1-a", "llm-v1", 8000, &[("10.0.1.9", true)]));
    all.until("v1 change", |s| s.backends()[V1_80].endpoints == ["10.0.1.9:8000"]).await;
    assert!(sub.next(Duration::from_millis(200)).await.is_none());
    assert_eq!(sub.received.len(), before);

    // A second slice of the same service adds to it; deleting it takes its endpoints away.
    fake.apply(endpoint_slice("models", "llm-b", "llm", 8000, &[("10.0.0.7", true)]));
    sub.until("second slice", |s| s.backends()[LLM_80].endpoints.contains(&"10.0.0.7:8000".to_string())).await;
    fake.delete("EndpointSlice", "models", "llm-b");
    sub.until("second slice gone", |s| s.backends()[LLM_80].endpoints.len() == 2).await;

    // The Service itself is deleted: a remove.
    fake.delete("Service", "models", "llm");
    sub.until("service removed", |s| s.services().is_empty()).await;
    assert!(matches!(sub.received.last().unwrap(), Message::Remove { services, .. } if services == &[LLM.to_string()]));

    let (code, metrics) = control.admin("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(metric(&metrics, "vane_control_subscribers "), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, "vane_control_pushes_total{type=\"snapshot\"}"), Some(2.0));
    assert!(metric(&metrics, "vane_control_pushes_total{type=\"update\"}").unwrap() >= 5.0);
    assert!(metric(&metrics, "vane_control_push_latency_seconds_count").unwrap() >= 5.0);
    assert!(metric(&metrics, "vane_control_watch_events_total{kind=\"EndpointSlice\",type=\"apply\"}").unwrap() >= 3.0);
    assert_eq!(metric(&metrics, "vane_control_watch_events_total{kind=\"Service\",type=\"init_done\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_weight_changes_arrive() {
    let (fake, control) = setup().await;
    let mut sub = Subscriber::h2c(control.listen(), &format!("services={LLM}")).await;
    sub.until("snapshot", |s| s.is_synced()).await;

    for (w1, w2) in [(100, 0), (90, 10), (0, 100)] {
        fake.apply(split_route("models", "llm-canary", "llm", &[("llm-v1", 80, w1), ("llm-v2", 80, w2)]));
        let want = vec![(V1_80.to_string(), w1 as u32), (V2_80.to_string(), w2 as u32)];
        sub.until(&format!("weights {w1}/{w2}"), |s| {
            s.services().get(LLM).is_some_and(|svc| {
                svc.routes[0].backends.iter().map(|b| (b.backend.clone(), b.weight)).collect::<Vec<_>>() == want
            })
        })
        .await;
        assert_eq!(sub.endpoints(V1_80).unwrap(), ["10.0.1.1:8000"]);
        assert_eq!(sub.endpoints(V2_80).unwrap(), ["10.0.2.1:8000"]);
        assert!(sub.endpoints(LLM_80).is_none(), "llm's own backend is no longer used");
        vane_route::Table::from_config(sub.state.to_config(&Default::default())).unwrap();
    }

    // Deleting the route brings the default route back.
    fake.delete("HTTPRoute", "models", "llm-canary");
    sub.until("default route", |s| s.services().get(LLM).is_some_and(|svc| svc.routes[0].name == "default")).await;
    assert_eq!(sub.endpoints(LLM_80).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_httproute_is_reported_and_the_service_keeps_its_default_route() {
    let (fake, control) = setup().await;
    let mut sub = Subscriber::h2c(control.listen(), "services=*").await;
    sub.until("snapshot", |s| s.services().len() == 3).await;

    // A good route on llm-v2, and a bad one (all weights 0) on llm.
    fake.apply(split_route("models", "v2-route", "llm-v2", &[("llm-v2", 80, 1)]));
    fake.apply(split_route("models", "bad", "llm", &[("llm-v1", 80, 0), ("llm-v2", 80, 0)]));
    sub.until("v2 route applied", |s| s.services()["llm-v2.models.svc.cluster.local"].routes[0].name == "v2-route/0")
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (_, status) = control.admin("/status").await;
        if status.contains("all backend weights are 0") {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error in /status: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.contains("models/llm"), "{status}");
    assert!(status.contains("HTTPRoute models/bad"), "{status}");
    assert_eq!(sub.routes(LLM), ["default"]);
    assert_eq!(sub.endpoints(LLM_80).unwrap().len(), 2);
    let (_, metrics) = control.admin("/metrics").await;
    assert_eq!(metric(&metrics, "vane_control_invalid_routes "), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "vane_control_route_rejections_total "), Some(1.0));

    // Fixed: the route applies and the report goes away.
    fake.apply(split_route("models", "bad", "llm", &[("llm-v1", 80, 1), ("llm-v2", 80, 0)]));
    sub.until("fixed route", |s| s.services()[LLM].routes[0].name == "bad/0").await;
    let (_, status) = control.admin("/status").await;
    assert!(!status.contains("weights are 0"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recover_from_410_and_dropped_connections() {
    let (fake, control) = setup().await;
    let mut sub = Subscriber::h2c(control.listen(), &format!("services={LLM}")).await;
    sub.until("snapshot", |s| s.is_synced()).await;
    let lists = |fake: &FakeApi| Res::ALL.map(|r| fake.lists(r));
    let before = lists(&fake);

    // 410 Gone on every watch (compaction), and a change made meanwhile.
    fake.compact();
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.4", true)]));
    sub.until("change after 410", |s| s.backends()[LLM_80].endpoints == ["10.0.0.4:8000"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lists(&fake).iter().zip(before).any(|(now, was)| *now <= was) {
        assert!(tokio::time::Instant::now() < deadline, "every kind must list again after 410");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Connections cut mid-stream; a change while the watchers reconnect is replayed to them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open_watches() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "watches never reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lists_before_drop = lists(&fake);
    fake.bookmark();
    fake.drop_watches();
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.5", true)]));
    sub.until("change after a dropped watch", |s| s.backends()[LLM_80].endpoints == ["10.0.0.5:8000"]).await;
    assert_eq!(lists(&fake), lists_before_drop, "a dropped watch resumes from its resourceVersion without a relist");

    // A 410 on a list's continue token: the watcher lists again from the start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open_watches() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "watches never reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.expire_continue_tokens();
    fake.compact();
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.6", true)]));
    sub.until("change after an expired continue token", |s| s.backends()[LLM_80].endpoints == ["10.0.0.6:8000"]).await;

    // Relists that find nothing new send nothing.
    let n = sub.received.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open_watches() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "watches never reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.compact();
    assert!(sub.next(Duration::from_millis(1500)).await.is_none());
    assert_eq!(sub.received.len(), n);
    let (_, metrics) = control.admin("/metrics").await;
    assert!(metric(&metrics, "vane_control_watch_events_total{kind=\"Service\",type=\"error\"}").unwrap() >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_gateway_api_crds() {
    let fake = FakeApi::without(2, &[Res::HttpRoutes]).await;
    populate(&fake);
    let control = Control::start(&fake, QUIET).await;
    control.ready().await;
    let mut sub = Subscriber::h2c(control.listen(), &format!("services={LLM}")).await;
    sub.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(sub.routes(LLM), ["default"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_bad_requests_and_shutdown() {
    let fake = FakeApi::start(2).await;
    populate(&fake);
    let control = Control::start(&fake, Duration::from_millis(100)).await;
    control.ready().await;
    assert_eq!(control.admin("/live").await.0, 200);
    assert_eq!(control.admin("/nope").await.0, 404);
    assert_eq!(support::get(control.listen(), "/v1/discovery").await.0, 400);
    assert_eq!(support::get(control.listen(), "/v1/discovery?services=a/b").await.0, 400);
    assert_eq!(support::get(control.listen(), "/other").await.0, 404);

    let mut sub = Subscriber::h2c(control.listen(), "services=nothing.here.svc.cluster.local").await;
    sub.until("snapshot", |s| s.is_synced()).await;
    assert!(sub.state.services().is_empty());
    assert_eq!(sub.next(Duration::from_secs(2)).await, Some(Message::Ping));

    // Shutdown ends the streams (proxies reconnect elsewhere) and the servers stop.
    let Control { running, trigger } = control;
    trigger.cancel();
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        while sub.next(Duration::from_secs(3)).await.is_some() {}
    });
    assert!(end.await.is_ok(), "the stream ends on shutdown");
    tokio::time::timeout(Duration::from_secs(6), running.wait()).await.expect("servers stop");
}
