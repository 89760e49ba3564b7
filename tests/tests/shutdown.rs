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
    assert!(wait_until(Duration::from_secs(5), || slow.hits() == 1).await, "the request never reached the backend");
    proxy.signal("TERM");
    // Draining: not ready, and no new connections (the backend still holds the request for 700 ms).
    let not_ready = || admin_get(proxy.admin, "/ready").is_ok_and(|r| r.0 == 503);
    assert!(wait_until(Duration::from_millis(500), not_ready).await, "still ready after SIGTERM");
    let closed = || std::net::TcpStream::connect(proxy.outbound).is_err();
    assert!(wait_until(Duration::from_millis(500), closed).await, "still accepting after SIGTERM");
    assert_eq!(slow.hits(), 1);
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
    assert!(wait_until(Duration::from_secs(5), || stuck.hits() == 1).await, "the request never reached the backend");
    proxy.signal("TERM");
    let draining = || admin_get(proxy.admin, "/ready").is_ok_and(|r| r.0 == 503);
    assert!(wait_until(Duration::from_secs(2), draining).await, "SIGTERM did not start the drain");
    assert_eq!(proxy.wait_exit(Duration::from_millis(300)), None, "exited before the drain grace period");
    proxy.signal("INT");
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(130));
}
