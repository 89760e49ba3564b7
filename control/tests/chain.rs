//! The whole chain over real sockets: the fake API server → `vane-control` (library start, a real
//! `kube::Client`) → `vane-proxy` (library start following the control service) → model-server
//! "pods" on loopback addresses. Applications' requests go to the proxy's outbound listener with
//! the Service's authority; every pod answers with its name in `x-served-by`.
//!
//! Waits are on conditions with deadlines: the proxy's `/config` (what it routes with now), the
//! pods' hit counters, and the load generator's per-worker progress.

mod support;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use support::fake_api::{FakeApi, endpoint_slice, service, split_route};
use support::{Control, metric};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vane_control::tables::TableSettings;
use vane_proxy::app::Running as Proxy;
use vane_route::discovery::{HEARTBEAT, Subscription};
use vane_route::{Config, Table};

const LLM: &str = "llm.models.svc.cluster.local";
const LLM_80: &str = "llm.models.svc.cluster.local:80";
const BLUE_80: &str = "llm-blue.models.svc.cluster.local:80";
const GREEN_80: &str = "llm-green.models.svc.cluster.local:80";
/// The longest any single condition is waited for.
const WAIT: Duration = Duration::from_secs(10);
const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn init_logging() {
    // `VANE_TEST_LOG=vane_proxy=debug,vane_control=debug` shows what the chain did.
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANE_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Polls `check` until it holds; fails the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === pods ===

/// A model server: answers every request with its name in `x-served-by` and counts them.
#[derive(Debug)]
struct Pod {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Pod {
    fn serve(name: &'static str, listener: TcpListener) -> Pod {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((io, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut resp = Response::new(Full::new(Bytes::from(name)));
                    resp.headers_mut().insert("x-served-by", http::HeaderValue::from_static(name));
                    std::future::ready(Ok::<_, Infallible>(resp))
                });
                tokio::spawn(builder.serve_connection(TokioIo::new(io), svc).into_owned());
            }
        });
        Pod { name, addr, hits }
    }

    fn ip(&self) -> String {
        self.addr.ip().to_string()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Pods on 127.0.0.1, 127.0.0.2, … all on one port, like the pods behind one Service port (an
/// EndpointSlice has one port for all its addresses). Returns the port and the pods.
async fn pods(names: &[&'static str]) -> (u16, Vec<Pod>) {
    'again: for _ in 0..20 {
        let first = TcpListener::bind(ANY_PORT).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 1..names.len() {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, 1 + i as u8), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'again, // that port is taken on another loopback address
            }
        }
        return (port, names.iter().zip(listeners).map(|(n, l)| Pod::serve(n, l)).collect());
    }
    panic!("no port free on every loopback address");
}

// === clients ===

/// Connects every request to the proxy's outbound listener, whatever its authority says, so that
/// requests carry the Service's name as an application's do (`http://llm.models/...`).
#[derive(Clone, Debug)]
struct ToProxy(SocketAddr);

impl tower::Service<Uri> for ToProxy {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(s))
        })
    }
}

type App = Client<ToProxy, Empty<Bytes>>;

/// An application's client through the proxy: HTTP/1.1, or h2c with prior knowledge.
fn app(proxy: &Proxy, h2: bool) -> App {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2);
    b.build(ToProxy(proxy.outbound))
}

