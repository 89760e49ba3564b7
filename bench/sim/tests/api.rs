//! The simulator's HTTP surface, over real sockets: the OpenAI API (streaming chunk by chunk
//! and not), `/v1/models`, `/health`, `/metrics` with vLLM's names, the ORCA header, errors,
//! aborts on disconnect, bursts and many concurrent streams.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use vane_sim::engine::EngineConfig;
use vane_sim::{Burst, Config, Stall};

fn slow_steps(step_ms: f64) -> EngineConfig {
    EngineConfig { step_base_us: step_ms * 1000.0, step_per_seq_us: 0.0, prefill_us_per_token: 0.0, ..fast_engine() }
}

#[tokio::test]
async fn streams_arrive_token_by_token() {
    let addr = spawn(config(slow_steps(10.0))).await;
    let s = stream(
        addr,
        "/v1/completions",
        json!({"model": "sim-model", "prompt": "hello there", "max_tokens": 20, "stream": true}),
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "text/event-stream; charset=utf-8");
    let times = s.token_times();
    assert_eq!(times.len(), 20, "one event per token");
    assert_eq!(s.events.last().unwrap().1, "[DONE]");
    assert_eq!(s.events.len(), 21);
    // The tokens come as the engine samples them, about 10 ms apart, not all at the end.
    let distinct = times.windows(2).filter(|w| w[1] > w[0]).count() + 1;
    assert!(distinct >= 15, "{distinct} distinct arrival times");
    assert!(s.frames >= 15, "{} frames", s.frames);
    assert!(times[19] - times[0] >= Duration::from_millis(180));
    let text: String = s.events.iter().filter_map(|(_, e)| token_of(e)).collect();
    assert!(text.starts_with(" the model routes"), "{text}");
    let last: Value = serde_json::from_str(&s.events[19].1).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["object"], "text_completion");
    assert_eq!(last["model"], "sim-model");
}

#[tokio::test]
async fn chat_streams_open_with_the_role_and_can_end_with_usage() {
    let addr = spawn(config(fast_engine())).await;
    let s = stream(
        addr,
        "/v1/chat/completions",
        json!({"model": "sim-model", "messages": [{"role": "user", "content": "x".repeat(40)}],
                "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let events: Vec<Value> =
        s.events[..s.events.len() - 1].iter().map(|(_, e)| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(s.events.last().unwrap().1, "[DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(s.token_times().len(), 5);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(*usage, json!({"prompt_tokens": 10, "total_tokens": 15, "completion_tokens": 5}));
}

#[tokio::test]
async fn non_streaming_answers_carry_usage() {
    let addr = spawn(config(fast_engine())).await;
    let a =
        post(addr, "/v1/completions", json!({"model": "sim-model", "prompt": "x".repeat(400), "max_tokens": 12})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let v = a.json();
    assert_eq!(v["usage"], json!({"prompt_tokens": 100, "total_tokens": 112, "completion_tokens": 12}));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));

    let a = post(
        addr,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "prompt_tokens": 3000}),
    )
    .await;
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["prompt_tokens"], 3000);
    assert_eq!(v["usage"]["completion_tokens"], 128, "default max_tokens");
}

#[tokio::test]
async fn models_health_and_errors() {
    let addr = spawn(config(fast_engine())).await;
    let m = get(addr, "/v1/models").await.json();
    assert_eq!(m["data"][0]["id"], "sim-model");
    assert_eq!(m["data"][0]["max_model_len"], 16_384);
    let h = get(addr, "/health").await;
    assert_eq!(h.status, 200);
    assert!(h.headers.get("endpoint-load-metrics").is_none(), "no ORCA unless asked");

    let wrong = post(addr, "/v1/completions", json!({"model": "other", "prompt": "x"})).await;
    assert_eq!(wrong.status, 404);
    assert_eq!(wrong.json()["error"]["type"], "NotFoundError");
    let long = post(addr, "/v1/completions", json!({"prompt": "x", "prompt_tokens": 16_000, "max_tokens": 500})).await;
    assert_eq!(long.status, 400);
    assert!(long.json()["error"]["message"].as_str().unwrap().contains("maximum context length"));
    let bad = post(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 0})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(get(addr, "/nope").await.status, 404);
    assert_eq!(get(addr, "/v1/completions").await.status, 405);
}

