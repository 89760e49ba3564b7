//! Propagation benchmark: from a change entering the fake API server's watch streams to every
//! subscriber having the discovery update, with the real `vane-control` binary in its own process
//! (so that its RSS and CPU are its own), subscribers as lightweight h2c clients in this process.
//!
//! ```sh
//! cargo bench -p vane-control --bench propagation            # full matrix, prints a markdown table
//! VANE_BENCH_QUICK=1 cargo bench -p vane-control --bench propagation
//! ```
//!
//! Each round changes the EndpointSlice of one "hot" Service that every subscriber subscribes
//! to (the worst case: every change goes to every subscriber), waits until all subscribers have
//! the update, and records each subscriber's latency. Rounds are spaced so that they do not merge.

#[path = "../tests/support/mod.rs"]
mod support;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake_api::{FakeApi, service};
use vane_route::discovery::MAX_LINE_BYTES;

struct Scenario {
    services: usize,
    endpoints_per_service: usize,
    subscribers: usize,
    rounds: usize,
}

struct Row {
    scenario: Scenario,
    p50: f64,
    p99: f64,
    max: f64,
    rss_mib: f64,
    hwm_mib: f64,
    cpu_per_change_ms: f64,
    idle_cpu_pct: f64,
    sync_ms: f64,
}

/// What the subscribers report.
#[derive(Default)]
struct Arrivals {
    times: Mutex<Vec<Instant>>,
    snapshots: AtomicUsize,
}

