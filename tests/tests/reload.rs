//! Config reloads: swapped whole with no failed request; invalid files refused, old config kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use vane_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_fail_nothing_and_bad_configs_are_refused() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let cfg = |b: u32, g: u32| split_config(&[("blue", &[blue.addr], b), ("green", &[green.addr], g)], "");
    let proxy = Proxy::start(&cfg(100, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let client = if i % 2 == 0 { h1_client(proxy.outbound) } else { h2_client(proxy.outbound) };
        let (stop, failures, done) = (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&done));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = "{\"model\":\"m\"}";
                match send(&client, "POST", "svc", "/v1/completions", &[], body).await {
                    Ok(r) if r.status == 200 => {}
                    other => {
                        eprintln!("failed during reload: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let client = h1_client(proxy.outbound);
    assert!(
        wait_until(Duration::from_secs(5), || done.load(Ordering::Relaxed) >= 20).await,
        "no load before the reload"
    );
    assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().served_by(), "blue");

    proxy.write_config(&cfg(90, 10));
    proxy.wait_version(2);
    assert!(wait_until(Duration::from_secs(5), || green.hits() > 0).await, "canary got nothing at 90/10");

    // An invalid file is refused; the 90/10 config keeps serving.
    proxy.write_config("backends: [{ name: blue, endpoints: [not-an-address] }]\n");
    let reported =
        || metric(&proxy.metrics(), "vane_config_reloads_total", &["result=\"error\""]).unwrap_or(0.0) >= 1.0;
    assert!(wait_until(Duration::from_secs(10), reported).await, "invalid config never reported");
    assert_eq!(proxy.version(), 2);
    assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().status, 200);

    proxy.write_config(&cfg(0, 100));
    proxy.wait_version(3);
    for _ in 0..50 {
        assert_eq!(get(&client, "svc", "/", &[]).await.unwrap().served_by(), "green");
    }
    // The load keeps going past the last reload before it stops.
    let after = done.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || done.load(Ordering::Relaxed) > (after + 20).max(101)).await,
        "the load generator stalled"
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 100, "load generator barely ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed across reloads");
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_config_reloads_total", &["result=\"ok\""]), Some(2.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_at_once() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::try_start_with(&split_config(&[("a", &[a.addr], 1)], ""), "1h").unwrap();
    proxy.write_config(&split_config(&[("b", &[b.addr], 1)], ""));
    // Watched for a while (a 50 ms poll, as in the other tests, would have reloaded within it).
    let reloaded = wait_until(Duration::from_millis(300), || proxy.version() != 1).await;
    assert!(!reloaded, "reloaded without a signal (poll interval is 1h)");
    proxy.signal("HUP");
    proxy.wait_version(2);
    assert_eq!(get(&h1_client(proxy.outbound), "svc", "/", &[]).await.unwrap().served_by(), "b");
}

#[test]
fn invalid_config_at_start_exits_78_and_check_config_reports_fields() {
    let bad = "services: [{ name: s, routes: [{ name: r, backends: [{ backend: ghost }] }] }]\n";
    let err = Proxy::try_start(bad).err().expect("proxy must refuse an invalid config");
    assert!(err.contains("78"), "{err}");
    let dir = std::env::temp_dir().join(format!("vane-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = std::process::Command::new(proxy_bin()).arg("check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("services[0].routes[0].backends[0].backend: no backend named \"ghost\""), "{stderr}");
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vane.yaml");
    let out = std::process::Command::new(proxy_bin()).arg("check-config").arg(good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}
