//! The HTTP side: an HTTP/1.1 server (vLLM's uvicorn speaks HTTP/1.1 only) that feeds the
//! engine loop and streams its tokens back.

use crate::Error;
use crate::api::{self, ApiError, Endpoint, GenRequest, Reply};
use crate::driver::{self, EngineHandle, Slow, Ticket};
use crate::engine::{ConfigError, Engine, EngineConfig};
use crate::metrics::{Freeze, ORCA_HEADER, Shared};
use bytes::Bytes;
use futures_util::stream;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest request body read. A 100k-token prompt is about 400 KB of text.
pub const MAX_BODY_BYTES: usize = 16 << 20;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Everything the simulator needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// The served model's name (responses, `/v1/models`, `model_name` label).
    pub model: String,
    /// Longest prompt + output accepted (vLLM `--max-model-len`); at most the KV cache.
    pub max_model_len: u32,
    /// The engine.
    pub engine: EngineConfig,
    /// Attach an ORCA `endpoint-load-metrics` header to every response.
    pub orca: bool,
    /// Background load, if any.
    pub burst: Option<Burst>,
    /// Answer 429 at once while this many requests wait (TGI's `max_concurrent_requests`
    /// style); `None`: the queue has no limit, as in vLLM.
    pub max_waiting: Option<usize>,
    /// Reported load (ORCA header, `/metrics` gauges) that freezes part of the time.
    pub freeze: Option<Freeze>,
    /// A slow phase after the start.
    pub slow: Option<Slow>,
    /// Requests held back before the engine sees them, for a share of the requests.
    pub stall: Option<Stall>,
}

/// Stalls: a share of the generation requests is held for `duration` before the engine takes
/// it in, so that its answer (head and first token) comes that much later, while the engine
/// and the load reports go on as if it had not arrived yet (a hung worker, a long GC pause).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// Share of the requests held, 0..=1.
    pub share: f64,
    /// How long each is held.
    pub duration: Duration,
    /// Which requests: the same seed stalls the same request numbers.
    pub seed: u64,
}

/// Background load: every `every`, `requests` sequences nobody reads join the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    /// Time between bursts.
    pub every: Duration,
    /// Sequences per burst.
    pub requests: u32,
    /// Prompt tokens of each.
    pub prompt_tokens: u32,
    /// Output tokens of each.
    pub output_tokens: u32,
}

/// A bound simulator, not yet serving.
#[derive(Debug)]
pub struct Sim {
    config: Config,
    listener: TcpListener,
}

#[derive(Debug)]
struct State {
    config: Config,
    engine: EngineHandle,
    requests: AtomicU64,
    started: Instant,
}

/// Aborts the background tasks when `run` ends, however it ends.
struct Tasks(Vec<JoinHandle<()>>);

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            model: "vane-sim".to_owned(),
            max_model_len: 16_384,
            engine: EngineConfig::default(),
            orca: false,
            burst: None,
            max_waiting: None,
            freeze: None,
            slow: None,
            stall: None,
        }
    }
}

impl Config {
    /// Checks that the simulator can run with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.model.is_empty() {
            return bad("the model name is empty".into());
        }
        if self.max_model_len < 2 {
            return bad("max model len must be at least 2".into());
        }
        let kv = self.engine.kv_tokens / self.engine.block_size * self.engine.block_size;
        if self.max_model_len > kv {
            return bad(format!(
                "max model len ({}) is larger than the KV cache ({kv} tokens): one request \
                 could never run",
                self.max_model_len
            ));
        }
        if self.max_waiting == Some(0) {
            return bad("max waiting must be at least 1".into());
        }
        if let Some(f) = &self.freeze
            && (f.on.is_zero() || f.off.is_zero())
        {
            return bad("a freeze needs an on and an off time > 0, as in 3s:2s".into());
        }
        if let Some(s) = &self.slow
            && !(s.speed.is_finite() && s.speed > 0.0)
        {
            return bad(format!("slow speed must be a finite number > 0, not {}", s.speed));
        }
        if let Some(st) = &self.stall
            && (!(0.0..=1.0).contains(&st.share) || st.duration.is_zero())
        {
            return bad(format!(
                "a stall needs a share in 0..=1 and a duration > 0, not {} and {:?}",
                st.share, st.duration
            ));
        }
        if let Some(b) = &self.burst {
            if b.every.is_zero() || b.requests == 0 {
                return bad("a burst needs a period > 0 and at least one request".into());
            }
            if b.prompt_tokens == 0
                || b.output_tokens == 0
                || u64::from(b.prompt_tokens) + u64::from(b.output_tokens) > u64::from(kv)
            {
                return bad(format!(
                    "burst requests of {} + {} tokens cannot run in a KV cache of {kv} tokens",
                    b.prompt_tokens, b.output_tokens
                ));
            }
        }
        Ok(())
    }
}