fn main() {
    let quick = std::env::var_os("VANE_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let r = |n: usize| if quick { (n / 5).max(5) } else { n };
    let matrix = [
        Scenario { services: 100, endpoints_per_service: 50, subscribers: 1, rounds: r(200) },
        Scenario { services: 100, endpoints_per_service: 50, subscribers: 100, rounds: r(100) },
        Scenario { services: 100, endpoints_per_service: 50, subscribers: 1000, rounds: r(50) },
        Scenario { services: 200, endpoints_per_service: 50, subscribers: 1000, rounds: r(50) },
    ];
    let mut rows = Vec::new();
    for scenario in matrix {
        eprintln!(
            "running: {} services x {} endpoints, {} subscribers, {} changes",
            scenario.services, scenario.endpoints_per_service, scenario.subscribers, scenario.rounds
        );
        rows.push(rt.block_on(run(scenario)));
    }
    println!();
    println!(
        "| services × endpoints | endpoints | subscribers | changes | p50 ms | p99 ms | max ms | first sync ms | control RSS MiB (peak) | control CPU ms per change | control CPU idle |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let s = &row.scenario;
        println!(
            "| {} × {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} ({:.1}) | {:.2} | {:.1} % |",
            s.services,
            s.endpoints_per_service,
            s.services * s.endpoints_per_service,
            s.subscribers,
            s.rounds,
            row.p50,
            row.p99,
            row.max,
            row.sync_ms,
            row.rss_mib,
            row.hwm_mib,
            row.cpu_per_change_ms,
            row.idle_cpu_pct,
        );
    }
}

async fn run(scenario: Scenario) -> Row {
    let fake = FakeApi::start(500).await;
    for s in 0..scenario.services {
        let name = format!("svc-{s}");
        fake.apply(service("bench", &name, 80, None));
        fake.apply(endpoint_slice(
            "bench",
            &format!("{name}-a"),
            &name,
            8000,
            &endpoints(s, scenario.endpoints_per_service, None),
        ));
    }
    let dir = std::env::temp_dir().join(format!("vane-control-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             users:\n- name: nobody\n  user: {{}}\ncurrent-context: fake\n",
            fake.addr
        ),
    )
    .unwrap();
    let listen = free_port();
    let admin = free_port();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vane-control"))
        .env("KUBECONFIG", &kubeconfig)
        .env("VANE_CONTROL_LOG", "warn")
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .spawn()
        .expect("vane-control binary");
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    loop {
        if tokio::net::TcpStream::connect(admin_addr).await.is_ok() && support::get(admin_addr, "/ready").await.0 == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "vane-control never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sync_ms = started.elapsed().as_secs_f64() * 1e3;

    // Subscribers: each watches the hot service and one other.
    let arrivals = Arc::new(Arrivals::default());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut opened = 0;
    while opened < scenario.subscribers {
        let batch = (scenario.subscribers - opened).min(50);
        let mut joins = Vec::new();
        for i in opened..opened + batch {
            let query =
                format!("services=svc-0.bench.svc.cluster.local,svc-{}.bench.svc.cluster.local", i % scenario.services);
            joins.push(tokio::spawn(subscribe(addr, query, arrivals.clone())));
        }
        for j in joins {
            j.await.unwrap();
        }
        opened += batch;
    }
    wait_for(|| arrivals.snapshots.load(Ordering::SeqCst) >= scenario.subscribers, "snapshots").await;

    let pid = child.id();
    let cpu_start = cpu_ticks(pid);
    let rounds_started = Instant::now();
    let mut latencies = Vec::with_capacity(scenario.rounds * scenario.subscribers);
    for round in 0..scenario.rounds {
        arrivals.times.lock().unwrap().clear();
        let t0 = fake.apply(endpoint_slice(
            "bench",
            "svc-0-a",
            "svc-0",
            8000,
            &endpoints(0, scenario.endpoints_per_service, Some(round % scenario.endpoints_per_service)),
        ));
        wait_for(|| arrivals.times.lock().unwrap().len() >= scenario.subscribers, "updates").await;
        latencies.extend(arrivals.times.lock().unwrap().iter().map(|t| t.duration_since(t0).as_secs_f64() * 1e3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = rounds_started.elapsed();
    let cpu_rounds = cpu_ticks(pid) - cpu_start;
    let idle_start = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_ticks = cpu_ticks(pid) - idle_start;
    let (rss, hwm) = memory_kib(pid);
    let _ = busy;

    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let tick_ms = 1000.0 / clock_ticks_per_second();
    Row {
        p50: pct(0.50),
        p99: pct(0.99),
        max: *latencies.last().unwrap(),
        rss_mib: rss as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
        cpu_per_change_ms: cpu_rounds as f64 * tick_ms / scenario.rounds as f64,
        idle_cpu_pct: idle_ticks as f64 * tick_ms / 2000.0 * 100.0,
        sync_ms,
        scenario,
    }
}

/// Endpoint list of service `s`; in round `r` endpoint `r` is not ready, so that every round
/// changes the slice.
fn endpoints(s: usize, n: usize, not_ready: Option<usize>) -> Vec<(String, bool)> {
    (0..n).map(|e| (format!("10.{}.{}.{}", s / 250, s % 250, e + 1), Some(e) != not_ready)).collect()
}

fn endpoint_slice_owned(ns: &str, name: &str, svc: &str, port: u16, eps: &[(String, bool)]) -> serde_json::Value {
    let eps: Vec<(&str, bool)> = eps.iter().map(|(ip, r)| (ip.as_str(), *r)).collect();
    support::fake_api::endpoint_slice(ns, name, svc, port, &eps)
}

use endpoint_slice_owned as endpoint_slice;

async fn subscribe(addr: std::net::SocketAddr, query: String, arrivals: Arc<Arrivals>) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{addr}/v1/discovery?{query}")).body(Empty::<Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut lines = vane_runtime::ndjson::lines(resp.into_body(), MAX_LINE_BYTES);
    tokio::spawn(async move {
        let _send = send; // keep the connection's client half
        while let Some(Ok(line)) = lines.next_line().await {
            if line.starts_with("{\"type\":\"update\"") {
                arrivals.times.lock().unwrap().push(Instant::now());
            } else if line.starts_with("{\"type\":\"snapshot\"") {
                arrivals.snapshots.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime and stime are fields 14 and 15 of the line.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}