#[tokio::test]
async fn metrics_use_vllm_names_and_parse() {
    let addr = spawn(config(fast_engine())).await;
    let a = post(addr, "/v1/completions", json!({"prompt_tokens": 300, "max_tokens": 7})).await;
    assert_eq!(a.status, 200);
    let r = get(addr, "/metrics").await;
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let page = Page::parse(&r.body);
    let model = [("model_name", "sim-model")];
    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:gpu_cache_usage_perc", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
    ] {
        assert_eq!(page.types.get(name).map(String::as_str), Some(kind), "TYPE of {name}");
        assert!(page.help.contains_key(name), "HELP of {name}");
        if kind != "histogram" {
            page.value(name, &model);
        }
    }
    assert_eq!(page.value("vllm:num_requests_running", &model), 0.0);
    assert_eq!(page.value("vllm:kv_cache_usage_perc", &model), 0.0);
    assert_eq!(page.value("vllm:prompt_tokens_total", &model), 300.0);
    assert_eq!(page.value("vllm:generation_tokens_total", &model), 7.0);
    assert_eq!(page.value("vllm:request_success_total", &model), 1.0);
    assert_eq!(page.value("vllm:cache_config_info", &[("num_gpu_blocks", "4096")]), 1.0);

    for h in ["vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"] {
        let buckets: Vec<_> = page.samples.iter().filter(|s| s.name == format!("{h}_bucket")).collect();
        assert!(buckets.len() > 10);
        assert!(buckets.iter().all(|b| b.labels["model_name"] == "sim-model"));
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "cumulative");
        let last = buckets.last().unwrap();
        assert_eq!(last.labels["le"], "+Inf");
        assert_eq!(last.value, page.value(&format!("{h}_count"), &model));
        assert_eq!(last.value, 1.0);
        assert!(page.value(&format!("{h}_sum"), &model) > 0.0);
    }
}