// === impl Stall ===

impl Stall {
    /// Whether request number `n` (counted from 1 as received) is held: a hash of `n` and the
    /// seed, mapped to 0..1, below `share`. Deterministic, and over many requests `share` of them.
    pub fn hits(&self, n: u64) -> bool {
        // splitmix64's finaliser: consecutive numbers give unrelated values.
        let mut z = n ^ self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.share
    }
}

// === impl Sim ===

impl Sim {
    /// Checks the configuration and binds the listener.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| Error::Bind { addr: config.listen, source })?;
        Ok(Self { config, listener })
    }

    /// The address it serves on (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Io)
    }

    /// Serves until `shutdown` completes. Open connections are left to the runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self { config, listener } = self;
        let engine = Engine::new(config.engine.clone())?;
        let load = engine.load();
        let shared = Arc::new(
            Shared::new(&config.model, config.engine.block_size, load.total_blocks).with_freeze(config.freeze),
        );
        let started = Instant::now();
        let (engine_handle, engine_loop) = driver::start(engine, shared, config.slow);
        let mut tasks = Tasks(vec![tokio::spawn(engine_loop)]);
        if let Some(burst) = config.burst {
            tasks.0.push(tokio::spawn(bursts(engine_handle.clone(), burst)));
        }
        let state = Arc::new(State { config, engine: engine_handle, requests: AtomicU64::new(0), started });

        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    // Internal: out of descriptors or a connection reset before accept;
                    // back off briefly instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn bursts(engine: EngineHandle, burst: Burst) {
    let mut tick = tokio::time::interval(burst.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        for _ in 0..burst.requests {
            engine.submit_background(burst.prompt_tokens, burst.output_tokens);
        }
    }
}

// === request handling ===

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let mut response = route(state, req).await;
    if state.config.orca
        && let Ok(v) = HeaderValue::from_str(&state.engine.shared().orca())
    {
        response.headers_mut().insert(ORCA_HEADER, v);
    }
    response
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let shared = state.engine.shared();
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/completions") => generate(state, Endpoint::Completions, req).await,
        (&Method::POST, "/v1/chat/completions") => generate(state, Endpoint::Chat, req).await,
        (&Method::GET, "/v1/models") => {
            json(StatusCode::OK, api::models(shared.model(), state.config.max_model_len, unix_now()))
        }
        (&Method::GET, "/metrics") => full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", shared.render()),
        (&Method::GET, "/health") => full(StatusCode::OK, "text/plain", String::new()),
        (&Method::GET, "/state") => {
            let engine = &state.config.engine;
            let speed = driver::speed_at(state.started.elapsed(), engine.speed, state.config.slow);
            json(StatusCode::OK, shared.state_json(engine, speed, state.config.max_waiting))
        }
        (_, "/v1/completions" | "/v1/chat/completions" | "/v1/models" | "/metrics" | "/health" | "/state") => {
            full(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n".into())
        }
        _ => full(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

async fn generate(state: &State, endpoint: Endpoint, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(&ApiError::bad_request(format!("cannot read the body: {e}"))),
    };
    let request = match admit(state, endpoint, &body) {
        Ok(request) => request,
        Err(e) => return error(&e),
    };
    let n = state.engine.shared().received();
    if let Some(stall) = state.config.stall
        && stall.hits(n)
    {
        // A client that leaves meanwhile drops this future: the engine never sees the request.
        tokio::time::sleep(stall.duration).await;
    }
    if let Some(limit) = state.config.max_waiting
        && state.engine.shared().load().waiting >= limit as u64
    {
        state.engine.shared().refused();
        let mut r = error(&ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("{limit} requests are already waiting; retry later"),
        });
        r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let Ok(ticket) = state.engine.submit(request.prompt_tokens, request.max_tokens) else {
        return error(&unavailable());
    };
    let seq = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let reply = Reply::new(endpoint, seq, state.engine.shared().model(), unix_now());
    if request.stream {
        return sse(stream_body(ticket, reply, request));
    }
    match ticket.finish().await {
        Ok(()) => json(StatusCode::OK, reply.complete(request.prompt_tokens, request.max_tokens)),
        Err(_) => error(&unavailable()),
    }
}

/// Parses the request and checks it against the served model and its context length.
fn admit(state: &State, endpoint: Endpoint, body: &[u8]) -> Result<GenRequest, ApiError> {
    let request = api::parse(endpoint, body)?;
    let model = state.engine.shared().model();
    if let Some(m) = &request.model
        && m != model
    {
        return Err(ApiError { status: StatusCode::NOT_FOUND, message: format!("The model `{m}` does not exist.") });
    }
    let total = u64::from(request.prompt_tokens) + u64::from(request.max_tokens);
    if total > u64::from(state.config.max_model_len) {
        return Err(ApiError::bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {total} \
             tokens ({} in the messages, {} in the completion). Please reduce the length of \
             the messages or completion.",
            state.config.max_model_len, request.prompt_tokens, request.max_tokens
        )));
    }
    Ok(request)
}

