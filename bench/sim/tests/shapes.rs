//! The simulator reproduces the shapes published for vLLM, measured end to end over HTTP:
//! TTFT grows about linearly with the prompt at fixed load, TPOT grows with the batch, and
//! throughput stops growing at the max batch or when the KV cache is full.
//!
//! Each check measures the simulator with fast parameters and asserts orderings and ratios
//! with wide margins, plus lower bounds that the simulated time guarantees (a step never
//! ends early). Nothing here depends on how fast the machine is. The tests take one lock so
//! that they do not share the cores while measuring.

mod support;

use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::sync::Mutex;
use tokio::time::Instant;
use vane_sim::engine::EngineConfig;

static MEASURING: Mutex<()> = Mutex::const_new(());

fn body(prompt_tokens: u32, max_tokens: u32) -> serde_json::Value {
    json!({"model": "sim-model", "prompt": "x", "prompt_tokens": prompt_tokens,
           "max_tokens": max_tokens, "stream": true, "ignore_eos": true})
}

#[tokio::test]
async fn ttft_grows_linearly_with_the_prompt() {
    let _one = MEASURING.lock().await;
    let engine = EngineConfig { prefill_us_per_token: 80.0, ..fast_engine() };
    let addr = spawn(config(engine)).await;
    let prompts = [100, 1000, 2000, 4000];
    let mut samples = vec![Vec::new(); prompts.len()];
    for _ in 0..3 {
        for (i, p) in prompts.iter().enumerate() {
            let s = stream(addr, "/v1/completions", body(*p, 2)).await;
            samples[i].push(s.ttft());
        }
    }
    let t: Vec<Duration> = samples.into_iter().map(median).collect();
    eprintln!(
        "TTFT (1 ms base step, 80 us/prompt token), prompt 100/1000/2000/4000: {:.1} / {:.1} / {:.1} / {:.1} ms",
        ms(t[0]),
        ms(t[1]),
        ms(t[2]),
        ms(t[3])
    );
    // Simulated: 9.1, 81.1, 161.1, 321.1 ms. A step never ends early.
    assert!(t[3] >= Duration::from_millis(320), "{t:?}");
    assert!(t[3] > t[0] * 5, "{t:?}");
    assert!(t[0] < t[1] && t[1] < t[2] && t[2] < t[3], "{t:?}");
    // Linear: doubling the prompt from 2000 to 4000 adds twice what 1000 to 2000 added.
    let slope = (t[3] - t[2]).as_secs_f64() / (t[2] - t[1]).as_secs_f64();
    assert!((1.5..2.6).contains(&slope), "slope ratio {slope}: {t:?}");
}

#[tokio::test]
async fn tpot_grows_with_the_batch() {
    let _one = MEASURING.lock().await;
    let engine = EngineConfig { step_base_us: 2000.0, step_per_seq_us: 200.0, ..fast_engine() };
    let addr = spawn(config(engine)).await;
    let tokens = 40;
    let mut tpot = Vec::new();
    for batch in [1, 8, 32] {
        let runs = (0..batch).map(|_| stream(addr, "/v1/completions", body(16, tokens)));
        let streams = futures_util::future::join_all(runs).await;
        for s in &streams {
            assert_eq!(s.token_times().len(), tokens as usize);
        }
        tpot.push(median(streams.iter().map(|s| s.tpot()).collect()));
    }
    eprintln!(
        "TPOT (2 ms + 0.2 ms/seq), batch 1/8/32: {:.2} / {:.2} / {:.2} ms",
        ms(tpot[0]),
        ms(tpot[1]),
        ms(tpot[2])
    );
    // Simulated: 2.2, 3.6, 8.4 ms. Steps are chained on deadlines, so a first token
    // delivered late (up to 5 ms) shortens the measured mean a little, never more.
    assert!(tpot[2] >= Duration::from_micros(8000), "{tpot:?}");
    assert!(tpot[0] < tpot[1] && tpot[1] < tpot[2], "{tpot:?}");
    assert!(tpot[2] > tpot[0] * 2, "{tpot:?}");
}

/// Output tokens per second for `concurrency` requests sent at once, and the queues seen
/// while they run.
async fn throughput(addr: SocketAddr, concurrency: usize, prompt: u32, tokens: u32) -> (f64, Page) {
    let start = Instant::now();
    let runs = (0..concurrency).map(|_| stream(addr, "/v1/completions", body(prompt, tokens)));
    let scrape = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Page::parse(&get(addr, "/metrics").await.body)
    };
    let (streams, page) = tokio::join!(futures_util::future::join_all(runs), scrape);
    let elapsed = start.elapsed().as_secs_f64();
    let total: usize = streams.iter().map(|s| s.token_times().len()).sum();
    assert_eq!(total, concurrency * tokens as usize);
    (total as f64 / elapsed, page)
}