#[tokio::test]
async fn orca_header_matches_the_metrics_page() {
    let mut cfg = config(EngineConfig { max_batch: 2, ..slow_steps(20.0) });
    cfg.orca = true;
    let addr = spawn(cfg).await;
    // A stream's headers leave before the engine loop takes the request in: it is counted
    // as waiting.
    let s = stream(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 1, "stream": true})).await;
    assert_eq!(
        s.headers["endpoint-load-metrics"],
        "TEXT named_metrics.queue_depth=1, named_metrics.running=0, named_metrics.kv_cache_usage=0"
    );
    // Two run and three wait for the next seconds.
    for _ in 0..5 {
        tokio::spawn(post(addr, "/v1/completions", json!({"prompt_tokens": 100, "max_tokens": 500})));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = get(addr, "/metrics").await;
    let o = orca(r.headers["endpoint-load-metrics"].to_str().unwrap());
    let page = Page::parse(&r.body);
    assert_eq!(o["queue_depth"], 3.0);
    assert_eq!(o["running"], 2.0);
    assert_eq!(o["queue_depth"], page.value("vllm:num_requests_waiting", &[]));
    assert_eq!(o["running"], page.value("vllm:num_requests_running", &[]));
    let kv = page.value("vllm:kv_cache_usage_perc", &[]);
    assert!(kv > 0.0);
    assert_eq!(o["kv_cache_usage"], kv);
    assert_eq!(o.len(), 3);

    // Every response carries it, errors included.
    for path in ["/health", "/v1/models", "/nope"] {
        let r = get(addr, path).await;
        assert!(r.headers.contains_key("endpoint-load-metrics"), "{path}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_sequence() {
    let addr = spawn(config(slow_steps(5.0))).await;
    let req = json!({"prompt_tokens": 1000, "max_tokens": 10_000, "stream": true});
    let client = tokio::spawn(async move { stream(addr, "/v1/completions", req).await });
    let running =
        |addr| async move { Page::parse(&get(addr, "/metrics").await.body).value("vllm:num_requests_running", &[]) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(addr).await != 1.0 {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.abort();
    while running(addr).await != 0.0 {
        assert!(Instant::now() < deadline, "never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vllm:kv_cache_usage_perc", &[]), 0.0);
    assert_eq!(page.value("vllm:request_success_total", &[]), 0.0);
}

#[tokio::test]
async fn bursts_occupy_the_engine() {
    let cfg = Config {
        burst: Some(Burst { every: Duration::from_millis(50), requests: 4, prompt_tokens: 200, output_tokens: 2000 }),
        ..config(slow_steps(5.0))
    };
    let addr = spawn(cfg).await;
    tokio::time::sleep(Duration::from_millis(130)).await;
    let page = Page::parse(&get(addr, "/metrics").await.body);
    // Two bursts so far, nobody reading them.
    assert_eq!(page.value("vllm:num_requests_running", &[]), 8.0);
    assert!(page.value("vllm:kv_cache_usage_perc", &[]) > 0.0);
}

#[tokio::test]
async fn a_thousand_concurrent_streams() {
    let addr = spawn(config(EngineConfig {
        max_batch: 1024,
        kv_tokens: 131_072,
        max_batched_tokens: 65_536,
        step_per_seq_us: 2.0,
        ..fast_engine()
    }))
    .await;
    let start = Instant::now();
    let runs = (0..1000)
        .map(|_| stream(addr, "/v1/completions", json!({"prompt_tokens": 20, "max_tokens": 10, "stream": true})));
    let streams = futures_util::future::join_all(runs).await;
    assert!(streams.iter().all(|s| s.token_times().len() == 10));
    eprintln!("1000 streams of 10 tokens: {:?}", start.elapsed());
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vllm:generation_tokens_total", &[]), 10_000.0);
}

#[tokio::test]
async fn state_tells_every_sequence_and_the_step_parameters() {
    let addr = spawn(config(EngineConfig { max_batch: 2, ..slow_steps(20.0) })).await;
    let s = get(addr, "/state").await.json();
    assert_eq!((s["waiting"].as_u64(), s["running"].as_u64()), (Some(0), Some(0)));
    for p in [100, 200, 300] {
        tokio::spawn(post(addr, "/v1/completions", json!({"prompt_tokens": p, "max_tokens": 500})));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = get(addr, "/state").await;
    assert_eq!(r.headers["content-type"], "application/json");
    let s = r.json();
    assert_eq!(s["running"], 2);
    assert_eq!(s["waiting"], 1);
    let running = s["running_seqs"].as_array().unwrap();
    let mut prompts: Vec<u64> = running.iter().map(|x| x[0].as_u64().unwrap()).collect();
    prompts.sort_unstable();
    assert_eq!(prompts.len(), 2);
    assert!(running.iter().all(|x| x[1].as_u64().unwrap() >= 1 && x[2] == 500), "{running:?}");
    assert_eq!(s["waiting_seqs"].as_array().unwrap().len(), 1);
    assert_eq!(s["waiting_seqs"][0][1], 0);
    assert_eq!(s["max_batch"], 2);
    assert_eq!(s["step_base_us"], 20_000.0);
    assert_eq!(s["speed"], 1.0);
    assert_eq!(s["kv_blocks_total"], 4096);
    assert!(s["kv_blocks_free"].as_u64().unwrap() < 4096);
    assert_eq!(s["reports_frozen"], false);
}

#[tokio::test]
async fn a_full_queue_answers_429_at_once() {
    let cfg = Config { max_waiting: Some(2), ..config(EngineConfig { max_batch: 1, ..slow_steps(20.0) }) };
    let addr = spawn(cfg).await;
    // Requests on their way to the engine count as waiting too, so they are sent one by one.
    for _ in 0..3 {
        tokio::spawn(post(addr, "/v1/completions", json!({"prompt_tokens": 10, "max_tokens": 500})));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One runs, two wait: the next is refused.
    let s = get(addr, "/state").await.json();
    assert_eq!((s["running"].as_u64(), s["waiting"].as_u64()), (Some(1), Some(2)), "{s}");
    let t = Instant::now();
    let r = post(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 5, "stream": true})).await;
    // At once: a queued request would take 500 steps of 20 ms.
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    let e = r.json();
    assert_eq!(e["error"]["code"], 429);
    assert_eq!(e["error"]["type"], "RateLimitError");
    assert!(e["error"]["message"].as_str().unwrap().contains("waiting"));
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vllm:num_requests_waiting", &[]), 2.0);
    assert_eq!(page.value("vane_sim_refused_total", &[]), 1.0);
    assert_eq!(get(addr, "/state").await.json()["max_waiting"], 2);
}

#[tokio::test]
async fn frozen_reports_and_a_slow_start() {
    let cfg = Config {
        orca: true,
        freeze: Some(vane_sim::Freeze { on: Duration::from_millis(300), off: Duration::from_millis(200) }),
        slow: Some(vane_sim::Slow { duration: Duration::from_millis(400), speed: 3.0 }),
        ..config(slow_steps(10.0))
    };
    let addr = spawn(cfg).await;
    for _ in 0..3 {
        tokio::spawn(post(addr, "/v1/completions", json!({"prompt_tokens": 10, "max_tokens": 1000})));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Frozen at the start: the reports still show the idle replica, /state the truth.
    let r = get(addr, "/metrics").await;
    assert_eq!(
        r.headers["endpoint-load-metrics"],
        "TEXT named_metrics.queue_depth=0, named_metrics.running=0, named_metrics.kv_cache_usage=0"
    );
    assert_eq!(Page::parse(&r.body).value("vllm:num_requests_running", &[]), 0.0);
    let s = get(addr, "/state").await.json();
    assert_eq!(s["running"], 3);
    assert_eq!(s["reports_frozen"], true);
    assert_eq!(s["speed"], 3.0);
    // Live between 300 and 500 ms; past 400 ms the replica runs at its own speed.
    tokio::time::sleep(Duration::from_millis(320)).await;
    let r = get(addr, "/metrics").await;
    assert_eq!(Page::parse(&r.body).value("vllm:num_requests_running", &[]), 3.0);
    let s = get(addr, "/state").await.json();
    assert_eq!(s["reports_frozen"], false);
    assert_eq!(s["speed"], 1.0);
}

#[tokio::test]
async fn stalled_requests_start_late_and_every_request_is_counted() {
    // Every request stalls for 300 ms; a 1 ms step makes everything else quick.
    let stall = Stall { share: 1.0, duration: Duration::from_millis(300), seed: 1 };
    let addr = spawn(Config { stall: Some(stall), ..config(fast_engine()) }).await;
    let s = stream(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 3, "stream": true})).await;
    assert_eq!(s.status, 200);
    assert!(s.ttft() >= Duration::from_millis(300), "first token after {:?}", s.ttft());
    // A client that leaves during the stall: counted as received, never run.
    let gone = tokio::spawn(post(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 3})));
    tokio::time::sleep(Duration::from_millis(50)).await;
    gone.abort();
    let bad = post(addr, "/v1/completions", json!({"prompt": "x", "max_tokens": 0})).await;
    assert_eq!(bad.status, 400);
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vane_sim_requests_total", &[]), 2.0, "the two valid requests, not the 400");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vllm:request_success_total", &[]), 1.0, "the abandoned request never ran");
}