fn unavailable() -> ApiError {
    ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the engine dropped the request".into() }
}

/// One SSE event per token as the engine samples it, then the usage event if asked, then
/// `[DONE]`. Dropping the body (a client that left) drops the ticket, which aborts the
/// sequence.
fn stream_body(
    ticket: Ticket,
    reply: Reply,
    request: GenRequest,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    enum Phase {
        Tokens,
        Usage,
        Done,
        End,
    }
    let state = (ticket, reply, request, 0u32, 0u32, Phase::Tokens);
    stream::unfold(state, |(ticket, reply, request, mut sent, mut known, phase)| async move {
        let text = match phase {
            Phase::Tokens => {
                if sent == known {
                    // A dropped sequence ends the stream without [DONE], so the client sees
                    // an incomplete answer.
                    known = ticket.wait_past(sent).await.ok()?;
                }
                sent += 1;
                let text = reply.token_events(sent, request.max_tokens);
                let next = match (sent == request.max_tokens, request.include_usage) {
                    (false, _) => Phase::Tokens,
                    (true, true) => Phase::Usage,
                    (true, false) => Phase::Done,
                };
                return Some((frame(text), (ticket, reply, request, sent, known, next)));
            }
            Phase::Usage => reply.usage_event(request.prompt_tokens, request.max_tokens),
            Phase::Done => api::DONE.to_owned(),
            Phase::End => return None,
        };
        let next = match phase {
            Phase::Usage => Phase::Done,
            _ => Phase::End,
        };
        Some((frame(text), (ticket, reply, request, sent, known, next)))
    })
}

fn frame(text: String) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(text)))
}

fn sse(body: impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static) -> Response<Body> {
    let mut r = Response::new(UnsyncBoxBody::new(StreamBody::new(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    full(status, "application/json", body)
}

fn error(e: &ApiError) -> Response<Body> {
    json(e.status, e.body())
}

fn full(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_hit_their_share_deterministically() {
        let stall = |share| Stall { share, duration: Duration::from_secs(1), seed: 7 };
        assert!((1..=1000).all(|n| !stall(0.0).hits(n)));
        assert!((1..=1000).all(|n| stall(1.0).hits(n)));
        let hit = (1..=20_000).filter(|&n| stall(0.25).hits(n)).count();
        assert!((4_600..=5_400).contains(&hit), "{hit} of 20000 at 25 %");
        let a: Vec<bool> = (1..=200).map(|n| stall(0.3).hits(n)).collect();
        let b: Vec<bool> = (1..=200).map(|n| stall(0.3).hits(n)).collect();
        assert_eq!(a, b, "same seed, same requests");
        let other: Vec<bool> = (1..=200).map(|n| Stall { seed: 8, ..stall(0.3) }.hits(n)).collect();
        assert_ne!(a, other, "another seed, other requests");
        // Not in runs: hits are spread out, not every k-th request.
        let runs = a.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(runs > 40, "{runs} changes in 200");
    }

    #[test]
    fn a_stall_needs_a_share_and_a_duration() {
        let with = |share, ms| Config {
            stall: Some(Stall { share, duration: Duration::from_millis(ms), seed: 1 }),
            ..Config::default()
        };
        assert!(with(0.1, 500).validate().is_ok());
        assert!(with(1.5, 500).validate().is_err());
        assert!(with(-0.1, 500).validate().is_err());
        assert!(with(f64::NAN, 500).validate().is_err());
        assert!(with(0.1, 0).validate().is_err());
    }
}
