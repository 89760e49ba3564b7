//! A fake OpenAI-style model server for the observability tests: JSON answers with `usage`,
//! SSE streams with or without a final usage event, and a plain-text answer.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vane_tests::{ChannelBody, TestBody, full, serve};

/// Delay before the first token of a stream, and between tokens.
pub const FIRST: Duration = Duration::from_millis(40);
pub const GAP: Duration = Duration::from_millis(20);
/// Tokens a stream sends.
pub const TOKENS: u64 = 5;

/// The generated tokens a KServe infer answer reports.
pub const KSERVE_OUT: u64 = 3;

/// What the server saw of each request: its headers.
pub type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

/// Paths: `/v1/chat/completions` answers JSON, or SSE when the body asks `"stream":true`
/// (with a usage event unless the query has `no_usage`; after 200 ms with `slow`); `/plain`
/// answers text; `/v2/models/trtllm/infer` answers a KServe v2 (TensorRT-LLM) infer response
/// whose `sequence_length` is [`KSERVE_OUT`], any other model's an image model's probabilities.
pub async fn start(seen: Seen) -> SocketAddr {
    serve(move |req: Request<Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(req.headers().clone());
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            if parts.uri.path() == "/plain" {
                let mut r = Response::new(full("plain"));
                r.headers_mut().insert("content-type", "text/plain".parse().unwrap());
                return r;
            }
            if parts.uri.path().ends_with("/infer") {
                let image = r#"{"model_name":"resnet","outputs":[{"name":"probs","datatype":"FP32","shape":[1,2],"data":[0.9,0.1]}]}"#;
                let llm = format!(
                    r#"{{"model_name":"trtllm","outputs":[{{"name":"output_ids","datatype":"INT32","shape":[1,1,3],"data":[4,5,6]}},{{"name":"sequence_length","datatype":"INT32","shape":[1,1],"data":[{KSERVE_OUT}]}}]}}"#
                );
                let answer = if parts.uri.path().contains("/trtllm/") { llm } else { image.to_string() };
                let mut r = Response::new(full(answer));
                r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                return r;
            }
            if parts.uri.query().unwrap_or_default().contains("slow") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !text.contains("\"stream\":true") {
                let answer = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20}}"#;
                let mut r = Response::new(full(answer));
                r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                return r;
            }
            let usage = !parts.uri.query().unwrap_or_default().contains("no_usage");
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                tokio::time::sleep(FIRST).await;
                for i in 0..TOKENS {
                    if i > 0 {
                        tokio::time::sleep(GAP).await;
                    }
                    let ev = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}],\"usage\":null}}\n\n");
                    let _ = tx.send(Frame::data(Bytes::from(ev))).await;
                }
                if usage {
                    let ev = format!(
                        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":{TOKENS},\"total_tokens\":12}}}}\n\n"
                    );
                    let _ = tx.send(Frame::data(Bytes::from(ev))).await;
                }
                let _ = tx.send(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            let mut r = Response::new(TestBody::Right(ChannelBody(rx)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await
}
