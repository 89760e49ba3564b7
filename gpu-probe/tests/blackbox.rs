//! The probe against a fake model server over real sockets: in-process through the library's
//! `Probe::run`, and as the built binary configured through its environment variables.

mod support;

use http::StatusCode;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use support::{FakeServer, Mode, PageFn, eventually, fixture, get, load, sample, watch};
use tokio::sync::oneshot;
use vane_gpu_probe::gpu::GpuConfig;
use vane_gpu_probe::{Config, Probe, ServerChoice};

const WAIT: Duration = Duration::from_secs(5);

/// How `/load` says there is no GPU: no driver, or (built without the `gpu` feature) no support.
const NO_GPU: &str = if cfg!(feature = "gpu") { "no GPU driver found" } else { "this build has no GPU support" };

/// A GPU configuration that finds no driver on any machine: NVML pointed at a library that is
/// not there, CUDA not asked. It exercises the no-GPU path with the `gpu` feature on.
fn no_driver() -> GpuConfig {
    GpuConfig { nvml_lib: Some("/nonexistent/libnvidia-ml.so.1".into()), cuda: false, ..GpuConfig::default() }
}

#[tokio::test]
async fn serves_fresh_load_then_marks_it_stale_when_the_server_stops_answering() {
    let fake = FakeServer::start(Mode::Serve(fixture("vllm.txt"))).await;
    let config = Config {
        metrics_url: fake.metrics_url(),
        server: ServerChoice::Auto,
        interval: Duration::from_millis(10),
        scrape_timeout: Duration::from_millis(100),
        stale_after: Duration::from_millis(300),
        decode_window: Duration::from_millis(250),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: no_driver(),
    };
    let probe = Probe::bind(config).await.expect("bind");
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));

    // Ready after the first good scrape.
    eventually(WAIT, "/ready", || async { (get(addr, "/ready").await.0 == StatusCode::OK).then_some(()) }).await;
    assert_eq!(get(addr, "/live").await.0, StatusCode::OK);

    // /load: the vLLM page's figures, fresh, and a clear word on the missing GPU.
    let v = load(addr).await;
    assert_eq!(v["server"], "vllm", "{v}");
    assert_eq!(v["queue_depth"], 5);
    assert_eq!(v["running"], 21);
    assert_eq!(v["kv_cache_usage"], 0.4215);
    assert_eq!(v["stale"], false);
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["gpu"], serde_json::Value::Null);
    let gpu_status = v["gpu_status"].as_str().expect("a GPU status message");
    assert!(gpu_status.starts_with(NO_GPU), "{gpu_status}");
    assert!(v["age_ms"].as_u64().expect("age") < 250, "{v}");
    assert!(v["updated_unix_ms"].as_u64().expect("timestamp") > 1_600_000_000_000);

    // /orca: the same load in the header and the body. (The fixture's token counter never
    // moves while 21 requests run, so once a window has passed the decode rate reads 0.)
    let (status, headers, body) = get(addr, "/orca").await;
    assert_eq!(status, StatusCode::OK);
    let expected = "TEXT named_metrics.queue_depth=5, named_metrics.running=21, named_metrics.kv_cache_usage=0.4215";
    let header = headers["endpoint-load-metrics"].to_str().unwrap();
    assert!(header == expected || header == format!("{expected}, named_metrics.decode_tokens_per_s=0"), "{header}");
    assert_eq!(body.trim_end(), header);

    // /metrics: the documented names, readable by a Prometheus parser.
    let (status, headers, page) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(sample(&page, "vane_probe_queue_depth", None), Some(5.0), "{page}");
    assert_eq!(sample(&page, "vane_probe_running_requests", None), Some(21.0));
    assert_eq!(sample(&page, "vane_probe_kv_cache_usage_ratio", None), Some(0.4215));
    assert!(sample(&page, "vane_probe_scrape_duration_seconds_count", None).unwrap() >= 1.0);
    assert!(sample(&page, "vane_probe_snapshot_age_seconds", None).unwrap() < 0.25);
    assert_eq!(sample(&page, "vane_probe_stale", None), Some(0.0));
    // Per-GPU series appear only with a GPU; errors only once there has been one.
    assert!(!page.contains("vane_probe_gpu_utilization_ratio{"), "{page}");

    // The scrapes reuse a kept-alive connection. (Usually exactly one; on a loaded machine a
    // scrape that times out, or the pool racing a connect against a returning connection,
    // can add a few.)
    let polls = eventually(WAIT, "50 scrapes", || async { (fake.hits() >= 50).then(|| fake.hits()) }).await;
    let conns = fake.connections();
    assert!(conns * 10 <= polls, "{polls} scrapes over {conns} connections");

    // Auto-detection follows the page: the server now speaks SGLang.
    fake.set(Mode::Serve(fixture("sglang.txt")));
    eventually(WAIT, "SGLang figures", || async {
        let v = load(addr).await;
        (v["server"] == "sglang" && v["queue_depth"] == 17).then_some(())
    })
    .await;

    // The server stops answering: the last figures stay, turn stale, and /orca stops reporting.
    fake.set(Mode::Hang);
    let v = eventually(WAIT, "stale figures", || async {
        let v = load(addr).await;
        (v["stale"] == true).then_some(v)
    })
    .await;
    assert_eq!(v["server"], "sglang", "{v}");
    assert_eq!(v["queue_depth"], 17, "the last figures are kept");
    assert_eq!(v["running"], 46);
    assert!(v["age_ms"].as_u64().unwrap() >= 300, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no answer within"), "{v}");
    let (status, headers, _) = get(addr, "/orca").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get("endpoint-load-metrics").is_none());
    let (_, _, page) = get(addr, "/metrics").await;
    assert!(sample(&page, "vane_probe_scrape_errors_total", Some(("reason", "timeout"))).unwrap() >= 1.0, "{page}");
    assert_eq!(sample(&page, "vane_probe_stale", None), Some(1.0));
    assert!(sample(&page, "vane_probe_snapshot_age_seconds", None).unwrap() > 0.3);
    assert_eq!(get(addr, "/ready").await.0, StatusCode::OK, "readiness stays once reached");

    // A malformed page counts as a failure too.
    fake.set(Mode::Serve(fixture("malformed_label.txt")));
    eventually(WAIT, "a malformed-page error", || async {
        let v = load(addr).await;
        v["error"].as_str().is_some_and(|e| e.contains("malformed metrics page: line 3")).then_some(())
    })
    .await;
    fake.set(Mode::Status(StatusCode::INTERNAL_SERVER_ERROR));
    eventually(WAIT, "a status error", || async {
        let v = load(addr).await;
        v["error"].as_str().is_some_and(|e| e.contains("500")).then_some(())
    })
    .await;
    let (_, _, page) = get(addr, "/metrics").await;
    assert!(sample(&page, "vane_probe_scrape_errors_total", Some(("reason", "malformed"))).unwrap() >= 1.0);
    assert!(sample(&page, "vane_probe_scrape_errors_total", Some(("reason", "status"))).unwrap() >= 1.0);

    // It recovers as soon as the server answers again.
    fake.set(Mode::Serve(fixture("tgi.txt")));
    let v = eventually(WAIT, "fresh figures again", || async {
        let v = load(addr).await;
        (v["stale"] == false && v["server"] == "tgi").then_some(v)
    })
    .await;
    assert_eq!(v["queue_depth"], 4);
    assert_eq!(v["kv_cache_usage"], serde_json::Value::Null, "TGI reports no KV-cache use");
    assert_eq!(v["error"], serde_json::Value::Null);
    let (_, headers, _) = get(addr, "/orca").await;
    assert_eq!(headers["endpoint-load-metrics"], "TEXT named_metrics.queue_depth=4, named_metrics.running=32");

    // The server goes away entirely: connection errors, and the figures go stale again.
    fake.stop().await;
    let v = eventually(WAIT, "stale after the server is gone", || async {
        let v = load(addr).await;
        (v["stale"] == true).then_some(v)
    })
    .await;
    assert_eq!(v["queue_depth"], 4);
    eventually(WAIT, "a refused connection", || async {
        let v = load(addr).await;
        v["error"].as_str().is_some_and(|e| e.contains("Connection refused")).then_some(())
    })
    .await;
    let (_, _, page) = get(addr, "/metrics").await;
    assert!(sample(&page, "vane_probe_scrape_errors_total", Some(("reason", "connect"))).unwrap() >= 1.0, "{page}");

    // Shutdown is prompt.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), running).await.expect("stops in time").unwrap().unwrap();
}

