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
    let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("no HTTP answer: {r:?}"));
    assert_eq!(
        (ans.status, ans.header("vane-proxy-error")),
        (400, "malformed-request"),
        "HTTP/1.1 without Host: {r:?}"
    );

    // h2c: a header list over max_header_list_size (the 8192 above) but under h2's abuse limit
    // (4 x that) is answered by the h2 server itself with a 431 that ends the stream.
    let h2 = h2_client(out);
    let r = get(&h2, "svc", "/", &[("x-big", &big)]).await.expect("an HTTP answer, not a stream reset");
    assert_eq!(r.status, 431, "{r:?}");

    for c in [&client, &h2] {
        let r = get(c, "svc", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "still serving");
    }
    assert_eq!(a.hits(), 2, "nothing refused reached the backend");
}

/// The h2 error behind a hyper client error, if there is one.
fn h2_reason(e: &hyper_util::client::legacy::Error) -> Option<h2::Reason> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.reason();
        }
        source = s.source();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_header_list_far_over_the_limit_ends_the_connection_with_enhance_your_calm() {
    let a = Backend::start("a").await;
    let cfg =
        format!("proxy: {{ limits: {{ max_header_bytes: 8192 }} }}\n{}", split_config(&[("a", &[a.addr], 1)], ""));
    let proxy = Proxy::start(&cfg);
    // Over 4 x max_header_list_size h2 stops decoding and sends GOAWAY(ENHANCE_YOUR_CALM).
    let huge = "x".repeat(40_000);
    let req = http::Request::get("http://svc/")
        .header("x-big", huge.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let err = h2_client(proxy.outbound).request(req).await.expect_err("a header list of 40 KB was accepted");
    assert_eq!(h2_reason(&err), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
    // A new connection is served.
    assert_eq!(get(&h2_client(proxy.outbound), "svc", "/", &[]).await.unwrap().status, 200);
    assert_eq!(a.hits(), 1, "the refused request never reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_an_authority_get_the_proxys_own_400_on_the_wire() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&split_config(&[("a", &[a.addr], 1)], ""));
    for (label, req) in [
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("HTTP/1.1 with an empty Host", "GET /v1 HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n"),
        ("HTTP/1.0 without Host", "POST /v1 HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"),
    ] {
        let r = raw_exchange(proxy.outbound, req.as_bytes()).unwrap();
        let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("{label}: no HTTP answer: {r:?}"));
        assert_eq!(ans.status, 400, "{label}: {r:?}");
        assert_eq!(ans.header_values("vane-proxy-error"), ["malformed-request"], "{label}: {r:?}");
    }
    // The same connection shape with a Host is served, so the 400s above are about the authority.
    let r = raw_exchange(proxy.outbound, b"GET /v1 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").unwrap();
    let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("no HTTP answer: {r:?}"));
    assert_eq!((ans.status, ans.header("x-served-by")), (200, "a"), "{r:?}");
    assert_eq!(a.hits(), 1, "a request without an authority reached the backend");
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
