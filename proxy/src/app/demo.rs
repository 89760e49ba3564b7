//! `vane-proxy demo`: three small OpenAI-compatible demo model servers and the proxy in front of
//! them, on the embedded default config (two `llama-v1` replicas and one `llama-v2` canary
//! taking 10 %). It sends a burst of requests and prints where they went.

use super::args::{Args, options};
use super::signals::serve_until_signal;
use super::start::start;
use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The demo servers: name and address (the embedded default routes to these).
pub const DEMO_SERVERS: [(&str, &str); 3] =
    [("llama-v1-a", "127.0.0.1:18001"), ("llama-v1-b", "127.0.0.1:18002"), ("llama-v2", "127.0.0.1:18003")];

/// A body that is either whole or streamed from a channel (server-sent events).
#[derive(Debug)]
pub enum DemoBody {
    /// Whole.
    Full(Option<Bytes>),
    /// Streamed chunk by chunk.
    Channel(mpsc::Receiver<Bytes>),
}

impl http_body::Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            DemoBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn json(status: StatusCode, name: &str, v: serde_json::Value) -> Response<DemoBody> {
    let mut r = Response::new(DemoBody::Full(Some(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    if let Ok(v) = name.parse() {
        r.headers_mut().insert("x-served-by", v);
    }
    r
}

/// Answers like a tiny OpenAI-compatible model server named `name`.
pub async fn handle(name: &'static str, req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == http::Method::GET && path == "/v1/models" {
        return Ok(json(
            StatusCode::OK,
            name,
            serde_json::json!({"object": "list", "data": [{"id": "llama", "object": "model", "owned_by": name}]}),
        ));
    }
    if req.method() != http::Method::POST || !(path == "/v1/chat/completions" || path == "/v1/completions") {
        return Ok(json(
            StatusCode::NOT_FOUND,
            name,
            serde_json::json!({"error": {"message": format!("no route for {path}")}}),
        ));
    }
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                name,
                serde_json::json!({"error": {"message": "body too large"}}),
            ));
        }
    };
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let model = parsed.get("model").and_then(|m| m.as_str()).unwrap_or("llama").to_string();
    let text = format!("Hello from {name}.");
    if parsed.get("stream").and_then(|s| s.as_bool()) == Some(true) {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            for word in text.split(' ') {
                let chunk = serde_json::json!({"object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": format!("{word} ")}}]});
                if tx.send(Bytes::from(format!("data: {chunk}\n\n"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        });
        let mut r = Response::new(DemoBody::Channel(rx));
        r.headers_mut().insert("content-type", http::HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert("x-served-by", http::HeaderValue::from_static(name));
        return Ok(r);
    }
    Ok(json(
        StatusCode::OK,
        name,
        serde_json::json!({"object": "chat.completion", "model": model, "served_by": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}),
    ))
}

/// Starts one demo model server.
pub async fn spawn_model_server(name: &'static str, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for demo server {name}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let conn = builder
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(move |req| handle(name, req)))
                .into_owned();
            tokio::spawn(conn);
        }
    });
    Ok(local)
}

/// Runs the demo.
pub async fn run(args: &Args, requests: usize, exit: bool) -> anyhow::Result<()> {
    for (name, addr) in DEMO_SERVERS {
        spawn_model_server(name, addr.parse()?).await?;
    }
    let source = match &args.config {
        Some(p) => crate::config::Source::File(p.clone()),
        None => crate::config::Source::Embedded,
    };
    let table = source.load()?;
    let (opts, _) = options(args, &table)?;
    let running = start(opts, table).await?;
    let outbound = running.outbound;
    println!("Vane demo: three demo model servers (llama-v1-a, llama-v1-b on :18001/:18002; llama-v2 on :18003)");
    println!("behind vane-proxy: outbound {outbound}, inbound {}, admin {}", running.inbound, running.admin);
    println!();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..requests {
        let req = Request::get(format!("http://{outbound}/v1/models")).header("host", "llm").body(Empty::new())?;
        let who = match client.request(req).await {
            Ok(r) => {
                r.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("(proxy error)").to_string()
            }
            Err(e) => format!("(failed: {e})"),
        };
        *counts.entry(who).or_default() += 1;
    }
    println!("{requests} requests to service `llm` (route `default`: llama-v1 90 %, llama-v2 10 %):");
    for (who, n) in &counts {
        println!("  {who:<12} {n:>6}  {:>5.1} %", 100.0 * *n as f64 / requests.max(1) as f64);
    }
    println!();
    if exit {
        running.drain(Duration::from_secs(1)).await;
        return Ok(());
    }
    println!("Try it (Ctrl-C to stop):");
    println!("  curl -s {outbound}/v1/chat/completions -H 'host: llm' -d '{{\"model\":\"llama\",\"messages\":[]}}'");
    println!("  curl -sN {outbound}/v1/chat/completions -H 'host: llm' -d '{{\"model\":\"llama\",\"stream\":true}}'");
    println!("  curl -s {outbound}/v1/models -H 'host: llm' -H 'x-canary: always'");
    println!("  curl -s {}/metrics | grep vane_requests_total", running.admin);
    serve_until_signal(running).await;
    Ok(())
}
