//! The proxy's side of the control service: a discovery stream over h2c (here a small fake of
//! `vane-control` speaking the same NDJSON protocol) feeds the routing table.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use vane_route::config::{BackendConfig, RouteConfig, ServiceConfig, WeightedBackend};
use vane_route::discovery::Message;
use vane_tests::*;

type Tables = (Vec<ServiceConfig>, Vec<BackendConfig>);

/// A fake control service: a snapshot of the current tables on connect, an update on each change.
struct FakeControl {
    addr: SocketAddr,
    tables: watch::Sender<Tables>,
    /// While set, streams end and new subscriptions are refused (a restarting control service).
    down: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl FakeControl {
    async fn start(initial: Tables) -> FakeControl {
        let (tables, _) = watch::channel(initial);
        let down = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (t, d, c) = (tables.clone(), Arc::clone(&down), Arc::clone(&connections));
        let addr = serve(move |req: Request<Incoming>| {
            let (mut rx, down, conns) = (t.subscribe(), Arc::clone(&d), Arc::clone(&c));
            async move {
                assert_eq!(req.uri().path(), "/v1/discovery");
                if down.load(Ordering::Relaxed) {
                    let mut r = Response::new(full("restarting"));
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    return r;
                }
                conns.fetch_add(1, Ordering::Relaxed);
                let (tx, body) = mpsc::channel(16);
                tokio::spawn(async move {
                    let (services, backends) = rx.borrow_and_update().clone();
                    let mut version = 1;
                    let snap = Message::Snapshot { version, services, backends, authz: None };
                    if tx.send(Frame::data(Bytes::from(snap.to_line()))).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::select! {
                            changed = rx.changed() => if changed.is_err() { return },
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                                if down.load(Ordering::Relaxed) { return } // stream ends
                                continue;
                            }
                        }
                        version += 1;
                        let (services, backends) = rx.borrow_and_update().clone();
                        let msg = Message::Update { version, services, backends, authz: None };
                        if tx.send(Frame::data(Bytes::from(msg.to_line()))).await.is_err() {
                            return;
                        }
                    }
                });
                let mut r = Response::new(http_body_util::Either::Right(ChannelBody(body)));
                r.headers_mut().insert("content-type", "application/x-ndjson".parse().unwrap());
                r
            }
        })
        .await;
        FakeControl { addr, tables, down, connections }
    }
}

fn tables(weights: &[(&Backend, u32)]) -> Tables {
    let services = vec![ServiceConfig {
        name: "llm.models.svc.cluster.local".into(),
        hosts: vec!["llm.models".into()],
        routes: vec![RouteConfig {
            name: "default".into(),
            matches: Default::default(),
            backends: weights.iter().map(|(b, w)| WeightedBackend { backend: b.name.into(), weight: *w }).collect(),
            sticky: None,
            timeout: None,
            retries: None,
            coalesce: None,
            hedge: None,
        }],
    }];
    let backends = weights
        .iter()
        .map(|(b, _)| BackendConfig {
            name: b.name.into(),
            protocol: Default::default(),
            endpoints: vec![b.addr.to_string()],
            balancer: None,
            identity: None,
            identities: Default::default(),
        })
        .collect();
    (services, backends)
}

fn start_proxy(control: SocketAddr) -> Proxy {
    Proxy::start_with_args("{}\n", &["--control", &control.to_string()]).expect("proxy with a control service")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_from_the_control_service_without_a_failed_request() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let control = FakeControl::start(tables(&[(&blue, 100), (&green, 0)])).await;
    let proxy = start_proxy(control.addr);
    let client = h1_client(proxy.outbound);
    assert_eq!(get(&client, "llm.models", "/", &[]).await.unwrap().served_by(), "blue");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, failures, client) = (Arc::clone(&stop), Arc::clone(&failures), h2_client(proxy.outbound));
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match get(&client, "llm.models", "/", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            n
        })
    };
    let v = proxy.version();
    control.tables.send_replace(tables(&[(&blue, 90), (&green, 10)]));
    proxy.wait_version(v + 1);
    assert!(wait_until(Duration::from_secs(5), || green.hits() > 0).await, "canary got nothing at 90/10");
    control.tables.send_replace(tables(&[(&blue, 0), (&green, 100)]));
    proxy.wait_version(v + 2);
    for _ in 0..30 {
        assert_eq!(get(&client, "llm.models", "/", &[]).await.unwrap().served_by(), "green");
    }
    // The load keeps going past the last switch before it stops.
    let after = sent.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || sent.load(Ordering::Relaxed) > (after + 20).max(60)).await,
        "the load generator stalled"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 50, "load generator barely ran ({sent})");
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_control_connected", &[]), Some(1.0), "{m}");
    assert!(metric(&m, "vane_config_reloads_total", &["source=\"control\"", "result=\"ok\""]).unwrap() >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_service_restart_does_not_interrupt_traffic() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let control = FakeControl::start(tables(&[(&a, 1)])).await;
    let proxy = start_proxy(control.addr);
    let client = h1_client(proxy.outbound);
    assert_eq!(get(&client, "llm.models", "/", &[]).await.unwrap().served_by(), "a");

    control.down.store(true, Ordering::Relaxed);
    let disconnected = || admin_get(proxy.admin, "/ready").is_ok_and(|(_, b)| b.contains("control: disconnected"));
    assert!(wait_until(Duration::from_secs(5), disconnected).await, "the proxy never noticed the control service went");
    // Down: the proxy serves on with what it has, and says so.
    for _ in 0..20 {
        assert_eq!(get(&client, "llm.models", "/", &[]).await.unwrap().served_by(), "a");
    }
    let (status, body) = admin_get(proxy.admin, "/ready").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("control: disconnected"), "{body}");
    assert_eq!(metric(&proxy.metrics(), "vane_control_connected", &[]), Some(0.0));

    // Back, with a change made meanwhile: the reconnect's snapshot brings it.
    control.tables.send_replace(tables(&[(&b, 1)]));
    control.down.store(false, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&client, "llm.models", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        if r.served_by() == "b" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the reconnect never brought the new table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(control.connections.load(Ordering::Relaxed) >= 2);
    assert!(metric(&proxy.metrics(), "vane_control_reconnects_total", &[]).unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_first_snapshot_and_unknown_services_get_503() {
    // Nothing listens at the control address yet.
    let dead = refused_addr();
    let proxy = Proxy::try_start_with_args_unready("{}\n", &["--control", &dead.to_string()]);
    let (status, body) = admin_get(proxy.admin, "/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting for the control service"), "{body}");
    let r = get(&h1_client(proxy.outbound), "llm.models", "/", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (503, "unknown-service"));
}
