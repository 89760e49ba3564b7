//! A request body that fails is the client's fault: it gets a 4xx and never counts against the
//! endpoint it was being sent to.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use vane_tests::*;

fn config(limits: &str, backend: &std::net::SocketAddr, protocol: &str) -> String {
    format!(
        "proxy: {{ limits: {{ {limits} }} }}\n\
         backends:\n  - {{ name: a, protocol: {protocol}, endpoints: [\"{backend}\"] }}\n\
         services:\n  - name: svc\n    routes:\n      - name: main\n        backends: [{{ backend: a }}]\n"
    )
}

fn ejected(proxy: &Proxy, addr: std::net::SocketAddr) -> Option<f64> {
    metric(&proxy.metrics(), "vane_endpoint_ejected", &[&format!("endpoint=\"{addr}\"")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_goes_over_the_limit_while_it_streams_gets_413_and_the_endpoint_stays_healthy() {
    for protocol in ["http1", "http2"] {
        let a = Backend::start("a").await;
        let proxy = Proxy::start(&config("max_body_bytes: 1000", &a.addr, protocol));
        // Chunked, so no Content-Length tells the proxy in advance: 3000 bytes in 6 chunks.
        let mut req =
            String::from("POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for _ in 0..6 {
            req.push_str(&format!("1f4\r\n{}\r\n", "x".repeat(500)));
        }
        req.push_str("0\r\n\r\n");
        // More times in a row than the 5 failures that would eject an endpoint.
        for i in 0..7 {
            let r = raw_exchange(proxy.outbound, req.as_bytes()).unwrap();
            let ans = RawAnswer::parse(&r).unwrap_or_else(|| panic!("{protocol} #{i}: no HTTP answer: {r:?}"));
            assert_eq!((ans.status, ans.header("vane-proxy-error")), (413, "body-too-large"), "{protocol} #{i}: {r:?}");
        }
        assert_eq!(ejected(&proxy, a.addr), Some(0.0), "{protocol}: the endpoint was blamed");
        let m = proxy.metrics();
        assert_eq!(metric(&m, "vane_requests_total", &["error=\"body-too-large\""]), Some(7.0), "{m}");
        assert_eq!(metric(&m, "vane_requests_total", &["error=\"upstream-failed\""]), None, "{m}");
        let r = get(&h1_client(proxy.outbound), "svc", "/", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"), "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_breaks_off_its_body_never_ejects_the_endpoint() {
    for protocol in ["http1", "http2"] {
        let a = Backend::start("a").await;
        let proxy = Proxy::start(&config("max_body_bytes: 10000000", &a.addr, protocol));
        // A Content-Length above the sniff limit: the body is streamed to the endpoint as it comes,
        // and the client goes away after 100 bytes of the 100000 it announced.
        for _ in 0..7 {
            let before = a.hits();
            let mut s = TcpStream::connect(proxy.outbound).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 100000\r\n\r\n").unwrap();
            s.write_all(&[b'x'; 100]).unwrap();
            // The request reaches the endpoint before the client leaves, so the exchange is under way.
            assert!(wait_until(Duration::from_secs(5), || a.hits() > before).await, "{protocol}: never forwarded");
            drop(s);
        }
        let aborted =
            || metric(&proxy.metrics(), "vane_requests_total", &["error=\"body-read-failed\""]).unwrap_or(0.0) >= 7.0;
        assert!(wait_until(Duration::from_secs(5), aborted).await, "{protocol}: {}", proxy.metrics());
        let m = proxy.metrics();
        assert_eq!(ejected(&proxy, a.addr), Some(0.0), "{protocol}: the endpoint was blamed\n{m}");
        assert_eq!(metric(&m, "vane_requests_total", &["error=\"upstream-failed\""]), None, "{protocol}\n{m}");
        let r = get(&h1_client(proxy.outbound), "svc", "/", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"), "{protocol}");
    }
}
