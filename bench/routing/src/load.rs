//! The load run: open loop (Poisson arrivals, latency from the scheduled arrival) or closed loop
//! (a fixed number of requests always outstanding, to find an instance's capacity).
//!
//! Everything runs on one current-thread runtime: the requests are tasks on a `LocalSet` and
//! share one hyper keep-alive pool (HTTP/1.1; a new connection opens only when every pooled one
//! is busy, as a client library would do). Pin the process to its own core.
//!
//! **No coordinated omission.** In the open loop every request has a due time fixed before the
//! run. When the runtime is late to send it, or the pool must open a connection first, that time
//! still counts: TTFT and end-to-end latency run from the due time, not from the send.
//!
//! **Nothing survives unseen.** After the last arrival the run waits up to `drain` for the
//! requests still streaming. A request still open then is reported as `unfinished`, and its
//! latency enters the percentiles as the time it had waited so far: a lower bound, flagged by
//! `censored` in the summary, so an overloaded target never looks better by losing its slowest
//! requests.

use crate::dist::Dist;
use crate::policy::{Backend, Chooser, Policy};
use crate::pool::{self, Pool};
use crate::schedule::{Arrival, poisson};
use crate::sse::TokenCounter;
use crate::stats::summary;
use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The response header Vane sets on an answer shared from an identical request's upstream call.
pub const COALESCED_HEADER: &str = "vane-coalesced";

/// Longest run (warm-up plus measured window) the generator accepts.
pub const MAX_SPAN: Duration = Duration::from_secs(60);
/// Longest wait for the last requests after the arrivals end.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Poisson arrivals at this many requests per second, spread over the targets in turn.
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// This many requests outstanding against each target, each sent when the previous ends.
    Closed {
        /// Requests outstanding per target.
        concurrency: usize,
    },
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Completion endpoints (`http://127.0.0.1:PORT/v1/completions`), loopback only.
    pub targets: Vec<Uri>,
    /// The `model` field sent.
    pub model: String,
    /// Open or closed loop.
    pub mode: Mode,
    /// Requests due (open) or completed (closed) before this are not measured.
    pub warmup: Duration,
    /// Measured window after the warm-up.
    pub duration: Duration,
    /// After the last arrival, how long to wait for open requests (open loop).
    pub drain: Duration,
    /// Prompt lengths, in tokens (sent as 4 characters per token, the simulator's count).
    pub prompt: Dist,
    /// Output lengths (`max_tokens`).
    pub output: Dist,
    /// Seed of the schedule and the lengths.
    pub seed: u64,
    /// Where to write one CSV row per request.
    pub csv: Option<PathBuf>,
    /// How each open-loop request's target is chosen: `targets` in turn, or by the client
    /// among `backends` (then `targets` are the backends' completion URLs, in the same order).
    pub policy: Policy,
    /// The backends of a client-side policy.
    pub backends: Vec<Backend>,
    /// How long the oracle waits for a backend's `/state`.
    pub state_timeout: Duration,
    /// Open loop: draw every request from a pool of this many distinct prompts (0: every
    /// request has its own sizes and the same text for the same size), see [`crate::pool`].
    pub distinct: usize,
    /// The pool's Zipf exponent (0: uniform).
    pub zipf: f64,
    /// A `temperature` to send in every request (none: the field is left out).
    pub temperature: Option<f64>,
    /// Ask for the stream's closing usage event (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl Config {
    /// Refuses what this generator must not do: unbounded runs and non-loopback targets.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.targets.is_empty() {
            bail!("no target URL");
        }
        if self.policy != Policy::InTurn && self.backends.iter().map(|b| &b.url).ne(self.targets.iter()) {
            bail!("a client-side policy sends to its backends: the targets must be their URLs");
        }
        for t in &self.targets {
            let host = t.host().context("target URL has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!("{t}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed");
            }
            if t.scheme_str() != Some("http") {
                bail!("{t}: only http:// is supported");
            }
        }
        if self.warmup + self.duration > MAX_SPAN {
            bail!("warm-up + duration is {:?}; at most {MAX_SPAN:?} is allowed", self.warmup + self.duration);
        }
        if self.duration.is_zero() {
            bail!("duration must be positive");
        }
        if self.drain > MAX_DRAIN {
            bail!("drain is {:?}; at most {MAX_DRAIN:?} is allowed", self.drain);
        }
        if self.distinct > 0 && matches!(self.mode, Mode::Closed { .. }) {
            bail!("a prompt pool is for the open loop (--rate)");
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            bail!("temperature must be a finite number >= 0");
        }
        match self.mode {
            Mode::Open { rate } if !(rate > 0.0 && rate <= 10_000.0) => bail!("rate must be in (0, 10000] per second"),
            Mode::Closed { concurrency } if !(1..=4096).contains(&concurrency) => {
                bail!("concurrency must be in 1..=4096")
            }
            _ => Ok(()),
        }
    }
}

