//! Requests and connections a sidecar must refuse or cut off: ambiguous authorities, request heads
//! that never finish, and more connections than the listener allows.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use vane_tests::*;

/// Reads from `s` until EOF, an error, or `within`; returns the bytes and how the read ended.
fn read_for(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Result<(), ErrorKind>) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, Err(ErrorKind::TimedOut));
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A read timeout shows as WouldBlock on Linux and TimedOut elsewhere.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, Err(ErrorKind::TimedOut));
            }
            Err(e) => return (out, Err(e.kind())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_get_400_and_never_reach_the_backend() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&split_config(&[("a", &[a.addr], 1)], ""));
    // RFC 9112 §3.2: a request with more than one Host field line is answered 400, whether or not
    // the values agree (a proxy and the server behind it could each pick a different one).
    for (label, hosts) in [("different", "Host: svc\r\nHost: other\r\n"), ("equal", "Host: svc\r\nHost: svc\r\n")] {
        let req = format!("GET /v1 HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n");
        let r = raw_exchange(proxy.outbound, req.as_bytes()).unwrap();
        let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("{label} Host values: no HTTP answer: {r:?}"));
        assert_eq!(ans.status, 400, "{label} Host values: {r:?}");
        assert_eq!(ans.header_values("vane-proxy-error"), ["malformed-request"], "{label} Host values: {r:?}");
        assert_eq!(a.hits(), 0, "{label} Host values: the request reached the backend");
    }
    // One Host on the same kind of connection is served: the backend was there all along.
    let r = raw_exchange(proxy.outbound, b"GET /v1 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").unwrap();
    let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("no HTTP answer: {r:?}"));
    assert_eq!((ans.status, ans.header("x-served-by")), (200, "a"), "{r:?}");
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_authority_and_host_header_must_agree() {
    let (a, other) = (Backend::start("a").await, Backend::start("other").await);
    let cfg = format!(
        "backends:\n  - {{ name: a, endpoints: [\"{}\"] }}\n  - {{ name: other, endpoints: [\"{}\"] }}\n\
         services:\n  - {{ name: svc, routes: [{{ name: r, backends: [{{ backend: a }}] }}] }}\n  \
         - {{ name: other, routes: [{{ name: r, backends: [{{ backend: other }}] }}] }}\n",
        a.addr, other.addr
    );
    let proxy = Proxy::start(&cfg);
    let h2 = h2_client(proxy.outbound);
    // :authority says svc, host says other: two services could be meant, so neither is.
    let r = get(&h2, "svc", "/v1", &[("host", "other")]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.proxy_error()), (400, "malformed-request"), "{r:?}");
    assert_eq!((a.hits(), other.hits()), (0, 0), "a request with two authorities reached a backend");
    // Both say svc: served by svc's backend.
    let r = get(&h2, "svc", "/v1", &[("host", "svc")]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"), "{r:?}");
    assert_eq!((a.hits(), other.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_off_after_header_read() {
    let a = Backend::start("a").await;
    // header_read is short; idle stays at its default (60 s), so only header_read can explain a
    // disconnect within the deadline below.
    let cfg = format!("proxy: {{ timeouts: {{ header_read: 300ms }} }}\n{}", split_config(&[("a", &[a.addr], 1)], ""));
    let proxy = Proxy::start(&cfg);
    let mut s = TcpStream::connect(proxy.outbound).unwrap();
    s.write_all(b"GET /v1 HTTP/1.1\r\nHost: svc\r\nX-Slow: ").unwrap();
    let (got, end) = read_for(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    // Closed (EOF or reset), or answered 408 Request Timeout; never left open.
    let answered_408 = text.starts_with("HTTP/1.1 408");
    let closed = matches!(end, Ok(()) | Err(ErrorKind::ConnectionReset));
    assert!(end != Err(ErrorKind::TimedOut) || answered_408, "a partial head was still open after 5 s: {text:?}");
    assert!(answered_408 || (closed && got.is_empty()), "unexpected answer to a partial head: {text:?} ({end:?})");
    assert_eq!(a.hits(), 0, "the partial request reached the backend");
    // A complete request on a new connection is served as usual.
    let r = get(&h1_client(proxy.outbound), "svc", "/v1", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_opened_ahead_of_its_first_request_is_kept() {
    let a = Backend::start("a").await;
    let cfg = format!("proxy: {{ timeouts: {{ header_read: 300ms }} }}\n{}", split_config(&[("a", &[a.addr], 1)], ""));
    let proxy = Proxy::start(&cfg);
    // An HTTP/2 client connects (preface and settings) and sends its first request only later, as
    // gRPC clients that connect ahead do: header_read is for heads that never end, not for this.
    let tcp = tokio::net::TcpStream::connect(proxy.outbound).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    // Part of the scenario, not a wait for something: the connection sits idle past header_read.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut client = client.ready().await.expect("the idle HTTP/2 connection was closed");
    let req = http::Request::get("http://svc/v1").body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.expect("no answer").unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(a.hits(), 1);
    let m = proxy.metrics();
    assert_eq!(metric(&m, "vane_listener_header_timeouts_total", &["listener=\"outbound\""]), Some(0.0), "{m}");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_listener_holds_at_most_max_connections() {
    let a = Backend::start("a").await;
    // header_read is long so that the held heads below stay open whatever its default.
    let cfg = format!(
        "proxy: {{ limits: {{ max_connections: 20 }}, timeouts: {{ header_read: 30s }} }}\n{}",
        split_config(&[("a", &[a.addr], 1)], "")
    );
    let proxy = Proxy::start(&cfg);
    let open = |m: &str| metric(m, "vane_listener_connections{", &["listener=\"outbound\""]);
    let limited = |m: &str| metric(m, "vane_listener_connections_limited_total", &["listener=\"outbound\""]);

    // 20 connections that each hold a request head open fill the listener.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.outbound).unwrap();
        s.write_all(b"GET /v1 HTTP/1.1\r\nHost: svc\r\n").unwrap();
        held.push(s);
    }
    let all_open = wait_until(Duration::from_secs(5), || open(&proxy.metrics()) == Some(20.0)).await;
    assert!(all_open, "the 20 connections never showed as open:\n{}", proxy.metrics());

    // The 21st sends a whole request: while the 20 are held it gets no success (it waits, or is
    // closed).
    let mut extra = TcpStream::connect(proxy.outbound).unwrap();
    extra.write_all(b"GET /v1 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").unwrap();
    let (got, _) = read_for(&mut extra, Duration::from_millis(500));
    let text = String::from_utf8_lossy(&got);
    assert!(!text.starts_with("HTTP/1.1 2"), "a 21st connection was served while 20 were open: {text:?}");
    assert_eq!(a.hits(), 0, "a request went through while the listener was full");
    let now_open = open(&proxy.metrics());
    assert!(now_open.is_some_and(|n| n <= 20.0), "more than max_connections open: {now_open:?}");

    // Once the 20 go, new connections are served again.
    drop(held);
    let r = tokio::time::timeout(Duration::from_secs(5), get(&h1_client(proxy.outbound), "svc", "/v1", &[]))
        .await
        .expect("no answer within 5 s after the held connections closed")
        .unwrap();
    assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"));
    drop(extra);

    // The connection that found the listener full was counted, and the open count falls back.
    let counted = wait_until(Duration::from_secs(5), || limited(&proxy.metrics()).is_some_and(|n| n >= 1.0)).await;
    assert!(counted, "the 21st connection was not counted as limited:\n{}", proxy.metrics());
    let drained = wait_until(Duration::from_secs(5), || open(&proxy.metrics()) == Some(0.0)).await;
    assert!(drained, "closed connections still count as open:\n{}", proxy.metrics());
}
