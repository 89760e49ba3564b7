//! The GPU path. Without a driver (CI) the reader must fail with a clear message and no panic;
//! with one, `#[ignore = "needs GPU"]` checks real readings.

mod support;

use std::time::Duration;
use support::{FakeServer, Mode, eventually, fixture, load};
use tokio::sync::oneshot;
use vane_gpu_probe::gpu::{GpuConfig, GpuReader, GpuUnavailable};
use vane_gpu_probe::{Config, Probe};

/// The real default configuration on whatever machine runs the tests: on one without a
/// driver it must say so clearly; on one with a driver it must read. (Without the `gpu`
/// feature the reader says it is not built; the next test checks that.)
#[test]
#[cfg(feature = "gpu")]
fn the_default_gpu_config_reads_or_says_clearly_why_not() {
    match GpuReader::open(&GpuConfig::default()) {
        Err(e @ GpuUnavailable::NoDriver { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("no GPU driver found, serving model-server figures only"), "{msg}");
            assert!(msg.contains("libnvidia-ml.so"), "names the NVML library: {msg}");
            assert!(msg.contains("libcuda.so"), "names the CUDA library: {msg}");
        }
        Err(other) => panic!("unexpected: {other}"),
        Ok(mut reader) => {
            let snap = reader.read().expect("a driver that loads can be read");
            assert!(snap.count >= 1);
        }
    }
}

#[test]
#[cfg(not(feature = "gpu"))]
fn without_the_feature_the_reader_says_so() {
    assert_eq!(GpuReader::open(&GpuConfig::default()).unwrap_err(), GpuUnavailable::NotBuilt);
}

#[test]
#[ignore = "needs GPU"]
fn reads_a_real_gpu() {
    let cfg = GpuConfig { cuda_mem_info: true, ..GpuConfig::default() };
    let mut reader = GpuReader::open(&cfg).expect("a GPU and its driver");
    assert!(reader.notes().is_empty(), "both NVML and CUDA load: {:?}", reader.notes());
    let snap = reader.read().expect("read");
    println!("{}", serde_json::to_string_pretty(&snap).unwrap());
    assert!(snap.count >= 1);
    let util = snap.utilization.expect("NVML utilisation");
    assert!((0.0..=1.0).contains(&util));
    let total = snap.memory_total_bytes.expect("memory total");
    assert!(total > 1 << 30);
    assert!(snap.memory_used_bytes.expect("memory used") <= total);
    for d in &snap.devices {
        assert!(d.uuid.as_deref().is_some_and(|u| u.starts_with("GPU-")), "{d:?}");
        assert!(d.cuda_ordinal.is_some(), "NVML and CUDA matched by UUID: {d:?}");
        let (free, cuda_total) = (d.cuda_free_bytes.expect("free"), d.cuda_total_bytes.expect("total"));
        assert!(free <= cuda_total);
    }
}

#[tokio::test]
#[ignore = "needs GPU"]
async fn serves_real_gpu_figures() {
    let fake = FakeServer::start(Mode::Serve(fixture("vllm.txt"))).await;
    let config = Config {
        metrics_url: fake.metrics_url(),
        listen: "127.0.0.1:0".parse().unwrap(),
        gpu: GpuConfig { interval: Duration::from_millis(100), ..GpuConfig::default() },
        ..Config::default()
    };
    let probe = Probe::bind(config).await.unwrap();
    let addr = probe.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(probe.run(async move {
        let _ = stopped.await;
    }));
    let v = eventually(Duration::from_secs(10), "GPU figures in /load", || async {
        let v = load(addr).await;
        v["gpu"].is_object().then_some(v)
    })
    .await;
    println!("{v:#}");
    assert!(v["gpu"]["count"].as_u64().unwrap() >= 1);
    assert!(v["gpu"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["gpu_status"], serde_json::Value::Null);
    let (_, headers, _) = support::get(addr, "/orca").await;
    assert!(headers["endpoint-load-metrics"].to_str().unwrap().contains("named_metrics.gpu_utilization="));
    let (_, _, page) = support::get(addr, "/metrics").await;
    assert!(support::sample(&page, "vane_probe_gpu_memory_total_bytes", Some(("gpu", "0"))).unwrap() > 0.0);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    fake.stop().await;
}
