//! Traces over real sockets, received by a real OTLP/gRPC `TraceService` (opentelemetry-proto's
//! generated server on tonic): an app → outbound sidecar → inbound sidecar → model server
//! request gives a client span and a server span in one trace, the second the child of the
//! first, with the semantic-convention and Vane attributes; the model server hears the inbound
//! span as its parent; sampling follows the caller's flag; with tracing off nothing changes.

#[path = "model/fake.rs"]
mod fake;

use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vane_tests::*;

/// Spans received, with their resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    self.0.lock().unwrap().push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves the collector over h2c on a fresh port.
async fn collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let svc = TraceServiceServer::new(Collector(Arc::clone(&received)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    (addr, received)
}

fn tracing(collector: SocketAddr, name: &str, sample: f64) -> String {
    format!(
        "proxy:\n  tracing: {{ otlp: \"http://{collector}\", sample: {sample}, service_name: {name}, flush: 20ms }}\n"
    )
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn str_attr<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn int_attr(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Value::IntValue(v)) => *v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

async fn spans(received: &Received, n: usize) -> Vec<(String, Span)> {
    for _ in 0..250 {
        if received.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    received.lock().unwrap().clone()
}

/// An inbound sidecar in front of the fake model server, and an outbound one routing `svc` to it.
fn two_sidecars(collector: SocketAddr, model: SocketAddr, sample: f64) -> (Proxy, Proxy) {
    let inbound =
        Proxy::start(&format!("{}inbound:\n  forward_to: \"{model}\"\n", tracing(collector, "pod-b", sample)));
    let outbound = Proxy::start(&format!(
        "{}{}",
        tracing(collector, "app-a", sample),
        split_config(&[("llama-v2", &[inbound.inbound], 1)], "")
    ));
    (outbound, inbound)
}

const STREAM: &str = r#"{"model":"llama","stream":true}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_two_sidecars_is_one_trace() {
    let (collector, received) = collector().await;
    let seen = fake::Seen::default();
    let model = fake::start(Arc::clone(&seen)).await;
    let (out, inb) = two_sidecars(collector, model, 1.0);
    let client = h1_client(out.outbound);
    let a = send(&client, "POST", "svc", "/v1/chat/completions", &[("content-type", "application/json")], STREAM)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert!(a.body.contains("[DONE]"));

    let got = spans(&received, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let client_span = &got.iter().find(|(svc, _)| svc == "app-a").expect("the outbound span").1;
    let server_span = &got.iter().find(|(svc, _)| svc == "pod-b").expect("the inbound span").1;
    // One trace; the inbound span is the outbound one's child; a new trace has no parent.
    assert_eq!(client_span.trace_id, server_span.trace_id);
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert!(client_span.parent_span_id.is_empty(), "{client_span:?}");
    assert_eq!(client_span.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    // The model server's parent is the inbound span.
    let tp = seen.lock().unwrap()[0]["traceparent"].to_str().unwrap().to_string();
    assert_eq!(tp, format!("00-{}-{}-01", hex(&server_span.trace_id), hex(&server_span.span_id)));

    for s in [client_span, server_span] {
        assert_eq!(str_attr(s, "http.request.method"), "POST");
        assert_eq!(str_attr(s, "url.path"), "/v1/chat/completions");
        assert_eq!(int_attr(s, "http.response.status_code"), 200);
        assert_eq!(str_attr(s, "gen_ai.request.model"), "llama");
        assert_eq!(int_attr(s, "gen_ai.usage.input_tokens"), 7);
        assert_eq!(int_attr(s, "gen_ai.usage.output_tokens"), fake::TOKENS as i64);
        assert_eq!(int_attr(s, "vane.retries"), 0);
        assert!(matches!(attr(s, "vane.coalesced"), Some(Value::BoolValue(false))));
        assert!(matches!(attr(s, "vane.time_to_first_byte_ms"), Some(Value::DoubleValue(ms)) if *ms >= 30.0));
        assert!(s.end_time_unix_nano > s.start_time_unix_nano);
    }
    assert_eq!(str_attr(client_span, "server.address"), "svc");
    assert_eq!(str_attr(client_span, "vane.route"), "main");
    assert_eq!(str_attr(client_span, "vane.backend"), "llama-v2");
    assert_eq!(str_attr(client_span, "vane.endpoint"), inb.inbound.to_string());
    assert_eq!(str_attr(server_span, "vane.endpoint"), model.to_string());
    // Counted once the collector has answered the export call.
    let counted =
        wait_until(Duration::from_secs(5), || out.metrics().contains("vane_trace_spans_exported_total 1")).await;
    assert!(counted, "{}", out.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_callers_flag() {
    let (collector, received) = collector().await;
    let seen = fake::Seen::default();
    let model = fake::start(Arc::clone(&seen)).await;
    // Never sampled on its own: only a caller's sampled flag makes a span.
    let (out, _inb) = two_sidecars(collector, model, 0.0);
    let client = h1_client(out.outbound);
    let ct = ("content-type", "application/json");
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    send(&client, "POST", "svc", "/v1/chat/completions", &[ct, ("traceparent", unsampled)], r#"{"model":"m"}"#)
        .await
        .unwrap();
    send(&client, "POST", "svc", "/v1/chat/completions", &[ct], r#"{"model":"m"}"#).await.unwrap();
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    send(
        &client,
        "POST",
        "svc",
        "/v1/chat/completions",
        &[ct, ("traceparent", sampled), ("tracestate", "k=v")],
        r#"{"model":"m"}"#,
    )
    .await
    .unwrap();
    let got = spans(&received, 2).await;
    assert_eq!(got.len(), 2, "only the sampled request is traced, on both sides: {got:?}");
    let client_span = &got.iter().find(|(svc, _)| svc == "app-a").unwrap().1;
    assert_eq!(hex(&client_span.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&client_span.parent_span_id), "b7ad6b7169203331");
    let seen = seen.lock().unwrap();
    // Not sampled: the caller's traceparent passes untouched, or none is made up.
    assert_eq!(seen[0]["traceparent"], unsampled);
    assert!(seen[1].get("traceparent").is_none());
    assert_ne!(seen[2]["traceparent"], sampled);
    assert_eq!(seen[2]["tracestate"], "k=v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_changes_nothing() {
    let seen = fake::Seen::default();
    let model = fake::start(Arc::clone(&seen)).await;
    let proxy = Proxy::start(&split_config(&[("v1", &[model], 1)], ""));
    let client = h1_client(proxy.outbound);
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    send(&client, "GET", "svc", "/plain", &[("traceparent", tp)], "").await.unwrap();
    send(&client, "GET", "svc", "/plain", &[], "").await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["traceparent"], tp);
    assert!(seen[1].get("traceparent").is_none());
    assert!(proxy.metrics().contains("vane_trace_spans_exported_total 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_are_sent_at_shutdown() {
    let (collector, received) = collector().await;
    let model = fake::start(fake::Seen::default()).await;
    // A batch waits a minute to fill: only the drain can send these spans in time.
    let config = format!(
        "proxy:\n  tracing: {{ otlp: \"http://{collector}\", sample: 1, service_name: app-a, flush: 60s }}\n{}",
        split_config(&[("v1", &[model], 1)], "")
    );
    let mut proxy = Proxy::start(&config);
    let client = h1_client(proxy.outbound);
    for _ in 0..3 {
        let a = send(&client, "POST", "svc", "/v1/chat/completions", &[], STREAM).await.unwrap();
        assert_eq!(a.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received.lock().unwrap().is_empty(), "the batch is still filling");
    drop(client);
    proxy.signal("TERM");
    let code = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)));
    assert_eq!(code, Some(0));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|(service, s)| service == "app-a" && s.kind == 3), "client spans of app-a: {got:?}");
}
