//! Coalescing: identical deterministic requests in flight share one upstream call; sampled
//! requests, other callers and streamed answers past the cap do not.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use vane_tests::*;

const CHAT: &str = "/v1/chat/completions";
const GREEDY: &str = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

fn config(addr: std::net::SocketAddr, coalesce: &str) -> String {
    split_config(&[("llm", &[addr], 1)], &format!("        coalesce: {coalesce}\n"))
}

/// A backend that answers after `delay` with the number of the request it answers.
async fn counting_backend(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let addr = serve(move |_req: Request<Incoming>| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(delay).await;
            let mut r = Response::new(full(format!("{{\"answer\":{n}}}")));
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r
        }
    })
    .await;
    (addr, hits)
}

fn coalesced(a: &Answer) -> bool {
    a.headers.get("vane-coalesced").is_some_and(|v| v == "true")
}

async fn post_all(proxy: &Proxy, bodies: &[(&'static str, Option<&'static str>)]) -> Vec<Answer> {
    let tasks: Vec<_> = bodies
        .iter()
        .map(|&(body, auth)| {
            let client = h1_client(proxy.outbound);
            tokio::spawn(async move {
                let mut headers = vec![("content-type", "application/json")];
                if let Some(a) = auth {
                    headers.push(("authorization", a));
                }
                send(&client, "POST", "svc", CHAT, &headers, body).await.unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_identical_greedy_requests_reach_the_upstream_once() {
    let (addr, hits) = counting_backend(Duration::from_millis(500)).await;
    let proxy = Proxy::start(&config(addr, "{ when: deterministic }"));
    let answers = post_all(&proxy, &[(GREEDY, None); 20]).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one upstream call for 20 identical requests");
    for a in &answers {
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, r#"{"answer":1}"#), "{a:?}");
        assert_eq!(a.headers["content-type"], "application/json");
    }
    assert_eq!(answers.iter().filter(|a| coalesced(a)).count(), 19, "every answer but the leader's is marked");
    let m = proxy.metrics();
    let labels = ["service=\"svc\"", "route=\"main\""];
    assert_eq!(metric(&m, "vane_coalesce_leaders_total", &labels), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vane_coalesce_followers_total", &labels), Some(19.0));
    assert_eq!(metric(&m, "vane_coalesce_saved_bytes_total", &labels), Some(19.0 * 12.0));
    // Once the answer is done, the next identical request goes upstream again (not a cache).
    let again = post_all(&proxy, &[(GREEDY, None)]).await;
    assert_eq!((again[0].body.as_str(), coalesced(&again[0])), (r#"{"answer":2}"#, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_and_different_callers_never_share() {
    let (addr, hits) = counting_backend(Duration::from_millis(400)).await;
    let proxy = Proxy::start(&config(addr, "{}"));
    let sampled = r#"{"model":"m","temperature":0.8,"messages":[{"role":"user","content":"hi"}]}"#;
    let answers = post_all(&proxy, &[(sampled, None); 5]).await;
    assert_eq!(hits.load(Ordering::SeqCst), 5, "temperature 0.8 without a seed is never coalesced");
    assert!(answers.iter().all(|a| a.status == 200 && !coalesced(a)));
    let mut bodies: Vec<&str> = answers.iter().map(|a| a.body.as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), 5, "each got its own answer");

    let callers = [(GREEDY, Some("Bearer alice")), (GREEDY, Some("Bearer alice")), (GREEDY, Some("Bearer bob"))];
    let answers = post_all(&proxy, &callers).await;
    assert_eq!(hits.load(Ordering::SeqCst), 7, "alice's two share, bob goes alone");
    assert_eq!(answers[0].body, answers[1].body);
    assert_ne!(answers[0].body, answers[2].body);
    assert!(!coalesced(&answers[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_share_when_the_route_allows_it() {
    let (addr, hits) = counting_backend(Duration::from_millis(400)).await;
    let proxy = Proxy::start(&config(addr, "{ across_callers: true }"));
    let answers = post_all(&proxy, &[(GREEDY, Some("Bearer alice")), (GREEDY, Some("Bearer bob"))]).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(answers[0].body, answers[1].body);
}

/// An SSE backend: each request's stream sends `data: 1`, then one more event each time the
/// gate opens, up to `data: 3`.
async fn sse_backend(gate: Arc<Notify>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let addr = serve(move |_req: Request<Incoming>| {
        h.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(&gate);
        async move {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for i in 1..=3 {
                    if i > 1 {
                        gate.notified().await;
                    }
                    let _ = tx.send(Frame::data(Bytes::from(format!("data: {i}\n\n")))).await;
                }
            });
            let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await;
    (addr, hits)
}

const GREEDY_STREAM: &str = r#"{"model":"m","temperature":0,"stream":true,"messages":[]}"#;

async fn open_stream(client: &TestClient) -> Response<Incoming> {
    let req = Request::post(format!("http://svc{CHAT}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(GREEDY_STREAM.as_bytes())))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.expect("no answer").unwrap()
}

async fn next_event(body: &mut Incoming) -> String {
    let f = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("no event");
    String::from_utf8(f.unwrap().unwrap().into_data().unwrap().to_vec()).unwrap()
}

async fn rest(body: Incoming) -> String {
    let b = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.expect("stream did not end");
    String::from_utf8(b.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_follower_of_a_stream_gets_every_event_in_order() {
    let gate = Arc::new(Notify::new());
    let (addr, hits) = sse_backend(Arc::clone(&gate)).await;
    let proxy = Proxy::start(&config(addr, "{}"));
    let (c1, c2) = (h1_client(proxy.outbound), h2_client(proxy.outbound));
    let mut leader = open_stream(&c1).await.into_body();
    assert_eq!(next_event(&mut leader).await, "data: 1\n\n");
    gate.notify_one();
    assert_eq!(next_event(&mut leader).await, "data: 2\n\n");
    // Joins after two events went out: gets them first, then the third live.
    let late = open_stream(&c2).await;
    assert_eq!(late.headers()["vane-coalesced"], "true");
    assert_eq!(late.headers()["content-type"], "text/event-stream");
    let mut late = late.into_body();
    let mut seen = String::new();
    while seen.len() < "data: 1\n\ndata: 2\n\n".len() {
        seen.push_str(&next_event(&mut late).await);
    }
    assert_eq!(seen, "data: 1\n\ndata: 2\n\n");
    gate.notify_one();
    assert_eq!(rest(late).await, "data: 3\n\n");
    assert_eq!(rest(leader).await, "data: 3\n\n");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_disconnects_leaves_its_followers_served() {
    let gate = Arc::new(Notify::new());
    let (addr, hits) = sse_backend(Arc::clone(&gate)).await;
    let proxy = Proxy::start(&config(addr, "{}"));
    let leader_client = h1_client(proxy.outbound);
    let mut leader = open_stream(&leader_client).await.into_body();
    assert_eq!(next_event(&mut leader).await, "data: 1\n\n");
    let follower_client = h1_client(proxy.outbound);
    let mut follower = open_stream(&follower_client).await.into_body();
    assert_eq!(next_event(&mut follower).await, "data: 1\n\n");
    // The leader's client goes away mid-stream (its connection closes).
    drop(leader);
    drop(leader_client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    assert_eq!(next_event(&mut follower).await, "data: 2\n\n");
    gate.notify_one();
    assert_eq!(rest(follower).await, "data: 3\n\n");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

const CHUNK: usize = 64 * 1024;
const HEAD_CHUNKS: usize = 4;
const HUGE_CHUNKS: usize = HEAD_CHUNKS + 768; // 48.25 MiB

/// Streams `HUGE_CHUNKS` chunks, each filled with its index mod 251; the first request's
/// stream waits for the gate after `HEAD_CHUNKS`.
async fn huge_backend(gate: Arc<Notify>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let addr = serve(move |_req: Request<Incoming>| {
        let first = h.fetch_add(1, Ordering::SeqCst) == 0;
        let gate = Arc::clone(&gate);
        async move {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..HUGE_CHUNKS {
                    if first && i == HEAD_CHUNKS {
                        gate.notified().await;
                    }
                    if tx.send(Frame::data(Bytes::from(vec![(i % 251) as u8; CHUNK]))).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await;
    (addr, hits)
}

/// Reads `body` checking that byte `p` of the stream is `(p / CHUNK) % 251` (no gap, no
/// reordering); counts into `read` as it goes; returns the total.
async fn read_checked(mut body: Incoming, read: Arc<AtomicUsize>) -> usize {
    let mut pos = 0usize;
    while let Some(f) = tokio::time::timeout(Duration::from_secs(20), body.frame()).await.expect("stalled") {
        let Ok(data) = f.expect("body failed").into_data() else { continue };
        for (k, b) in data.iter().enumerate() {
            assert_eq!(*b as usize, ((pos + k) / CHUNK) % 251, "byte {} out of place", pos + k);
        }
        pos += data.len();
        read.store(pos, Ordering::SeqCst);
    }
    pos
}

fn rss_kib(pid: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_a_huge_streamed_answer() {
    let gate = Arc::new(Notify::new());
    let (addr, hits) = huge_backend(Arc::clone(&gate)).await;
    let proxy = Proxy::start(&config(addr, "{ max_buffer_bytes: 1048576 }"));
    let pid = proxy.child.id();
    let (lc, fc, tc) = (h1_client(proxy.outbound), h1_client(proxy.outbound), h1_client(proxy.outbound));
    let mut leader = open_stream(&lc).await.into_body();
    let mut got = 0;
    while got < HEAD_CHUNKS * CHUNK {
        got += next_event_len(&mut leader).await;
    }
    // 256 KiB sent, under the 1 MiB cap: a follower joins.
    let follower = open_stream(&fc).await;
    assert_eq!(follower.headers()["vane-coalesced"], "true");
    let baseline = rss_kib(pid);
    gate.notify_one();
    // The leader reads on; the follower reads nothing for a while.
    let leader_read = Arc::new(AtomicUsize::new(got));
    let lr = Arc::clone(&leader_read);
    let leader_task = tokio::spawn(async move {
        let mut pos = lr.load(Ordering::SeqCst);
        while let Some(f) = tokio::time::timeout(Duration::from_secs(20), leader.frame()).await.expect("stalled") {
            pos += f.unwrap().into_data().map_or(0, |d| d.len());
            lr.store(pos, Ordering::SeqCst);
        }
        pos
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled_at = leader_read.load(Ordering::SeqCst);
    let grown_kib = rss_kib(pid).saturating_sub(baseline);
    assert!(stalled_at < 24 << 20, "the leader was held back by the slow follower (read {stalled_at})");
    assert!(grown_kib < 16 * 1024, "the proxy grew by {grown_kib} KiB while a 48 MiB answer streamed");
    // Past the cap, an identical request does not join: it goes upstream on its own.
    let third = open_stream(&tc).await;
    assert!(third.headers().get("vane-coalesced").is_none());
    let third = tokio::spawn(read_checked(third.into_body(), Arc::new(AtomicUsize::new(0))));
    let total = read_checked(follower.into_body(), Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(total, HUGE_CHUNKS * CHUNK, "the follower got the whole answer");
    assert_eq!(leader_task.await.unwrap(), HUGE_CHUNKS * CHUNK, "the leader got the whole answer");
    assert_eq!(third.await.unwrap(), HUGE_CHUNKS * CHUNK);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    eprintln!("coalesce memory: leader held at {stalled_at} bytes, proxy RSS grew {grown_kib} KiB");
}

async fn next_event_len(body: &mut Incoming) -> usize {
    let f = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("no data");
    f.unwrap().unwrap().into_data().map_or(0, |d| d.len())
}

/// A backend whose first answer, after a delay, has `first_status`; later ones are 200 at once.
async fn failing_first_backend(first_status: u16) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let addr = serve(move |_req: Request<Incoming>| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n > 1 {
                return Response::new(full(format!("ok {n}")));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut r = Response::new(full("first failed"));
            *r.status_mut() = http::StatusCode::from_u16(first_status).unwrap();
            r
        }
    })
    .await;
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_is_not_replayed_as_success() {
    // 429: the endpoint refused it unprocessed; followers go upstream on their own.
    let (addr, hits) = failing_first_backend(429).await;
    let proxy = Proxy::start(&config(addr, "{}"));
    let answers = post_all(&proxy, &[(GREEDY, None); 4]).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert!(answers.iter().all(|a| !coalesced(a)));
    drop(proxy);
    // 500: the endpoint's answer; followers get the same error status and body, marked.
    let (addr, hits) = failing_first_backend(500).await;
    let proxy = Proxy::start(&config(addr, "{}"));
    let answers = post_all(&proxy, &[(GREEDY, None); 4]).await;
    assert!(answers.iter().all(|a| a.status == 500 && a.body == "first failed"), "{answers:?}");
    assert_eq!(answers.iter().filter(|a| coalesced(a)).count(), 3);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + msg.len());
    b.push(0);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    Bytes::from(b)
}

/// A response body streamed from a channel that may carry an error (an h2 server then resets
/// the stream).
struct FallibleBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl http_body::Body for FallibleBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// A gRPC server over h2: `ModelInfer` answers after the gate opens, with one message and
/// trailers naming how many calls it has had; `Break` sends one message, then fails 100 ms later.
async fn grpc_model_server(gate: Arc<AtomicUsize>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let addr = h2_only_serve(move |req: Request<Incoming>| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = Arc::clone(&gate);
        async move {
            let path = req.uri().path().to_string();
            let _ = req.into_body().collect().await;
            // The gate counts the calls it lets through.
            while gate.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let body = if path.ends_with("/ModelInfer") {
                let (tx, rx) = mpsc::channel(4);
                let _ = tx.send(Frame::data(grpc_frame(b"tensor"))).await;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("x-call", n.to_string().parse().unwrap());
                let _ = tx.send(Frame::trailers(trailers)).await;
                http_body_util::Either::Left(ChannelBody(rx).map_err(|e| match e {}))
            } else {
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(grpc_frame(b"half")))).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other("the model server failed mid-answer"))).await;
                });
                http_body_util::Either::Right(FallibleBody(rx))
            };
            let mut r = Response::new(body);
            r.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
            r
        }
    })
    .await;
    (addr, hits)
}

/// Serves `handler` over h2c (prior knowledge) on a fresh loopback port.
async fn h2_only_serve<F, Fut, B>(handler: F) -> std::net::SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A request body of one gRPC message that states no length (no `content-length`, as gRPC
/// clients send) and ends with that frame (END_STREAM on it, as they do for a unary call).
struct OneMessage(Option<Bytes>);

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

async fn grpc_call(
    client: &hyper_util::client::legacy::Client<FixedConnector, OneMessage>,
    path: &str,
) -> Response<Incoming> {
    let req = Request::post(format!("http://grpc{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(OneMessage(Some(grpc_frame(b"input"))))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.expect("no answer").unwrap()
}

/// `n` identical calls to `path`, at once.
fn spawn_calls(
    client: &hyper_util::client::legacy::Client<FixedConnector, OneMessage>,
    path: &'static str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Response<Incoming>>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { grpc_call(&client, path).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_followers_get_the_trailers_and_a_break_breaks_every_reader() {
    let gate = Arc::new(AtomicUsize::new(0));
    let (addr, hits) = grpc_model_server(Arc::clone(&gate)).await;
    let cfg = format!(
        "backends: [{{ name: g, protocol: http2, endpoints: [\"{addr}\"] }}]\n\
         services: [{{ name: grpc, routes: [{{ name: all, coalesce: {{ when: always }}, backends: [{{ backend: g }}] }}] }}]\n"
    );
    let proxy = Proxy::start(&cfg);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, OneMessage>(FixedConnector(proxy.outbound));

    // Three identical inference calls while the first is in flight: one upstream call, and
    // every caller gets the message and the trailers (grpc-status) of that one call.
    let calls = spawn_calls(&client, "/inference.GRPCInferenceService/ModelInfer", 3);
    assert!(wait_until(Duration::from_secs(5), || hits.load(Ordering::SeqCst) == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.store(1, Ordering::SeqCst);
    let mut followers = 0;
    for c in calls {
        let resp = c.await.unwrap();
        followers += usize::from(resp.headers().get("vane-coalesced").is_some());
        let collected =
            tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await.unwrap().unwrap();
        let trailers = collected.trailers().cloned().expect("trailers reach every caller");
        assert_eq!((&trailers["grpc-status"], &trailers["x-call"]), (&"0".parse().unwrap(), &"1".parse().unwrap()));
        assert_eq!(&collected.to_bytes()[..], &grpc_frame(b"tensor")[..]);
    }
    assert_eq!((hits.load(Ordering::SeqCst), followers), (1, 2));

    // An answer that breaks off after its first message breaks off for the leader and the
    // followers alike: an error, never a clean end without trailers.
    let calls = spawn_calls(&client, "/test.Svc/Break", 3);
    assert!(wait_until(Duration::from_secs(5), || hits.load(Ordering::SeqCst) == 2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.store(2, Ordering::SeqCst);
    for c in calls {
        let resp = c.await.unwrap();
        let head = format!("{:?}", resp.headers());
        let got = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await.unwrap();
        assert!(got.is_err(), "a broken shared answer must fail the caller's stream: {head} {got:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one upstream call for the three");
}
