//! Streaming: SSE events and gRPC messages pass one by one, trailers and deadlines are kept.

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use vane_tests::*;

/// An SSE backend: sends `one`, then waits for the gate before sending `two` and ending.
async fn sse_backend(gate: Arc<Notify>) -> std::net::SocketAddr {
    serve(move |_req: Request<Incoming>| {
        let gate = Arc::clone(&gate);
        async move {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from_static(b"data: one\n\n"))).await;
                gate.notified().await;
                let _ = tx.send(Frame::data(Bytes::from_static(b"data: two\n\n"))).await;
            });
            let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_before_the_upstream_finishes() {
    let gate = Arc::new(Notify::new());
    let addr = sse_backend(Arc::clone(&gate)).await;
    let proxy = Proxy::start(&split_config(&[("llm", &[addr], 1)], ""));
    for client in [h1_client(proxy.outbound), h2_client(proxy.outbound)] {
        let req = Request::post("http://svc/v1/chat/completions")
            .body(Full::new(Bytes::from_static(b"{\"stream\":true}")))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.unwrap().unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        // The first event arrives while the upstream is still held open by the gate.
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("first event did not arrive while the stream was open");
        let first = first.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: one\n\n");
        gate.notify_one();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.unwrap().unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: two\n\n");
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

fn grpc_messages(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push(b[5..5 + n].to_vec());
        b = &b[5 + n..];
    }
    out
}

/// A gRPC server speaking the real wire format over h2: `Unary` echoes, `Stream` sends three
/// messages (the second after the gate opens), `Slow` answers after 2 s.
async fn grpc_backend(gate: Arc<Notify>) -> std::net::SocketAddr {
    serve(move |req: Request<Incoming>| {
        let gate = Arc::clone(&gate);
        async move {
            let path = req.uri().path().to_string();
            let input = req.into_body().collect().await.unwrap().to_bytes();
            let (tx, rx) = mpsc::channel(8);
            let slow = path == "/test.Echo/Slow";
            tokio::spawn(async move {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                match path.as_str() {
                    "/test.Echo/Unary" => {
                        let _ = tx.send(Frame::data(grpc_frame(&grpc_messages(&input)[0]))).await;
                    }
                    "/test.Echo/Stream" => {
                        let _ = tx.send(Frame::data(grpc_frame(b"m1"))).await;
                        gate.notified().await;
                        let _ = tx.send(Frame::data(grpc_frame(b"m2"))).await;
                        let _ = tx.send(Frame::data(grpc_frame(b"m3"))).await;
                        trailers.insert("x-summary", "three".parse().unwrap());
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            if slow {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
            r
        }
    })
    .await
}

fn grpc_request(path: &str, msg: &[u8], timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut b =
        Request::post(format!("http://grpc{path}")).header("content-type", "application/grpc").header("te", "trailers");
    if let Some(t) = timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(Full::new(grpc_frame(msg))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming_keep_trailers_and_deadlines() {
    let gate = Arc::new(Notify::new());
    let addr = grpc_backend(Arc::clone(&gate)).await;
    let cfg = format!(
        "backends: [{{ name: g, protocol: http2, endpoints: [\"{addr}\"] }}]\nservices: [{{ name: grpc, routes: [{{ name: all, backends: [{{ backend: g }}] }}] }}]\n"
    );
    let proxy = Proxy::start(&cfg);
    let client = h2_client(proxy.outbound);

    // unary
    let resp = client.request(grpc_request("/test.Echo/Unary", b"hello", None)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(grpc_messages(&collected.to_bytes()), vec![b"hello".to_vec()]);

    // server streaming: the first message arrives before the stream is over; trailers at the end
    let resp = client.request(grpc_request("/test.Echo/Stream", b"go", None)).await.unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first message held back")
        .unwrap()
        .unwrap();
    assert_eq!(grpc_messages(&first.into_data().unwrap()), vec![b"m1".to_vec()]);
    gate.notify_one();
    let rest = body.collect().await.unwrap();
    let trailers = rest.trailers().unwrap().clone();
    assert_eq!(grpc_messages(&rest.to_bytes()), vec![b"m2".to_vec(), b"m3".to_vec()]);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-summary"], "three");

    // deadline: grpc-timeout 200ms against a 2 s answer gives DEADLINE_EXCEEDED, as gRPC expects
    let resp = client.request(grpc_request("/test.Echo/Slow", b"x", Some("200m"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert_eq!(resp.headers()["vane-proxy-error"], "response-timeout");
}