/// A vLLM engine whose token counter runs at `rate` tokens/s from `since`, and whose
/// time-per-output-token histogram (when `histogram` is set) grows by `token_time` seconds per
/// token.
struct Engine {
    base: f64,
    rate: f64,
    since: Instant,
    running: u32,
    histogram: Option<f64>,
}

impl Engine {
    fn tokens(&self) -> f64 {
        self.base + self.rate * self.since.elapsed().as_secs_f64()
    }

    /// Changes speed from now on, keeping the tokens counted so far (unless `restart`).
    fn set(&mut self, rate: f64, running: u32, restart: bool) {
        self.base = if restart { 0.0 } else { self.tokens() };
        self.since = Instant::now();
        self.rate = rate;
        self.running = running;
    }

    fn page(&self) -> String {
        let tokens = self.tokens().floor();
        let mut page = format!(
            "# TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} {running}.0\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} 0.0\n\
             # TYPE vllm:kv_cache_usage_perc gauge\n\
             vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.3\n\
             # TYPE vllm:generation_tokens_total counter\n\
             vllm:generation_tokens_total{{engine=\"0\",model_name=\"m\"}} {tokens:.1}\n",
            running = self.running,
        );
        if let Some(t) = self.histogram {
            page.push_str(&format!(
                "# TYPE vllm:time_per_output_token_seconds histogram\n\
                 vllm:time_per_output_token_seconds_sum{{engine=\"0\",model_name=\"m\"}} {}\n\
                 vllm:time_per_output_token_seconds_count{{engine=\"0\",model_name=\"m\"}} {tokens:.1}\n",
                tokens * t
            ));
        }
        page
    }
}