/// The prompt sent for `tokens` tokens: the simulator counts 4 characters as one token.
fn prompt_text(filler: &str, tokens: u32) -> &str {
    &filler[..4 * tokens as usize]
}

/// The open-loop schedule, and each arrival's prompt number when the requests come from a pool.
fn open_schedule(cfg: &Config, rate: f64) -> anyhow::Result<(Vec<Arrival>, Option<Vec<u32>>)> {
    let mut schedule = poisson(rate, cfg.warmup + cfg.duration, &cfg.prompt, &cfg.output, cfg.seed);
    if cfg.distinct == 0 {
        return Ok((schedule, None));
    }
    let pool = Pool::new(cfg.distinct, cfg.zipf, &cfg.prompt, &cfg.output, cfg.seed)?;
    let ids = pool.assign(&mut schedule, cfg.seed);
    Ok((schedule, Some(ids)))
}

/// The prompt of an arrival: pool prompt `id`'s text, or filler of its length.
fn arrival_prompt(filler: &str, a: &Arrival, id: Option<u32>) -> String {
    match id {
        Some(k) => pool::prompt_text(k, a.prompt_tokens, filler),
        None => prompt_text(filler, a.prompt_tokens).to_owned(),
    }
}

/// Writes the open-loop schedule's requests as JSON lines (`prompt`, `output_tokens_count`), the
/// columns benchmark clients such as guidellm read, so they replay the same request sizes.
pub fn emit_dataset(cfg: &Config, path: &std::path::Path) -> anyhow::Result<usize> {
    cfg.check()?;
    let Mode::Open { rate } = cfg.mode else { bail!("a dataset is made from the open-loop schedule (--rate)") };
    let (schedule, ids) = open_schedule(cfg, rate)?;
    let filler = "tok ".repeat(cfg.prompt.max() as usize);
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for (i, a) in schedule.iter().enumerate() {
        let id = ids.as_ref().map(|v| v[i]);
        let line = json!({ "prompt": arrival_prompt(&filler, a, id), "output_tokens_count": a.output_tokens });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(schedule.len())
}

/// What happened to one request. Times are from the run's start.
#[derive(Clone, Debug, Default)]
struct Record {
    target: usize,
    /// Due time (open loop) or send time (closed loop).
    due: Duration,
    /// How late the send was.
    lag: Duration,
    prompt: u32,
    max_tokens: u32,
    status: u16,
    /// First token, from `due`.
    ttft: Option<Duration>,
    /// End of the stream (or failure), from `due`.
    e2e: Option<Duration>,
    tokens: u64,
    error: Option<&'static str>,
    finished: bool,
    /// How long a client-side policy took to choose, from `due`.
    chose: Option<Duration>,
    /// The oracle's estimate of the end-to-end time where it sent the request, µs from the choice.
    estimate_us: Option<f64>,
    /// The pool prompt it sent, if the requests come from a pool.
    prompt_id: Option<u32>,
    /// Its answer came with `vane-coalesced: true`: shared from an identical request's call.
    coalesced: bool,
}

type Records = Rc<RefCell<Vec<Record>>>;

/// Tokens received per target while inside the measured window (closed loop): the throughput,
/// counted as it streams rather than by the requests that happened to end inside the window.
#[derive(Debug)]
struct Window {
    from: Instant,
    to: Instant,
    tokens: RefCell<Vec<u64>>,
}
/// The run's HTTP client: one keep-alive pool for every request.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Runs the load and returns the JSON summary.
pub fn run(cfg: &Config) -> anyhow::Result<Value> {
    cfg.check()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let summary = rt.block_on(local.run_until(drive(cfg)))?;
    // Requests still open are dropped with the runtime.
    drop(local);
    drop(rt);
    Ok(summary)
}

async fn drive(cfg: &Config) -> anyhow::Result<Value> {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(conn);
    let model = serde_json::to_string(&cfg.model)?;
    let filler: Rc<str> = "tok ".repeat(cfg.prompt.max() as usize).into();
    let temperature = match cfg.temperature {
        Some(t) => format!(r#","temperature":{}"#, serde_json::to_string(&t)?),
        None => String::new(),
    };
    let usage = if cfg.include_usage { r#","stream_options":{"include_usage":true}"# } else { "" };
    let body = move |a: &Arrival, id: Option<u32>| -> Bytes {
        let prompt = arrival_prompt(&filler, a, id);
        format!(
            r#"{{"model":{model},"prompt":"{prompt}","max_tokens":{}{temperature},"stream":true{usage}}}"#,
            a.output_tokens
        )
        .into()
    };
    let records: Records = Rc::default();
    let span = cfg.warmup + cfg.duration;
    match cfg.mode {
        Mode::Open { rate } => {
            let (schedule, ids) = open_schedule(cfg, rate)?;
            let outstanding = Rc::new(Cell::new(0usize));
            let idle = Rc::new(Notify::new());
            let start = Instant::now() + Duration::from_millis(20);
            let chooser = (cfg.policy != Policy::InTurn).then(|| {
                Rc::new(Chooser::new(
                    cfg.policy,
                    cfg.backends.clone(),
                    client.clone(),
                    start,
                    cfg.state_timeout,
                    cfg.seed,
                    (cfg.prompt.mean_estimate(), cfg.output.mean_estimate()),
                ))
            });
            let targets: Rc<[Uri]> = cfg.targets.clone().into();
            for (i, a) in schedule.iter().enumerate() {
                let due = start + a.at;
                tokio::time::sleep_until(due).await;
                let target = i % cfg.targets.len();
                let prompt_id = ids.as_ref().map(|v| v[i]);
                records.borrow_mut().push(Record {
                    target,
                    due: a.at,
                    lag: Instant::now().saturating_duration_since(due),
                    prompt: a.prompt_tokens,
                    max_tokens: a.output_tokens,
                    prompt_id,
                    ..Record::default()
                });
                outstanding.set(outstanding.get() + 1);
                let (client, body, records, targets) =
                    (client.clone(), body(a, prompt_id), Rc::clone(&records), Rc::clone(&targets));
                let (outstanding, idle, chooser) = (Rc::clone(&outstanding), Rc::clone(&idle), chooser.clone());
                let (prompt, max_tokens) = (a.prompt_tokens, a.output_tokens);
                tokio::task::spawn_local(async move {
                    let target = match &chooser {
                        None => target,
                        Some(c) => {
                            let (t, estimate) = c.choose(prompt, max_tokens).await;
                            let mut r = records.borrow_mut();
                            r[i].target = t;
                            r[i].chose = Some(Instant::now().saturating_duration_since(due));
                            r[i].estimate_us = estimate;
                            c.begin(t, prompt, max_tokens);
                            t
                        }
                    };
                    send_one(&client, targets[target].clone(), body, due, i, &records, None).await;
                    if let Some(c) = &chooser {
                        c.end(target);
                    }
                    outstanding.set(outstanding.get() - 1);
                    if outstanding.get() == 0 {
                        idle.notify_one();
                    }
                });
            }
            let deadline = start + span.max(schedule.last().map_or(Duration::ZERO, |a| a.at)) + cfg.drain;
            while outstanding.get() > 0 {
                tokio::select! {
                    _ = idle.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let cut = deadline.saturating_duration_since(start).min(Instant::now().saturating_duration_since(start));
            let recs = records.borrow().clone();
            write_csv(cfg, &recs, cut)?;
            Ok(open_summary(cfg, rate, &recs, cut))
        }
        Mode::Closed { concurrency } => {
            let start = Instant::now();
            let end = start + span;
            let next_id = Rc::new(Cell::new(0usize));
            let window =
                Rc::new(Window { from: start + cfg.warmup, to: end, tokens: RefCell::new(vec![0; cfg.targets.len()]) });
            for (t, uri) in cfg.targets.iter().enumerate() {
                for w in 0..concurrency {
                    let mut rng = fastrand::Rng::with_seed(cfg.seed ^ ((t as u64) << 32 | w as u64));
                    let (client, uri, records, next_id) =
                        (client.clone(), uri.clone(), Rc::clone(&records), Rc::clone(&next_id));
                    let (prompt, output, body, window) =
                        (cfg.prompt.clone(), cfg.output.clone(), body.clone(), Rc::clone(&window));
                    let mixed = prompt.is_mix() || output.is_mix();
                    tokio::task::spawn_local(async move {
                        while Instant::now() < end {
                            let sent = Instant::now();
                            // A mixture's class is shared by the prompt and the output.
                            let class = if mixed { rng.f64() } else { 0.0 };
                            let prompt_tokens = prompt.sample_in_class(class, &mut rng);
                            let a = Arrival {
                                at: sent - start,
                                prompt_tokens,
                                output_tokens: output.sample_in_class(class, &mut rng),
                            };
                            let i = next_id.get();
                            next_id.set(i + 1);
                            records.borrow_mut().push(Record {
                                target: t,
                                due: a.at,
                                prompt: a.prompt_tokens,
                                max_tokens: a.output_tokens,
                                ..Record::default()
                            });
                            send_one(&client, uri.clone(), body(&a, None), sent, i, &records, Some((&window, t))).await;
                        }
                    });
                }
            }
            tokio::time::sleep_until(end).await;
            let recs = records.borrow().clone();
            write_csv(cfg, &recs, span)?;
            let window_tokens = window.tokens.borrow().clone();
            Ok(closed_summary(cfg, concurrency, &recs, &window_tokens))
        }
    }
}

/// Sends one streaming completion and records its first token, its end and its token count as
/// they happen (so a request cut off by the drain deadline keeps what it had).
async fn send_one(
    client: &HttpClient,
    uri: Uri,
    body: Bytes,
    due: Instant,
    i: usize,
    records: &Records,
    window: Option<(&Window, usize)>,
) {
    let since = |now: Instant| now.saturating_duration_since(due);
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::new(body))
        .expect("a POST with a JSON body is a valid request");
    let fail = |kind: &'static str| {
        let mut r = records.borrow_mut();
        let rec = &mut r[i];
        rec.error = Some(kind);
        rec.e2e = Some(since(Instant::now()));
        rec.finished = true;
    };
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return fail(if e.is_connect() { "connect" } else { "http" }),
    };
    let status = resp.status();
    let coalesced = resp.headers().get(COALESCED_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    {
        let mut r = records.borrow_mut();
        r[i].status = status.as_u16();
        r[i].coalesced = coalesced;
    }
    let mut body = resp.into_body();
    if !status.is_success() {
        while let Some(Ok(_)) = body.frame().await {}
        // A refusal for load (429) is counted apart from other errors.
        return fail(if status == http::StatusCode::TOO_MANY_REQUESTS { "429" } else { "status" });
    }
    let mut counter = TokenCounter::default();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => return fail("body"),
        };
        if let Some(data) = frame.data_ref() {
            let n = counter.push(data);
            if n > 0 {
                let now = Instant::now();
                if let Some((w, t)) = window
                    && now >= w.from
                    && now <= w.to
                {
                    w.tokens.borrow_mut()[t] += n;
                }
                let mut r = records.borrow_mut();
                let rec = &mut r[i];
                if rec.ttft.is_none() {
                    rec.ttft = Some(since(now));
                }
                rec.tokens += n;
            }
        }
    }
    if !counter.done() {
        return fail("incomplete");
    }
    let mut r = records.borrow_mut();
    r[i].e2e = Some(since(Instant::now()));
    r[i].finished = true;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn open_summary(cfg: &Config, rate: f64, recs: &[Record], cut: Duration) -> Value {
    let measured: Vec<&Record> = recs.iter().filter(|r| r.due >= cfg.warmup).collect();
    let ok: Vec<&&Record> = measured.iter().filter(|r| r.finished && r.error.is_none()).collect();
    let unfinished: Vec<&&Record> = measured.iter().filter(|r| !r.finished).collect();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for r in measured.iter().filter(|r| r.error.is_some()) {
        *kinds.entry(r.error.unwrap_or("?")).or_default() += 1;
    }
    let errors: u64 = kinds.values().sum();
    // A cut-off request enters with what it had waited by the cut: a lower bound.
    let open_for = |r: &Record| cut.saturating_sub(r.due);
    let ttft: Vec<f64> = ok
        .iter()
        .map(|r| ms(r.ttft.unwrap_or_default()))
        .chain(unfinished.iter().map(|r| ms(r.ttft.unwrap_or_else(|| open_for(r)))))
        .collect();
    let e2e: Vec<f64> =
        ok.iter().map(|r| ms(r.e2e.unwrap_or_default())).chain(unfinished.iter().map(|r| ms(open_for(r)))).collect();
    let tpot: Vec<f64> = ok
        .iter()
        .filter(|r| r.tokens > 1)
        .filter_map(|r| Some(ms(r.e2e?.saturating_sub(r.ttft?)) / (r.tokens - 1) as f64))
        .collect();
    let tokens: u64 = measured.iter().map(|r| r.tokens).sum();
    let last_end = measured
        .iter()
        .map(|r| if r.finished { r.due + r.e2e.unwrap_or_default() } else { cut })
        .max()
        .unwrap_or(cfg.warmup);
    let served_for = last_end.saturating_sub(cfg.warmup).as_secs_f64().max(1e-9);
    let lag: Vec<f64> = measured.iter().map(|r| ms(r.lag)).collect();
    let lag = summary(lag);
    let chose: Vec<f64> = measured.iter().filter_map(|r| r.chose.map(ms)).collect();
    let mut per_target = vec![0u64; cfg.targets.len()];
    for r in &measured {
        per_target[r.target] += 1;
    }
    // Answers shared from another request's call (followers) and the rest (leaders, or every
    // request when nothing was shared), over the requests served.
    let role = |followers: bool| {
        let rs: Vec<&&&Record> = ok.iter().filter(|r| r.coalesced == followers).collect();
        json!({
            "ok": rs.len(),
            "ttft_ms": summary(rs.iter().map(|r| ms(r.ttft.unwrap_or_default())).collect()),
            "e2e_ms": summary(rs.iter().map(|r| ms(r.e2e.unwrap_or_default())).collect()),
        })
    };
    let distinct_sent = measured.iter().filter_map(|r| r.prompt_id).collect::<std::collections::BTreeSet<u32>>().len();
    json!({
        "mode": "open",
        "rate_target": rate,
        "rate_achieved": round3(measured.len() as f64 / cfg.duration.as_secs_f64()),
        "warmup_s": cfg.warmup.as_secs_f64(),
        "duration_s": cfg.duration.as_secs_f64(),
        "seed": cfg.seed,
        "prompt_tokens": cfg.prompt.to_string(),
        "output_tokens": cfg.output.to_string(),
        "prompt_tokens_mean": round3(cfg.prompt.mean_estimate()),
        "output_tokens_mean": round3(cfg.output.mean_estimate()),
        "requests": measured.len(),
        "ok": ok.len(),
        "errors": errors,
        "error_kinds": kinds,
        "unfinished": unfinished.len(),
        "censored": !unfinished.is_empty(),
        "ttft_ms": summary(ttft),
        "e2e_ms": summary(e2e),
        "tpot_ms": summary(tpot),
        "output_tokens_received": tokens,
        "tokens_per_s": round3(tokens as f64 / served_for),
        "served_s": round3(served_for),
        "send_lag_ms": { "p99": lag["p99"], "max": lag["max"] },
        "policy": cfg.policy.to_string(),
        "choice_ms": summary(chose),
        "requests_per_target": per_target,
        "rejected_429": kinds.get("429").copied().unwrap_or(0),
        "warmup_requests": recs.len() - measured.len(),
        "pool": { "distinct": cfg.distinct, "zipf": cfg.zipf, "distinct_sent": distinct_sent },
        "temperature": cfg.temperature,
        "coalesced": role(true),
        "not_coalesced": role(false),
    })
}

fn closed_summary(cfg: &Config, concurrency: usize, recs: &[Record], window_tokens: &[u64]) -> Value {
    let window = cfg.duration.as_secs_f64();
    let span = cfg.warmup + cfg.duration;
    let in_window = |r: &Record| {
        r.finished && r.error.is_none() && r.e2e.is_some_and(|e| r.due + e >= cfg.warmup && r.due + e <= span)
    };
    let per_target: Vec<Value> = cfg
        .targets
        .iter()
        .enumerate()
        .map(|(t, uri)| {
            let done: Vec<&Record> = recs.iter().filter(|r| r.target == t && in_window(r)).collect();
            let errors = recs.iter().filter(|r| r.target == t && r.error.is_some()).count();
            let tokens: u64 = done.iter().map(|r| r.tokens).sum();
            let streamed = window_tokens.get(t).copied().unwrap_or(0);
            json!({
                "target": uri.to_string(),
                "completed": done.len(),
                "errors": errors,
                "requests_per_s": round3(done.len() as f64 / window),
                "tokens_per_s": round3(streamed as f64 / window),
                "mean_prompt_tokens": round3(done.iter().map(|r| r.prompt as f64).sum::<f64>() / done.len().max(1) as f64),
                "mean_output_tokens": round3(tokens as f64 / done.len().max(1) as f64),
                "ttft_ms": summary(done.iter().filter_map(|r| r.ttft.map(ms)).collect()),
                "e2e_ms": summary(done.iter().filter_map(|r| r.e2e.map(ms)).collect()),
            })
        })
        .collect();
    let done = recs.iter().filter(|r| in_window(r)).count();
    let tokens: u64 = window_tokens.iter().sum();
    json!({
        "mode": "closed",
        "concurrency_per_target": concurrency,
        "warmup_s": cfg.warmup.as_secs_f64(),
        "duration_s": window,
        "seed": cfg.seed,
        "prompt_tokens": cfg.prompt.to_string(),
        "output_tokens": cfg.output.to_string(),
        "prompt_tokens_mean": round3(cfg.prompt.mean_estimate()),
        "output_tokens_mean": round3(cfg.output.mean_estimate()),
        "completed": done,
        "errors": recs.iter().filter(|r| r.error.is_some()).count(),
        "requests_per_s": round3(done as f64 / window),
        "tokens_per_s": round3(tokens as f64 / window),
        "targets": per_target,
        "note": "tokens_per_s counts tokens streamed inside the window; requests_per_s counts requests that ended inside it",
    })
}

/// One row per request. A request still open at `cut` has `unfinished` as its error and, as in
/// the summary, the time it had waited by then as its latency (a lower bound).
fn write_csv(cfg: &Config, recs: &[Record], cut: Duration) -> anyhow::Result<()> {
    let Some(path) = &cfg.csv else { return Ok(()) };
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    writeln!(
        w,
        "id,target,due_s,lag_ms,prompt_tokens,max_tokens,status,ttft_ms,e2e_ms,tokens,error,measured,choice_ms,estimate_ms,prompt_id,coalesced"
    )?;
    let opt = |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.3}", ms(d)));
    for (i, r) in recs.iter().enumerate() {
        let measured = match cfg.mode {
            Mode::Open { .. } => r.due >= cfg.warmup,
            Mode::Closed { .. } => r.e2e.is_some_and(|e| r.due + e >= cfg.warmup),
        };
        let error = if r.finished { r.error.unwrap_or("") } else { "unfinished" };
        let waited = cut.saturating_sub(r.due);
        let (ttft, e2e) = if r.finished { (r.ttft, r.e2e) } else { (r.ttft.or(Some(waited)), Some(waited)) };
        writeln!(
            w,
            "{i},{},{:.6},{:.3},{},{},{},{},{},{},{error},{},{},{},{},{}",
            r.target,
            r.due.as_secs_f64(),
            ms(r.lag),
            r.prompt,
            r.max_tokens,
            r.status,
            opt(ttft),
            opt(e2e),
            r.tokens,
            measured as u8,
            opt(r.chose),
            r.estimate_us.filter(|e| e.is_finite()).map_or(String::new(), |e| format!("{:.3}", e / 1e3)),
            r.prompt_id.map_or(String::new(), |k| k.to_string()),
            r.coalesced as u8
        )?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> Config {
        Config {
            targets: vec![url.parse().unwrap()],
            model: "m".into(),
            mode: Mode::Open { rate: 10.0 },
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            prompt: Dist::Fixed(10),
            output: Dist::Fixed(10),
            seed: 1,
            csv: None,
            policy: Policy::InTurn,
            backends: vec![],
            state_timeout: Duration::from_millis(50),
            distinct: 0,
            zipf: 1.0,
            temperature: None,
            include_usage: false,
        }
    }

    #[test]
    fn refuses_unbounded_or_remote_runs() {
        assert!(cfg("http://127.0.0.1:9/v1/completions").check().is_ok());
        assert!(cfg("http://localhost:9/v1/completions").check().is_ok());
        assert!(cfg("http://[::1]:9/v1/completions").check().is_ok());
        assert!(cfg("http://10.0.0.1:9/v1/completions").check().is_err());
        assert!(cfg("http://example.com/v1/completions").check().is_err());
        let mut c = cfg("http://127.0.0.1:9/");
        c.duration = Duration::from_secs(56);
        assert!(c.check().is_err(), "61 s span");
        let mut c = cfg("http://127.0.0.1:9/");
        c.drain = Duration::from_secs(61);
        assert!(c.check().is_err());
        let mut c = cfg("http://127.0.0.1:9/");
        c.mode = Mode::Open { rate: 0.0 };
        assert!(c.check().is_err());
        let mut c = cfg("http://127.0.0.1:9/");
        c.mode = Mode::Closed { concurrency: 4 };
        c.distinct = 100;
        assert!(c.check().is_err(), "a prompt pool in the closed loop");
        let mut c = cfg("http://127.0.0.1:9/");
        c.temperature = Some(-1.0);
        assert!(c.check().is_err());
    }

    fn rec(due: u64, ttft: u64, e2e: Option<u64>, tokens: u64, error: Option<&'static str>) -> Record {
        Record {
            due: Duration::from_millis(due),
            ttft: Some(Duration::from_millis(ttft)),
            e2e: e2e.map(Duration::from_millis),
            tokens,
            error,
            finished: e2e.is_some(),
            ..Record::default()
        }
    }

    #[test]
    fn open_summary_counts_unfinished_as_lower_bounds() {
        let c = cfg("http://127.0.0.1:9/");
        let shared = Record { coalesced: true, prompt_id: Some(3), ..rec(7_000, 200, Some(2_000), 10, None) };
        let recs = vec![
            rec(1_000, 5, Some(50), 10, None), // warm-up: not measured
            Record { prompt_id: Some(3), ..rec(6_000, 100, Some(1_000), 10, None) },
            shared,
            rec(8_000, 50, Some(60), 0, Some("status")),
            rec(9_000, 1, Some(2), 0, Some("429")),
            rec(30_000, 300, None, 4, None), // cut off at 45 s: waited 15 s
        ];
        let s = open_summary(&c, 10.0, &recs, Duration::from_secs(45));
        assert_eq!(s["requests"], 5);
        assert_eq!(s["ok"], 2);
        assert_eq!(s["errors"], 2);
        assert_eq!(s["error_kinds"]["status"], 1);
        assert_eq!(s["rejected_429"], 1);
        assert_eq!(s["requests_per_target"], json!([5]));
        assert_eq!(s["unfinished"], 1);
        assert_eq!(s["censored"], true);
        assert_eq!(s["e2e_ms"]["max"], 15_000.0);
        assert_eq!(s["ttft_ms"]["max"], 300.0);
        assert_eq!(s["output_tokens_received"], 24);
        // (1000 - 100) / 9 and (2000 - 200) / 9
        assert_eq!(s["tpot_ms"]["p50"], 100.0);
        assert_eq!(s["served_s"], 40.0);
        // One answer was shared: the follower's figures apart from the other served request's.
        assert_eq!(s["coalesced"]["ok"], 1);
        assert_eq!(s["coalesced"]["e2e_ms"]["p50"], 2_000.0);
        assert_eq!(s["not_coalesced"]["ok"], 1);
        assert_eq!(s["not_coalesced"]["ttft_ms"]["p50"], 100.0);
        assert_eq!(s["pool"]["distinct_sent"], 1);
    }
}