#[tokio::test]
async fn throughput_saturates_at_the_max_batch() {
    let _one = MEASURING.lock().await;
    let engine = EngineConfig { max_batch: 8, step_base_us: 2000.0, step_per_seq_us: 100.0, ..fast_engine() };
    let addr = spawn(config(engine)).await;
    let mut thr = Vec::new();
    for c in [1, 4, 8, 16, 32] {
        let (t, page) = throughput(addr, c, 16, 60).await;
        let running = page.value("vllm:num_requests_running", &[]);
        let waiting = page.value("vllm:num_requests_waiting", &[]);
        assert!(running <= 8.0, "c={c}: {running} running");
        if c == 32 {
            assert_eq!(running, 8.0);
            assert!(waiting >= 16.0, "c=32: {waiting} waiting");
        }
        thr.push(t);
    }
    eprintln!("output tokens/s at concurrency 1/4/8/16/32 with max batch 8: {thr:.0?}");
    // Simulated: 476, 1667, 2857, 2857, 2857 tokens/s.
    assert!(thr[1] > thr[0] * 2.0, "{thr:?}");
    assert!(thr[2] > thr[1] * 1.3, "{thr:?}");
    assert!(thr[3] < thr[2] * 1.25, "{thr:?}");
    assert!(thr[4] < thr[2] * 1.25, "{thr:?}");
}

#[tokio::test]
async fn throughput_saturates_when_the_kv_cache_is_full() {
    let _one = MEASURING.lock().await;
    // Each request (1000-token prompt, 24 output tokens) holds 63 blocks when admitted and
    // 64 at the end: 256 blocks run four at once, whatever the max batch.
    let engine = EngineConfig {
        max_batch: 64,
        kv_tokens: 4096,
        prefill_us_per_token: 2.0,
        step_base_us: 2000.0,
        step_per_seq_us: 100.0,
        ..fast_engine()
    };
    let addr = spawn(config(engine)).await;
    let mut thr = Vec::new();
    for c in [1, 4, 16] {
        let (t, page) = throughput(addr, c, 1000, 24).await;
        if c == 16 {
            assert_eq!(page.value("vllm:num_requests_running", &[]), 4.0);
            assert!(page.value("vllm:num_requests_waiting", &[]) >= 8.0);
            assert!(page.value("vllm:kv_cache_usage_perc", &[]) > 0.95);
        }
        thr.push(t);
    }
    let page = Page::parse(&get(addr, "/metrics").await.body);
    assert_eq!(page.value("vllm:num_preemptions_total", &[]), 0.0);
    eprintln!("output tokens/s at concurrency 1/4/16 with KV for 4: {thr:.0?}");
    assert!(thr[1] > thr[0] * 2.0, "{thr:?}");
    assert!(thr[2] < thr[1] * 1.25, "{thr:?}");
}

#[tokio::test]
async fn a_slower_instance_is_proportionally_slower() {
    let _one = MEASURING.lock().await;
    let fast = spawn(config(fast_engine())).await;
    let slow = spawn(config(EngineConfig { speed: 3.0, ..fast_engine() })).await;
    // The least of five answers each: the simulated times are a floor, and a busy machine only
    // adds to them, so the least is the one nearest the simulated figure.
    let (mut f_ttft, mut f_tpot, mut s_ttft, mut s_tpot) = (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        let f = stream(fast, "/v1/completions", body(500, 30)).await;
        let s = stream(slow, "/v1/completions", body(500, 30)).await;
        (f_ttft, f_tpot) = (f_ttft.min(f.ttft()), f_tpot.min(f.tpot()));
        (s_ttft, s_tpot) = (s_ttft.min(s.ttft()), s_tpot.min(s.tpot()));
    }
    eprintln!(
        "speed 1 vs 3 (least of 5): TTFT {:.1} vs {:.1} ms, TPOT {:.2} vs {:.2} ms",
        ms(f_ttft),
        ms(s_ttft),
        ms(f_tpot),
        ms(s_tpot)
    );
    // Simulated: TTFT 6.05 vs 18.15 ms, TPOT 1.05 vs 3.15 ms (less 5 ms / 29 of slack).
    assert!(s_ttft > f_ttft * 3 / 2, "TTFT");
    assert!(s_tpot > f_tpot * 3 / 2, "TPOT");
    assert!(s_tpot >= Duration::from_micros(2900));
}