#[tokio::test]
async fn load_reports_the_decode_speed_from_the_server_s_token_counter() {
    // 2000 tokens/s over 20 running requests: 10 ms per token for each stream.
    let engine = Arc::new(Mutex::new(Engine {
        base: 1_000_000.0,
        rate: 2000.0,
        since: Instant::now(),
        running: 20,
        histogram: None,
    }));
    let e = engine.clone();
    let fake = FakeServer::start(Mode::Dynamic(PageFn(Arc::new(move || e.lock().unwrap().page())))).await;
    let config = Config {
        metrics_url: fake.metrics_url(),
        interval: Duration::from_millis(10),
        stale_after: Duration::from_secs(5),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: no_driver(),
        ..Config::default()
    };
    let probe = Probe::bind(config).await.expect("bind");
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    let near =
        |v: &serde_json::Value, key: &str, lo: f64, hi: f64| v[key].as_f64().is_some_and(|x| (lo..=hi).contains(&x));

    // From the counter: the rate, and running ÷ rate per stream. (Loose bounds: the counter
    // follows the wall clock and a loaded test machine delays scrapes.)
    let v = eventually(WAIT, "a decode rate from the counter", || async {
        let v = load(addr).await;
        (near(&v, "decode_tokens_per_s", 1700.0, 2300.0) && near(&v, "token_time_ms", 8.5, 11.8)).then_some(v)
    })
    .await;
    assert!(v["decode_age_ms"].as_u64().unwrap() < 1000, "{v}");
    let (_, headers, _) = get(addr, "/orca").await;
    let report = vane_route::orca::parse(headers["endpoint-load-metrics"].as_bytes()).expect("an ORCA report");
    assert!(report.decode_rate.is_some_and(|r| r > 1000.0), "{report:?}");
    assert!(report.token_time.is_some_and(|t| t > Duration::from_millis(5)), "{report:?}");
    let (_, _, page) = get(addr, "/metrics").await;
    let tps = sample(&page, "vane_probe_decode_tokens_per_second", None).unwrap();
    assert!((1000.0..3000.0).contains(&tps), "{page}");
    let tt = sample(&page, "vane_probe_token_time_seconds", None).unwrap();
    assert!((0.005..0.02).contains(&tt), "{page}");
    // What the proxy reads back from the same document.
    let (_, _, body) = get(addr, "/load").await;
    let (report, _) = vane_runtime::load_doc::parse_report(body.as_bytes()).expect("fresh figures");
    assert!(report.decode_rate.is_some() && report.token_time.is_some(), "{report:?}");

    // The server exports its time-per-output-token histogram: 12 ms a token, which wins.
    engine.lock().unwrap().histogram = Some(0.012);
    eventually(WAIT, "the histogram's token time", || async {
        let v = load(addr).await;
        near(&v, "token_time_ms", 11.99, 12.01).then_some(())
    })
    .await;

    // The GPU slows to half speed: both figures follow within a window or so.
    engine.lock().unwrap().histogram = None;
    engine.lock().unwrap().set(1000.0, 20, false);
    eventually(WAIT, "half the speed", || async {
        let v = load(addr).await;
        (near(&v, "decode_tokens_per_s", 850.0, 1150.0) && near(&v, "token_time_ms", 17.0, 23.5)).then_some(())
    })
    .await;

    // The server restarts: its counter starts again from 0. The rate never goes negative.
    engine.lock().unwrap().set(1000.0, 20, true);
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline {
        let v = load(addr).await;
        assert!(v["decode_tokens_per_s"].as_f64().is_some_and(|r| r >= 0.0), "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(WAIT, "the speed after the restart", || async {
        let v = load(addr).await;
        near(&v, "decode_tokens_per_s", 850.0, 1150.0).then_some(())
    })
    .await;

    // Idle: nothing runs, nothing is generated. The last speed stays and ages, while the rest
    // of the figures are fresh.
    engine.lock().unwrap().set(0.0, 0, false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = load(addr).await;
    let v = eventually(WAIT, "an aging decode speed", || async {
        let v = load(addr).await;
        (v["decode_age_ms"].as_u64().unwrap() > 600).then_some(v)
    })
    .await;
    assert_eq!(v["decode_tokens_per_s"], before["decode_tokens_per_s"], "{v}");
    assert_eq!(v["token_time_ms"], before["token_time_ms"], "{v}");
    assert!(near(&v, "decode_tokens_per_s", 850.0, 1150.0), "the speed while busy is kept: {v}");
    assert_eq!(v["running"], 0);
    assert!(v["age_ms"].as_u64().unwrap() < 250, "{v}");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    fake.stop().await;
}

#[tokio::test]
async fn load_watch_streams_a_line_per_scrape_as_it_happens() {
    let fake = FakeServer::start(Mode::Serve(fixture("vllm.txt"))).await;
    let config = Config {
        metrics_url: fake.metrics_url(),
        interval: Duration::from_millis(20),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: no_driver(),
        ..Config::default()
    };
    let probe = Probe::bind(config).await.expect("bind");
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    eventually(WAIT, "/ready", || async { (get(addr, "/ready").await.0 == StatusCode::OK).then_some(()) }).await;

    let (content_type, mut lines) = watch(addr).await;
    assert_eq!(content_type, "application/x-ndjson");
    let first = tokio::time::timeout(WAIT, lines.next()).await.expect("a first line").expect("open stream");
    assert_eq!(first["queue_depth"], 5, "{first}");
    // Each line leaves as its scrape finishes, so it is far younger than the 20 ms interval
    // (the bound is loose for a loaded test machine; a polled line would be 0-20 ms old).
    let mut ages = Vec::new();
    for _ in 0..10 {
        let v = tokio::time::timeout(WAIT, lines.next()).await.expect("a line per scrape").expect("open stream");
        ages.push(v["age_us"].as_u64().expect("age_us"));
    }
    ages.sort_unstable();
    assert!(ages[5] < 10_000, "median age {} µs: lines are not pushed at scrape time ({ages:?})", ages[5]);

    // A change on the server shows up in the stream without asking again.
    // engine 0 waits 3 and engine 1 waits 2: raising engine 0 to 7 makes the pod's queue 9.
    let line = "vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3.0";
    assert!(fixture("vllm.txt").contains(line), "the fixture line to change was not found");
    let page = fixture("vllm.txt").replace(line, &line.replace("3.0", "7.0"));
    fake.set(Mode::Serve(page));
    let changed = tokio::time::timeout(WAIT, async {
        while let Some(v) = lines.next().await {
            if v["queue_depth"] == 9 {
                return true;
            }
        }
        false
    });
    assert!(changed.await.expect("the new queue depth within 5 s"), "stream ended before the change");

    // Stopping the probe ends the stream.
    let _ = stop.send(());
    assert!(tokio::time::timeout(WAIT, async { while lines.next().await.is_some() {} }).await.is_ok());
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_fixed_server_kind_that_does_not_match_never_becomes_ready() {
    let fake = FakeServer::start(Mode::Serve(fixture("vllm.txt"))).await;
    let config = Config {
        metrics_url: fake.metrics_url(),
        server: "triton".parse().unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: GpuConfig { enabled: false, ..GpuConfig::default() },
        ..Config::default()
    };
    let probe = Probe::bind(config).await.unwrap();
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    let v = eventually(WAIT, "an error", || async {
        let v = load(addr).await;
        v["error"].is_string().then_some(v)
    })
    .await;
    assert_eq!(v["error"], "the page has none of the triton load metrics");
    assert_eq!(v["gpu_status"], "GPU reading is turned off (--no-gpu)");
    assert_eq!(get(addr, "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(addr, "/orca").await.0, StatusCode::SERVICE_UNAVAILABLE);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    fake.stop().await;
}

/// Picks a free port by binding and releasing it (the binary is told the port up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_reads_its_settings_from_the_environment() {
    let fake = FakeServer::start(Mode::Serve(fixture("triton_trtllm.txt"))).await;
    let port = free_port();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_vane-gpu-probe"))
            .env("VANE_PROBE_METRICS_URL", fake.metrics_url().to_string())
            .env("VANE_PROBE_LISTEN", format!("127.0.0.1:{port}"))
            .env("VANE_PROBE_INTERVAL", "20ms")
            .env("VANE_PROBE_STALE_AFTER", "2s")
            .env("VANE_PROBE_SERVER", "triton")
            .env("VANE_PROBE_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
            // Boolean variables take 1/0, true/false, yes/no or on/off.
            .env("VANE_PROBE_NO_GPU", "0")
            .env("VANE_PROBE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary"),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v = eventually(WAIT, "the binary's /load", || async {
        let up = tokio::net::TcpStream::connect(addr).await.is_ok();
        if !up {
            return None;
        }
        let v = load(addr).await;
        (v["stale"] == false).then_some(v)
    })
    .await;
    assert_eq!(v["server"], "triton", "{v}");
    assert_eq!(v["queue_depth"], 7);
    assert_eq!(v["running"], 30);
    assert_eq!(v["kv_cache_usage"], 0.2934);
    // Without NVML the GPU section is either null with a reason (no CUDA driver either, as on
    // CI) or filled from CUDA alone (a machine with a driver).
    if v["gpu"].is_null() {
        assert!(v["gpu_status"].as_str().unwrap().starts_with(NO_GPU), "{v}");
    } else {
        assert!(v["gpu"]["count"].as_u64().unwrap() >= 1, "{v}");
    }

    // SIGTERM stops it cleanly.
    // Through the shell's built-in `kill`, so the test needs no procps.
    let pid = child.0.id();
    let killed = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().expect("run kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait();
        (status, child)
    })
    .await
    .unwrap()
    .0
    .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    fake.stop().await;
}

#[test]
fn the_binary_refuses_a_config_that_cannot_work() {
    let out = Command::new(env!("CARGO_BIN_EXE_vane-gpu-probe"))
        .env("VANE_PROBE_METRICS_URL", "https://127.0.0.1:8000/metrics")
        .env("VANE_PROBE_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-url must be an http:// URL"), "{stderr}");
}
