//! Bad input gets its documented status and the proxy keeps serving.

use vane_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_and_serving_continues() {
    let a = Backend::start("a").await;
    let cfg = format!(
        "proxy: {{ limits: {{ max_header_bytes: 8192, max_body_bytes: 1000 }} }}\n{}",
        split_config(&[("a", &[a.addr], 1)], "")
    );
    let proxy = Proxy::start(&cfg);
    let out = proxy.outbound;

    let r = raw_exchange(out, b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");

    let big = "x".repeat(20_000);
    let r = raw_exchange(out, format!("GET / HTTP/1.1\r\nHost: svc\r\nX-Big: {big}\r\n\r\n").as_bytes()).unwrap();
    assert!(r.starts_with("HTTP/1.1 431"), "{r:?}");

    let client = h1_client(out);
    let r = send(&client, "POST", "svc", "/", &[], "y".repeat(2000)).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (413, "body-too-large"));

    let r = raw_exchange(out, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "HTTP/1.1 without Host: {r:?}");

    // h2c: an oversized header block is refused too
    let h2 = h2_client(out);
    let r = get(&h2, "svc", "/", &[("x-big", &big)]).await;
    assert!(r.as_ref().map(|a| a.status.as_u16() == 431).unwrap_or(true), "{r:?}");

    for c in [&client, &h2] {
        let r = get(c, "svc", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "still serving");
    }
    assert_eq!(a.hits(), 2, "nothing refused reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    use std::io::Read;
    let a = Backend::start("a").await;
    let cfg = format!("proxy: {{ timeouts: {{ idle: 300ms }} }}\n{}", split_config(&[("a", &[a.addr], 1)], ""));
    let proxy = Proxy::start(&cfg);
    let mut s = std::net::TcpStream::connect(proxy.outbound).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    // A clean close (0 bytes), not the 10 s read timeout.
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}
