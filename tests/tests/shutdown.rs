//! SIGTERM drains in-flight requests, then exits; a second signal exits at once.

use std::time::Duration;
use vane_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(700));
    let mut proxy = Proxy::start(&split_config(&[("b", &[slow.addr], 1)], ""));
    let client = h1_client(proxy.outbound);
    let in_flight = tokio::spawn(async move { get(&client, "svc", "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Draining: not ready, and no new connections.
    assert_eq!(admin_get(proxy.admin, "/ready").map(|r| r.0).unwrap_or(0), 503);
    assert!(std::net::TcpStream::connect(proxy.outbound).is_err(), "still accepting after SIGTERM");
    let r = in_flight.await.unwrap().expect("in-flight request was cut");
    assert_eq!(r.status, 200);
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let stuck = Backend::start("stuck").await;
    stuck.set_delay(Duration::from_secs(30));
    let cfg = format!("proxy: {{ drain_grace: 60s }}\n{}", split_config(&[("b", &[stuck.addr], 1)], ""));
    let mut proxy = Proxy::start(&cfg);
    let client = h1_client(proxy.outbound);
    let _in_flight = tokio::spawn(async move { get(&client, "svc", "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.wait_exit(Duration::from_millis(100)), None, "exited before the drain grace period");
    proxy.signal("INT");
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(130));
}
