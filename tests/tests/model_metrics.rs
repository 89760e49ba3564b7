//! Metrics of model traffic over real sockets: tokens from JSON usage and from a stream's last
//! event (or its events), time to first token and per output token, GPU-seconds and cost,
//! capped caller labels, nothing for answers that are not model answers, and the access log.

#[path = "model/fake.rs"]
mod fake;

use std::time::Duration;
use vane_tests::*;

fn config(addr: std::net::SocketAddr, extra_observe: &str) -> String {
    format!(
        "proxy:\n  observe:\n    caller_header: x-caller\n    max_callers: 2\n    gpu_hour_price: {{ v1: 3600 }}\n{extra_observe}{}",
        split_config(&[("v1", &[addr], 1)], "")
    )
}

const STREAM: &str = r#"{"model":"llama","stream":true,"messages":[]}"#;
const UNARY: &str = r#"{"model":"llama","messages":[]}"#;

async fn chat(client: &TestClient, path: &str, caller: &str, body: &'static str) -> Answer {
    let a = send(client, "POST", "svc", path, &[("x-caller", caller), ("content-type", "application/json")], body)
        .await
        .expect("answer");
    assert_eq!(a.status, 200, "{a:?}");
    a
}

/// The model metrics are recorded when a body ends, just after the client has read it.
async fn metrics_with(proxy: &Proxy, name: &str, needles: &[&str]) -> String {
    let mut text = proxy.metrics();
    for _ in 0..100 {
        if metric(&text, name, needles).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = proxy.metrics();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_latency_and_cost_per_model_backend_and_caller() {
    let seen = fake::Seen::default();
    let addr = fake::start(seen.clone()).await;
    let proxy = Proxy::start(&config(addr, ""));
    let client = h1_client(proxy.outbound);

    let a = chat(&client, "/v1/chat/completions", "team-a", STREAM).await;
    assert!(a.body.contains("[DONE]"), "{}", a.body);
    chat(&client, "/v1/chat/completions", "team-b", UNARY).await;
    chat(&client, "/v1/chat/completions", "team-c", UNARY).await;
    chat(&client, "/v1/chat/completions?no_usage", "team-a", STREAM).await;
    let plain = send(&client, "GET", "svc", "/plain", &[("x-caller", "team-a")], "").await.unwrap();
    assert_eq!(plain.body, "plain");

    let by = |caller: &str| format!("direction=\"outbound\",model=\"llama\",backend=\"v1\",caller=\"{caller}\"");
    let text = metrics_with(&proxy, "vane_model_requests_total", &["caller=\"other\""]).await;
    let m = |name: &str, caller: &str| metric(&text, name, &[&by(caller)]);
    // The stream with usage reports 7 + 5; the one without counts its 5 events (no prompt tokens).
    assert_eq!(m("vane_model_input_tokens_total", "team-a"), Some(7.0), "{text}");
    assert_eq!(m("vane_model_output_tokens_total", "team-a"), Some(10.0), "{text}");
    assert_eq!(m("vane_model_input_tokens_total", "team-b"), Some(11.0), "{text}");
    assert_eq!(m("vane_model_output_tokens_total", "team-b"), Some(9.0), "{text}");
    // A third caller is past the cap of two.
    assert_eq!(m("vane_model_output_tokens_total", "other"), Some(9.0), "{text}");
    assert!(!text.contains("team-c"), "{text}");

    // Two streams: TTFT at least the server's first-token delay, TPOT about its gap.
    let lat = "direction=\"outbound\",model=\"llama\",backend=\"v1\"";
    assert_eq!(metric(&text, "vane_model_ttft_seconds_count", &[lat]), Some(2.0), "{text}");
    let ttft = metric(&text, "vane_model_ttft_seconds_sum", &[lat]).unwrap() / 2.0;
    assert!(ttft >= fake::FIRST.as_secs_f64() * 0.9 && ttft < 1.0, "ttft {ttft}");
    assert_eq!(metric(&text, "vane_model_tpot_seconds_count", &[lat]), Some(2.0), "{text}");
    let tpot = metric(&text, "vane_model_tpot_seconds_sum", &[lat]).unwrap() / 2.0;
    let gap = fake::GAP.as_secs_f64();
    assert!(tpot >= gap * 0.8 && tpot < gap * 5.0, "tpot {tpot}, the server's gap {gap}");

    // GPU-seconds: each stream held the one endpoint alone for its whole time; the price of
    // 3600 per GPU-hour makes cost equal to GPU-seconds.
    let gpu = m("vane_model_gpu_seconds_total", "team-a").unwrap();
    let least = 2.0 * (fake::FIRST + fake::GAP * (fake::TOKENS as u32 - 1)).as_secs_f64();
    assert!(gpu >= least * 0.9 && gpu < least + 2.0, "gpu {gpu}, at least {least}");
    let cost = m("vane_model_cost_total", "team-a").unwrap();
    assert!((cost - gpu).abs() < 1e-6, "cost {cost} gpu {gpu}");

    // The plain-text answer is no model answer: no model series without a model.
    assert!(!text.contains("model=\"-\""), "{text}");
    // The endpoint heard the model name, for the inbound sidecar.
    assert!(seen.lock().unwrap().iter().any(|h| h.get("vane-model").is_some_and(|v| v == "llama")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_infer_tokens_from_the_tensors_that_count_them() {
    let addr = fake::start(fake::Seen::default()).await;
    let proxy = Proxy::start(&config(addr, ""));
    let client = h1_client(proxy.outbound);
    let infer = r#"{"inputs":[{"name":"input_ids","datatype":"INT32","shape":[1,4],"data":[1,2,3,4]},{"name":"input_lengths","datatype":"INT32","shape":[1,1],"data":[4]}]}"#;
    for _ in 0..2 {
        chat(&client, "/v2/models/trtllm/infer", "team-a", infer).await;
    }
    // An image model's tensors name no tokens: the request is counted, its tokens are not.
    let image = r#"{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,2],"data":[0.5,0.25]}]}"#;
    chat(&client, "/v2/models/resnet/infer", "team-a", image).await;

    let by = |model: &str| format!("direction=\"outbound\",model=\"{model}\",backend=\"v1\",caller=\"team-a\"");
    let text = metrics_with(&proxy, "vane_model_requests_total", &[&by("resnet")]).await;
    let m = |name: &str, model: &str| metric(&text, name, &[&by(model)]);
    assert_eq!(m("vane_model_input_tokens_total", "trtllm"), Some(8.0), "{text}");
    assert_eq!(m("vane_model_output_tokens_total", "trtllm"), Some(2.0 * fake::KSERVE_OUT as f64), "{text}");
    assert!(m("vane_model_requests_total", "resnet").is_some(), "{text}");
    assert_eq!(m("vane_model_output_tokens_total", "resnet").unwrap_or(0.0), 0.0, "{text}");
    assert!(m("vane_model_gpu_seconds_total", "resnet").is_some_and(|g| g > 0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_writes_one_json_line_per_request() {
    let addr = fake::start(fake::Seen::default()).await;
    let dir = std::env::temp_dir().join(format!("vane-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let extra = format!("    access_log: {{ to: \"{}\", sample: 1 }}\n", log.display());
    let proxy = Proxy::start(&config(addr, &extra));
    let client = h2_client(proxy.outbound);
    chat(&client, "/v1/chat/completions", "team-a", STREAM).await;
    send(&client, "GET", "svc", "/plain", &[], "").await.unwrap();

    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(String::from).collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let stream = v.iter().find(|l| l["path"] == "/v1/chat/completions").expect("the stream's line");
    assert_eq!(stream["method"], "POST");
    assert_eq!(stream["host"], "svc");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["model"], "llama");
    assert_eq!(stream["caller"], "team-a");
    assert_eq!(stream["backend"], "v1");
    assert_eq!(stream["route"], "main");
    assert_eq!(stream["endpoint"], addr.to_string());
    assert_eq!(stream["input_tokens"], 7);
    assert_eq!(stream["output_tokens"], 5);
    assert_eq!(stream["complete"], true);
    assert!(stream["ttfb_ms"].as_f64().unwrap() >= fake::FIRST.as_millis() as f64 * 0.9);
    let plain = v.iter().find(|l| l["path"] == "/plain").expect("the plain answer's line");
    assert_eq!(plain["caller"], "-");
    assert_eq!(plain["output_tokens"], serde_json::Value::Null);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_answers_count_for_every_caller_and_cost_once() {
    let seen = fake::Seen::default();
    let model = fake::start(seen.clone()).await;
    let yaml = format!(
        "proxy:\n  observe: {{ caller_header: x-caller }}\n{}",
        split_config(&[("v1", &[model], 1)], "        coalesce: { when: always }\n")
    );
    let proxy = Proxy::start(&yaml);
    let client = h1_client(proxy.outbound);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { chat(&c, "/v1/chat/completions?slow", "team-a", UNARY).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("request task"));
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "one upstream call for three identical requests");
    assert_eq!(answers.iter().filter(|a| a.headers.contains_key("vane-coalesced")).count(), 2);
    let by = "direction=\"outbound\",model=\"llama\",backend=\"v1\",caller=\"team-a\"";
    let mut text = String::new();
    for _ in 0..100 {
        text = proxy.metrics();
        if metric(&text, "vane_model_requests_total", &[by]) == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, "vane_model_requests_total", &[by]), Some(3.0), "{text}");
    assert_eq!(metric(&text, "vane_model_output_tokens_total", &[by]), Some(27.0), "{text}");
    // The leader's 200 ms on the endpoint, shared with the followers waiting beside it, is
    // charged to the leader alone: at most the one upstream call's time.
    let gpu = metric(&text, "vane_model_gpu_seconds_total", &[by]).unwrap();
    assert!(gpu > 0.0 && gpu < 0.5, "gpu {gpu}");
}