/// `GET http://<host>/v1/models` through the proxy: the pod that answered, or why it failed.
async fn call(app: &App, host: &str) -> Result<String, String> {
    let req = Request::get(format!("http://{host}/v1/models")).body(Empty::new()).unwrap();
    let resp = match tokio::time::timeout(Duration::from_secs(5), app.request(req)).await {
        Err(_) => return Err("no answer in 5s".into()),
        Ok(Err(e)) => return Err(format!("{e:?}")),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (served, error) = (header("x-served-by"), header("vane-proxy-error"));
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    if status != 200 || served.is_empty() || body != served.as_bytes() {
        return Err(format!("{status} {error:?} from {served:?}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(served)
}

/// `n` calls in turn, each of which must succeed: how many each pod answered.
async fn calls(app: &App, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for i in 0..n {
        let pod = call(app, host).await.unwrap_or_else(|e| panic!("call {i} to {host} failed: {e}"));
        *served.entry(pod).or_default() += 1;
    }
    served
}

/// Requests in a loop until stopped, from one HTTP/1.1 and one h2c worker; every failure is kept.
#[derive(Debug)]
struct Load {
    stop: Arc<AtomicBool>,
    done: Vec<Arc<AtomicUsize>>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut done = Vec::new();
        let mut workers = Vec::new();
        for h2 in [false, true] {
            let counter = Arc::new(AtomicUsize::new(0));
            done.push(Arc::clone(&counter));
            let (stop, failures, app) = (Arc::clone(&stop), Arc::clone(&failures), app(proxy, h2));
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = call(&app, host).await {
                        failures.lock().unwrap().push(format!("{}: {e}", if h2 { "h2c" } else { "http/1.1" }));
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, done, failures, workers }
    }

    /// Requests each worker has finished so far.
    fn mark(&self) -> Vec<usize> {
        self.done.iter().map(|d| d.load(Ordering::Relaxed)).collect()
    }

    /// Waits until every worker has finished `n` more requests than at `mark`. With `n >= 1`,
    /// every request still in flight at `mark` is over by then.
    async fn passed(&self, mark: &[usize], n: usize) {
        eventually(&format!("{n} more requests from each load worker"), async || {
            self.mark().iter().zip(mark).all(|(now, was)| *now >= was + n)
        })
        .await;
    }

    /// Stops the workers: (requests sent, failures).
    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let sent = self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        (sent, std::mem::take(&mut *self.failures.lock().unwrap()))
    }
}

// === the control service and the proxy ===

/// Starts the control service against `fake`, its discovery stream on `listen` (a restarted
/// one takes its predecessor's address), and waits until it is ready.
async fn start_control(fake: &FakeApi, listen: SocketAddr) -> Control {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trigger = vane_runtime::CancellationToken::new();
    let settings = vane_control::Settings {
        listen,
        admin: ANY_PORT,
        tables: TableSettings::default(),
        heartbeat: HEARTBEAT,
        identity: None,
    };
    let running = vane_control::start(fake.client(), settings, trigger.clone()).await.expect("control service starts");
    let control = Control { running, trigger };
    control.ready().await;
    control
}

/// Stops the control service: streams end, servers stop.
async fn stop_control(control: Control) {
    let Control { running, trigger } = control;
    trigger.cancel();
    tokio::time::timeout(Duration::from_secs(6), running.wait()).await.expect("the control service stops");
}

/// Starts a proxy with an empty base config that follows the control service for `llm`, and
/// waits until it is ready and routes `llm`.
async fn start_proxy(control: SocketAddr) -> Proxy {
    let opts = vane_proxy::app::Options {
        // Only a file source is ever reloaded; the base config is the empty table below.
        source: vane_proxy::config::Source::Embedded,
        outbound: ANY_PORT,
        inbound: ANY_PORT,
        admin: ANY_PORT,
        reload_interval: Duration::from_secs(1),
        control: Some(vane_proxy::app::ControlTarget {
            addr: control.to_string(),
            subscription: Subscription::from_query(Some(&format!("services={LLM}"))).unwrap(),
        }),
        transparent: false,
        identity: None,
    };
    let proxy = vane_proxy::app::start(opts, Table::from_config(Config::default()).unwrap()).await.unwrap();
    eventually("the proxy's first snapshot", async || support::get(proxy.admin, "/ready").await.0 == 200).await;
    // `/ready` can answer 200 a moment before the snapshot's routes are active (the proxy marks
    // its discovery state synced before it swaps the new table in), so wait for the routes too.
    eventually("llm in the proxy's config", async || proxy_config(&proxy).await.services.iter().any(|s| s.name == LLM))
        .await;
    proxy
}

/// What the proxy routes with now, from its admin `/config`.
async fn proxy_config(proxy: &Proxy) -> Config {
    let (code, body) = support::get(proxy.admin, "/config").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    serde_json::from_value(v["config"].clone()).unwrap()
}

/// Endpoints of a backend in the proxy's config.
async fn endpoints(proxy: &Proxy, backend: &str) -> Option<Vec<String>> {
    proxy_config(proxy).await.backends.into_iter().find(|b| b.name == backend).map(|b| b.endpoints)
}

/// Backends and weights of a service's first route in the proxy's config.
async fn weights(proxy: &Proxy, service: &str) -> Vec<(String, u32)> {
    let config = proxy_config(proxy).await;
    let Some(svc) = config.services.iter().find(|s| s.name == service) else { return vec![] };
    svc.routes[0].backends.iter().map(|b| (b.backend.clone(), b.weight)).collect()
}

fn owned(v: &[(&str, u32)]) -> Vec<(String, u32)> {
    v.iter().map(|(b, w)| (b.to_string(), *w)).collect()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_slice_change_moves_traffic_to_the_new_endpoint() {
    init_logging();
    let (port, pods) = pods(&["llm-0", "llm-1"]).await;
    let fake = FakeApi::start(100).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(endpoint_slice("models", "llm-abc", "llm", port, &[(&pods[0].ip(), true)]));
    let control = start_control(&fake, ANY_PORT).await;
    let proxy = start_proxy(control.listen()).await;
    assert_eq!(endpoints(&proxy, LLM_80).await.unwrap(), [pods[0].addr.to_string()]);

    // Every authority of the Service, over both protocols.
    for h2 in [false, true] {
        let app = app(&proxy, h2);
        for host in ["llm.models", "llm.models.svc", LLM, "LLM.Models:80"] {
            assert_eq!(call(&app, host).await, Ok("llm-0".to_string()), "{host} (h2c: {h2})");
        }
    }

    // The pod is replaced (a new address in the slice) while traffic flows.
    let load = Load::start(&proxy, "llm.models");
    load.passed(&load.mark(), 10).await;
    fake.apply(endpoint_slice("models", "llm-abc", "llm", port, &[(&pods[1].ip(), true)]));
    eventually("the new endpoint in the proxy", async || {
        endpoints(&proxy, LLM_80).await == Some(vec![pods[1].addr.to_string()])
    })
    .await;
    let mark = load.mark();
    load.passed(&mark, 1).await;
    let old = pods[0].hits();
    load.passed(&mark, 20).await;
    assert_eq!(pods[0].hits(), old, "the old endpoint got traffic after the proxy dropped it");
    let app = app(&proxy, false);
    assert_eq!(calls(&app, "llm.models", 20).await, BTreeMap::from([("llm-1".to_string(), 20)]));
    let (sent, failures) = load.stop().await;
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());

    let (_, m) = support::get(proxy.admin, "/metrics").await;
    assert_eq!(metric(&m, "vane_control_connected "), Some(1.0), "{m}");
    assert!(metric(&m, "vane_config_reloads_total{source=\"control\",result=\"ok\"}").unwrap() >= 2.0, "{m}");
    assert_eq!(metric(&m, "vane_config_reloads_total{source=\"control\",result=\"error\"}").unwrap_or(0.0), 0.0);
    proxy.drain(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_turning_not_ready_gets_no_more_traffic() {
    init_logging();
    let (port, pods) = pods(&["llm-0", "llm-1"]).await;
    let fake = FakeApi::start(100).await;
    fake.apply(service("models", "llm", 80, None));
    let slice = |ready: [bool; 2]| {
        endpoint_slice("models", "llm-abc", "llm", port, &[(&pods[0].ip(), ready[0]), (&pods[1].ip(), ready[1])])
    };
    fake.apply(slice([true, true]));
    let control = start_control(&fake, ANY_PORT).await;
    let proxy = start_proxy(control.listen()).await;
    let both: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    assert_eq!(endpoints(&proxy, LLM_80).await.unwrap(), both);

    // The balancer may favour one pod; the busier one is the one to take out.
    let app = app(&proxy, false);
    let served = calls(&app, "llm.models", 50).await;
    let busy_i = usize::from(served.get("llm-1") > served.get("llm-0"));
    let (busy, other) = (&pods[busy_i], &pods[1 - busy_i]);
    assert!(busy.hits() > 0);

    let mut ready = [true, true];
    ready[busy_i] = false;
    fake.apply(slice(ready));
    eventually("the not-ready endpoint gone from the proxy", async || {
        endpoints(&proxy, LLM_80).await == Some(vec![other.addr.to_string()])
    })
    .await;
    let before = busy.hits();
    assert_eq!(calls(&app, "llm.models", 100).await, BTreeMap::from([(other.name.to_string(), 100)]));
    assert_eq!(busy.hits(), before, "{} is not ready but got traffic", busy.name);

    // Ready again: back in the proxy's endpoints.
    fake.apply(slice([true, true]));
    eventually("the endpoint back", async || endpoints(&proxy, LLM_80).await == Some(both.clone())).await;
    calls(&app, "llm.models", 10).await;
    proxy.drain(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_weights_move_traffic_blue_to_green_without_a_failed_request() {
    init_logging();
    let (port, pods) = pods(&["blue", "green", "green-2"]).await;
    let (blue, green) = (&pods[0], &pods[1]);
    let fake = FakeApi::start(100).await;
    for name in ["llm", "llm-blue", "llm-green"] {
        fake.apply(service("models", name, 80, None));
    }
    fake.apply(endpoint_slice("models", "blue-a", "llm-blue", port, &[(&blue.ip(), true)]));
    fake.apply(endpoint_slice("models", "green-a", "llm-green", port, &[(&green.ip(), true)]));
    let route =
        |b: i64, g: i64| split_route("models", "llm-split", "llm", &[("llm-blue", 80, b), ("llm-green", 80, g)]);
    fake.apply(route(100, 0));
    let control = start_control(&fake, ANY_PORT).await;
    let proxy = start_proxy(control.listen()).await;
    assert_eq!(weights(&proxy, LLM).await, owned(&[(BLUE_80, 100), (GREEN_80, 0)]));
    assert_eq!(endpoints(&proxy, BLUE_80).await.unwrap(), [blue.addr.to_string()]);
    assert_eq!(endpoints(&proxy, GREEN_80).await.unwrap(), [green.addr.to_string()]);

    let load = Load::start(&proxy, "llm.models");
    load.passed(&load.mark(), 50).await;
    assert_eq!(green.hits(), 0, "green got traffic at 100/0");

    // 90/10: the canary gets some, blue keeps most.
    fake.apply(route(90, 10));
    eventually("90/10 in the proxy", async || weights(&proxy, LLM).await == owned(&[(BLUE_80, 90), (GREEN_80, 10)]))
        .await;
    let mark = load.mark();
    load.passed(&mark, 1).await; // requests still on 100/0 are over
    let (blue_before, green_before) = (blue.hits(), green.hits());
    eventually("10 requests on the canary", async || green.hits() >= green_before + 10).await;
    let (to_blue, to_green) = (blue.hits() - blue_before, green.hits() - green_before);
    assert!(to_blue > to_green, "at 90/10 blue got {to_blue} requests and green {to_green}");

    // 0/100: everything on green.
    fake.apply(route(0, 100));
    eventually("0/100 in the proxy", async || weights(&proxy, LLM).await == owned(&[(BLUE_80, 0), (GREEN_80, 100)]))
        .await;
    let mark = load.mark();
    load.passed(&mark, 1).await;
    let blue_after = blue.hits();
    load.passed(&mark, 50).await;
    assert_eq!(blue.hits(), blue_after, "blue got traffic at 0/100");
    let app = app(&proxy, true);
    assert_eq!(calls(&app, "llm.models.svc.cluster.local", 20).await, BTreeMap::from([("green".to_string(), 20)]));

    // The green pod is replaced: the proxy, subscribed to llm only, follows its backend Service.
    let green2 = &pods[2];
    fake.apply(endpoint_slice("models", "green-a", "llm-green", port, &[(&green2.ip(), true)]));
    eventually("the new green endpoint in the proxy", async || {
        endpoints(&proxy, GREEN_80).await == Some(vec![green2.addr.to_string()])
    })
    .await;
    assert_eq!(calls(&app, "llm.models", 20).await, BTreeMap::from([("green-2".to_string(), 20)]));

    let (sent, failures) = load.stop().await;
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());
    assert!(sent >= 200, "the load barely ran ({sent} requests)");
    proxy.drain(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_service_restart_does_not_interrupt_traffic() {
    init_logging();
    let (port, pods) = pods(&["llm-0", "llm-1"]).await;
    let fake = FakeApi::start(100).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(endpoint_slice("models", "llm-abc", "llm", port, &[(&pods[0].ip(), true)]));
    let control = start_control(&fake, ANY_PORT).await;
    let addr = control.listen();
    let proxy = start_proxy(addr).await;
    let load = Load::start(&proxy, "llm.models");
    load.passed(&load.mark(), 10).await;

    // The control service goes away: the proxy says so, serves on with what it has, and tries
    // to reconnect (at least one attempt is refused before the control service is back).
    stop_control(control).await;
    let reconnects = async || {
        let (_, m) = support::get(proxy.admin, "/metrics").await;
        metric(&m, "vane_control_reconnects_total ").unwrap_or(0.0)
    };
    eventually("a refused reconnect", async || reconnects().await >= 2.0).await;
    let (code, body) = support::get(proxy.admin, "/ready").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("control: disconnected from {addr}")), "{body}");
    let (_, m) = support::get(proxy.admin, "/metrics").await;
    assert_eq!(metric(&m, "vane_control_connected "), Some(0.0), "{m}");

    // A change while it is down; traffic goes on to the old endpoint meanwhile.
    fake.apply(endpoint_slice("models", "llm-abc", "llm", port, &[(&pods[1].ip(), true)]));
    load.passed(&load.mark(), 20).await;
    assert_eq!(pods[1].hits(), 0);

    // Back on the same address: the new snapshot brings the change.
    let control = start_control(&fake, addr).await;
    eventually("the change made while the control service was down", async || {
        endpoints(&proxy, LLM_80).await == Some(vec![pods[1].addr.to_string()])
    })
    .await;
    let app = app(&proxy, false);
    assert_eq!(calls(&app, "llm.models", 20).await, BTreeMap::from([("llm-1".to_string(), 20)]));
    load.passed(&load.mark(), 10).await;
    let (sent, failures) = load.stop().await;
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());

    let (code, body) = support::get(proxy.admin, "/ready").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("control: connected to {addr}")), "{body}");
    let (_, m) = support::get(proxy.admin, "/metrics").await;
    assert_eq!(metric(&m, "vane_control_connected "), Some(1.0), "{m}");
    assert!(metric(&m, "vane_control_reconnects_total ").unwrap() >= 1.0, "{m}");
    let (_, cm) = control.admin("/metrics").await;
    assert_eq!(metric(&cm, "vane_control_subscribers "), Some(1.0), "{cm}");
    proxy.drain(Duration::from_millis(200)).await;
}
