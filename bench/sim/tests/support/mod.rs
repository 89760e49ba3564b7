//! Shared by the black-box tests: start a simulator in-process on 127.0.0.1:0 and talk to it
//! over real sockets with hyper's client.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use vane_sim::engine::EngineConfig;
use vane_sim::{Config, Sim};

/// Fast engine parameters: 1 ms steps at batch 1, cheap prefill, room for long prompts.
pub fn fast_engine() -> EngineConfig {
    EngineConfig {
        max_batch: 64,
        kv_tokens: 65_536,
        block_size: 16,
        max_batched_tokens: 8192,
        prefill_us_per_token: 10.0,
        step_base_us: 1000.0,
        step_per_seq_us: 50.0,
        speed: 1.0,
    }
}

/// A configuration on an ephemeral port around `engine`.
pub fn config(engine: EngineConfig) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        model: "sim-model".into(),
        max_model_len: engine.kv_tokens.min(16_384),
        engine,
        orca: false,
        burst: None,
        max_waiting: None,
        freeze: None,
        slow: None,
        stall: None,
    }
}

/// Starts a simulator on the current runtime and returns its address.
pub async fn spawn(config: Config) -> SocketAddr {
    let sim = Sim::bind(config).await.expect("bind");
    let addr = sim.local_addr().expect("local addr");
    tokio::spawn(sim.run(std::future::pending()));
    addr
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// A streamed answer: every SSE event with the time its frame arrived.
#[derive(Debug)]
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub sent_at: Instant,
    /// `(arrival, event payload after "data: ")`.
    pub events: Vec<(Instant, String)>,
    /// Number of body frames read.
    pub frames: usize,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Streamed {
    /// Arrival times of the events that carry a token (non-empty text or content).
    pub fn token_times(&self) -> Vec<Instant> {
        self.events.iter().filter(|(_, e)| token_of(e).is_some_and(|t| !t.is_empty())).map(|(t, _)| *t).collect()
    }

    /// Time from sending the request to the first token.
    pub fn ttft(&self) -> Duration {
        self.token_times()[0] - self.sent_at
    }

    /// Mean time between tokens after the first.
    pub fn tpot(&self) -> Duration {
        let t = self.token_times();
        assert!(t.len() >= 2, "need two tokens");
        (t[t.len() - 1] - t[0]) / (t.len() as u32 - 1)
    }
}

/// The token text of one SSE event, if it is a token event.
pub fn token_of(event: &str) -> Option<String> {
    let v: Value = serde_json::from_str(event).ok()?;
    let c = v["choices"].get(0)?;
    c["text"].as_str().or(c["delta"]["content"].as_str()).map(str::to_owned)
}

async fn connect(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    send
}

fn request(method: &str, addr: SocketAddr, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
    let b = Request::builder().method(method).uri(path).header("host", addr.to_string());
    match body {
        Some(v) => b.header("content-type", "application/json").body(Full::new(Bytes::from(v.to_string()))),
        None => b.body(Full::new(Bytes::new())),
    }
    .unwrap()
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, request("GET", addr, path, None)).await
}

pub async fn post(addr: SocketAddr, path: &str, body: Value) -> Answer {
    send(addr, request("POST", addr, path, Some(&body))).await
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let mut c = connect(addr).await;
    let resp = c.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8(body.to_vec()).expect("utf-8") }
}

/// Posts a streaming request and reads the whole stream, timing each frame.
pub async fn stream(addr: SocketAddr, path: &str, body: Value) -> Streamed {
    let mut c = connect(addr).await;
    let sent_at = Instant::now();
    let resp = c.send_request(request("POST", addr, path, Some(&body))).await.expect("response");
    let (parts, mut body) = resp.into_parts();
    let mut events = Vec::new();
    let mut frames = 0;
    let mut buf = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        let Some(data) = frame.data_ref() else { continue };
        let now = Instant::now();
        frames += 1;
        buf.push_str(std::str::from_utf8(data).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let payload = event.trim_end().strip_prefix("data: ").expect("data: event");
            events.push((now, payload.to_owned()));
        }
    }
    assert!(buf.is_empty(), "trailing bytes: {buf:?}");
    Streamed { status: parts.status, headers: parts.headers, sent_at, events, frames }
}

/// One sample of a Prometheus text page.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// A parsed page: samples plus the HELP and TYPE of each family.
#[derive(Debug, Default)]
pub struct Page {
    pub samples: Vec<Sample>,
    pub help: HashMap<String, String>,
    pub types: HashMap<String, String>,
}

impl Page {
    /// Parses Prometheus text exposition strictly enough to catch malformed lines.
    pub fn parse(text: &str) -> Page {
        let mut page = Page::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                page.help.insert(name.into(), help.into());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                page.types.insert(name.into(), kind.into());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                page.samples.push(parse_sample(line));
            }
        }
        page
    }

    /// The value of the one sample named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("bad line {line:?}"));
    let name = &line[..name_end];
    assert!(
        name.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())),
        "bad metric name {name:?}"
    );
    let mut labels = HashMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let close = inner.rfind('}').unwrap_or_else(|| panic!("unclosed labels {line:?}"));
        let mut s = &inner[..close];
        while !s.is_empty() {
            let (k, v) = s.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
            let mut value = String::new();
            let mut chars = v.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("bad escape in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label in {line:?}"),
                }
            };
            labels.insert(k.to_owned(), value);
            s = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
        }
        rest = &inner[close + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample { name: name.to_owned(), labels, value }
}

/// Parses an ORCA TEXT value into its named metrics.
pub fn orca(value: &str) -> HashMap<String, f64> {
    let rest = value.strip_prefix("TEXT ").expect("TEXT form");
    rest.split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            let k = k.strip_prefix("named_metrics.").expect("named metric");
            (k.to_owned(), v.parse().expect("number"))
        })
        .collect()
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
