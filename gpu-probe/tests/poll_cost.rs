//! What polling costs. Not part of the normal run (it takes about 30 s and reads `/proc`):
//!
//! ```text
//! cargo test --release -p vane-gpu-probe --test poll_cost -- --ignored --nocapture
//! ```
//!
//! It runs the built binary at the default 10 ms interval against a fake model server serving
//! a vLLM page, and reports the probe process's CPU time per poll (from `/proc/<pid>/stat`,
//! all threads), its share of one core, and its resident memory; then the parse cost of each
//! fixture page in-process, and the latency of `GET /load` over a kept-alive connection.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{FakeServer, Mode, eventually, fixture, load};
use vane_gpu_probe::servers::{self, ServerChoice};

const MEASURE: Duration = Duration::from_secs(10);

/// utime + stime of a process, in seconds, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok().and_then(|s| s.trim().parse::<f64>().ok()));
    ticks / hz.unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The vLLM fixture grown to eight data-parallel engines, about the size of a busy real page.
fn big_vllm_page() -> String {
    let mut out = String::new();
    for line in fixture("vllm.txt").lines() {
        out.push_str(line);
        out.push('\n');
        if line.contains("engine=\"1\"") {
            for e in 2..8 {
                out.push_str(&line.replace("engine=\"1\"", &format!("engine=\"{e}\"")));
                out.push('\n');
            }
        }
    }
    out
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure_binary(label: &str, page: String) {
    let size = page.len();
    let fake = FakeServer::start(Mode::Serve(page)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_vane-gpu-probe"))
            .args(["--metrics-url", &fake.metrics_url().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--interval", "10ms", "--no-gpu", "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    let pid = child.0.id();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eventually(Duration::from_secs(5), "the probe", || async {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return None;
        }
        (load(addr).await["stale"] == false).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (cpu0, hits0, t0) = (cpu_seconds(pid), fake.hits(), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let (cpu1, hits1, wall) = (cpu_seconds(pid), fake.hits(), t0.elapsed());
    let polls = (hits1 - hits0) as f64;
    let cpu = cpu1 - cpu0;
    let age = load(addr).await["age_ms"].as_u64().unwrap_or(u64::MAX);
    println!(
        "| {label} | {:.0} KiB | {:.0} | {:.1} µs | {:.2} % | {} KiB | {age} ms |",
        size as f64 / 1024.0,
        polls / wall.as_secs_f64(),
        cpu / polls * 1e6,
        cpu / wall.as_secs_f64() * 100.0,
        rss_kib(pid),
    );
    drop(child);
    fake.stop().await;
}

#[tokio::test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn poll_cost() {
    println!("\nprobe process, 10 ms interval, {MEASURE:?} measured (fake server in the test process)");
    println!("| page | size | polls/s | CPU per poll | CPU share of one core | RSS | age of /load |");
    println!("|---|---|---|---|---|---|---|");
    measure_binary("vLLM, 2 engines (fixture)", fixture("vllm.txt")).await;
    measure_binary("vLLM, 8 engines", big_vllm_page()).await;
    measure_binary("SGLang (fixture)", fixture("sglang.txt")).await;

    println!("\nparse + extract only, in-process");
    println!("| page | size | per page | throughput |");
    println!("|---|---|---|---|");
    let mut pages: Vec<(String, String)> = ["vllm.txt", "sglang.txt", "triton_trtllm.txt", "tgi.txt"]
        .iter()
        .map(|f| (f.to_string(), fixture(f)))
        .collect();
    pages.push(("vLLM, 8 engines".into(), big_vllm_page()));
    for (name, page) in &pages {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(servers::read_page(std::hint::black_box(page), ServerChoice::Auto).unwrap());
        }
        let per = t.elapsed() / n;
        println!(
            "| {name} | {:.0} KiB | {:.1} µs | {:.0} MB/s |",
            page.len() as f64 / 1024.0,
            per.as_secs_f64() * 1e6,
            page.len() as f64 / per.as_secs_f64() / 1e6
        );
    }

    // GET /load over one kept-alive connection, against an in-process probe.
    let fake = FakeServer::start(Mode::Serve(fixture("vllm.txt"))).await;
    let config = vane_gpu_probe::Config {
        metrics_url: fake.metrics_url(),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: vane_gpu_probe::gpu::GpuConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let probe = vane_gpu_probe::Probe::bind(config).await.unwrap();
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    eventually(Duration::from_secs(5), "fresh load", || async { (load(addr).await["stale"] == false).then_some(()) })
        .await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let n = 5000;
    let t = Instant::now();
    for _ in 0..n {
        let req = Request::get("/load").header("host", "probe").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        std::hint::black_box(resp.into_body().collect().await.unwrap().to_bytes());
    }
    println!(
        "\nGET /load, one kept-alive connection, probe and client on one thread: {:.1} µs per request\n",
        t.elapsed().as_secs_f64() / f64::from(n) * 1e6
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    fake.stop().await;
}
