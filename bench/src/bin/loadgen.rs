//! Vane's load generator: open loop at a fixed rate (coordinated-omission
//! corrected) or closed loop, over HTTP/1.1 or h2c (prior knowledge).
//!
//! Open loop (default): request `i` is *scheduled* at `start + i / rate`. When
//! its time comes it waits for a free connection (HTTP/1.1) or stream slot
//! (h2c) and is sent; its latency is measured from the scheduled time, so time
//! spent queued behind a slow server counts (as in wrk2 or
//! `oha --latency-correction`). The dispatcher spins close to each send time
//! instead of relying on the 1 ms timer wheel, so the generator keeps one core
//! busy: pin it to its own core.
//!
//! Closed loop (`--closed`): every connection (× stream, for h2c) sends back to
//! back for the duration; latency is measured from the actual send.
//!
//! Every request sent counts in the latency figures, so a target cannot look
//! faster by failing requests or by leaving them unanswered:
//! - a 2xx answer enters with its latency;
//! - a failed request (non-2xx, transport error, timeout) enters as the
//!   per-request timeout (`--timeout`): no success came within it, and it ranks
//!   above every success (a success always takes less than the timeout);
//! - a request still open when the drain period ends (open loop) enters with
//!   the time it had been open by then, a lower bound (as `bench/routing` does
//!   for cut-off requests), and the figures are marked `censored`.
//!
//! The 2xx answers alone are reported too (`ok_*`).
//!
//! Prints one JSON line on stdout. Only loopback targets are accepted and runs
//! are limited to 20 s.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const MAX_DURATION_S: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// HTTP/1.1, one request at a time per connection.
    H1,
    /// HTTP/2 over cleartext with prior knowledge; `--streams` per connection.
    H2c,
}

/// Open-loop (fixed rate) or closed-loop load generator for loopback targets.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:18090/ (loopback only).
    url: String,
    /// Protocol.
    #[arg(long, value_enum, default_value = "h1")]
    proto: Proto,
    /// Number of TCP connections.
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Concurrent streams per connection (h2c only).
    #[arg(short = 'm', long, default_value_t = 1)]
    streams: usize,
    /// Requests per second (open loop; required unless --closed).
    #[arg(short = 'r', long)]
    rate: Option<f64>,
    /// Measured duration in seconds (at most 20).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Closed loop: every connection/stream sends back to back.
    #[arg(long)]
    closed: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// After the last scheduled send, how long to wait for in-flight requests (s).
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
}

#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// What every request needs: where to connect and what to send.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    proto: Proto,
    /// Absolute URI (h2c) and origin-form path (HTTP/1.1).
    abs_uri: Uri,
    path: Uri,
    authority: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Target {
    fn request(&self) -> Request<Empty<Bytes>> {
        let mut b = Request::get(match self.proto {
            Proto::H1 => self.path.clone(),
            Proto::H2c => self.abs_uri.clone(),
        });
        if self.proto == Proto::H1 {
            b = b.header(http::header::HOST, self.authority.clone());
        }
        for (k, v) in &self.headers {
            b = b.header(k.clone(), v.clone());
        }
        b.body(Empty::new()).expect("valid request")
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        Ok(match self.proto {
            Proto::H1 => {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H1(send)
            }
            Proto::H2c => {
                let (send, conn) = http2::Builder::new(TokioExecutor::new()).handshake(io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H2(send)
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Status,
    Error,
}

/// Sends one request on `slot` (reconnecting it first if its connection is
/// gone) and reads the whole response body.
async fn exchange(target: &Target, slot: &mut Option<Sender>) -> Outcome {
    if slot.as_ref().is_none_or(Sender::is_closed) {
        *slot = None;
        match tokio::time::timeout(target.timeout, target.connect()).await {
            Ok(Ok(s)) => *slot = Some(s),
            _ => return Outcome::Error,
        }
    }
    let sender = slot.as_mut().expect("connected above");
    let req = target.request();
    let fut = async {
        let resp = match sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<_, hyper::Error>(status)
    };
    match tokio::time::timeout(target.timeout, fut).await {
        Ok(Ok(status)) if status.is_success() => Outcome::Ok,
        Ok(Ok(_)) => Outcome::Status,
        Ok(Err(_)) | Err(_) => {
            // A timed-out HTTP/1.1 exchange leaves the connection unusable.
            if target.proto == Proto::H1 || sender.is_closed() {
                *slot = None;
            }
            Outcome::Error
        }
    }
}

/// What the requests came to. Everything sits under one lock so that a request
/// is either recorded or cut off at the end of the drain, never both or neither.
#[derive(Debug)]
struct Tally {
    /// Every request sent (ns): failures as the timeout, cut-off ones as the time open.
    all: Histogram<u64>,
    /// 2xx answers only (ns).
    ok_hist: Histogram<u64>,
    ok: u64,
    status_errors: u64,
    errors: u64,
    /// Requests still open when the drain ended (open loop).
    incomplete: u64,
    /// Open-loop requests scheduled and not yet recorded, by index.
    pending: HashSet<u64>,
}

#[derive(Debug)]
struct Stats {
    tally: Mutex<Tally>,
    /// How a failed request enters `all`.
    failed_as: Duration,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Stats {
    fn new(failed_as: Duration) -> Self {
        // Nanoseconds, 1 µs .. 120 s, 3 significant figures.
        let hist = || Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds");
        Stats {
            tally: Mutex::new(Tally {
                all: hist(),
                ok_hist: hist(),
                ok: 0,
                status_errors: 0,
                errors: 0,
                incomplete: 0,
                pending: HashSet::new(),
            }),
            failed_as,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().expect("stats")
    }

    /// Open loop: request `id` is scheduled (it counts from now on, queued or sent).
    fn schedule(&self, id: u64) {
        self.lock().pending.insert(id);
    }

    /// Records a finished request; `id` is the open-loop index (`None` in closed loop). A request
    /// already counted as incomplete at the end of the drain is not recorded again.
    fn record(&self, id: Option<u64>, outcome: Outcome, latency: Duration) {
        let mut t = self.lock();
        if let Some(id) = id
            && !t.pending.remove(&id)
        {
            return;
        }
        match outcome {
            Outcome::Ok => {
                t.ok += 1;
                t.ok_hist.saturating_record(ns(latency));
                t.all.saturating_record(ns(latency));
            }
            Outcome::Status | Outcome::Error => {
                if outcome == Outcome::Status {
                    t.status_errors += 1;
                } else {
                    t.errors += 1;
                }
                t.all.saturating_record(ns(latency.max(self.failed_as)));
            }
        }
    }

    /// End of the drain: every request still pending enters as the time it has been open (a
    /// lower bound on its latency) and is counted as incomplete.
    fn cut(&self, scheduled_at: impl Fn(u64) -> Instant) {
        let now = Instant::now();
        let mut t = self.lock();
        let pending = std::mem::take(&mut t.pending);
        for id in pending {
            t.incomplete += 1;
            t.all.saturating_record(ns(now.saturating_duration_since(scheduled_at(id))));
        }
    }

    fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Free connections (HTTP/1.1) or stream slots (h2c); `permits` counts them.
#[derive(Debug)]
struct Pool {
    permits: Semaphore,
    slots: Mutex<VecDeque<Option<Sender>>>,
}

fn parse_target(args: &Args) -> anyhow::Result<Target> {
    let uri: Uri = args.url.parse().context("parsing the URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported (h2c uses prior knowledge)");
    }
    let host = uri.host().context("URL without host")?;
    let ip: std::net::IpAddr = match host {
        "localhost" => [127, 0, 0, 1].into(),
        h => h.trim_matches(['[', ']']).parse().context("host must be an IP or localhost")?,
    };
    if !ip.is_loopback() {
        bail!("refusing non-loopback target {ip}: this generator only loads 127.0.0.1");
    }
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().context("URL without authority")?.as_str().to_string();
    let path: Uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse().context("path")?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').with_context(|| format!("header {h:?} lacks ':'"))?;
        headers.push((HeaderName::from_bytes(k.trim().as_bytes())?, HeaderValue::from_str(v.trim())?));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        proto: args.proto,
        abs_uri: uri.clone(),
        path,
        authority: HeaderValue::from_str(&authority)?,
        headers,
        timeout: Duration::from_secs_f64(args.timeout),
    })
}

/// Opens the connections and returns one slot per concurrent request.
async fn open_slots(target: &Target, conns: usize, streams: usize) -> anyhow::Result<Vec<Option<Sender>>> {
    let mut slots = Vec::with_capacity(conns * streams);
    for _ in 0..conns {
        let s = target.connect().await.with_context(|| format!("connecting to {}", target.addr))?;
        match s {
            Sender::H1(s) => slots.push(Some(Sender::H1(s))),
            Sender::H2(s) => {
                for _ in 0..streams {
                    slots.push(Some(Sender::H2(s.clone())));
                }
            }
        }
    }
    // Interleave h2c slots over connections: take slot k of connection 0, 1, ...
    if target.proto == Proto::H2c && conns > 1 {
        let mut inter = Vec::with_capacity(slots.len());
        let mut by_conn: Vec<VecDeque<Option<Sender>>> = (0..conns).map(|_| VecDeque::new()).collect();
        for (i, s) in slots.into_iter().enumerate() {
            by_conn[i / streams].push_back(s);
        }
        for _ in 0..streams {
            for q in by_conn.iter_mut() {
                inter.push(q.pop_front().expect("streams per connection"));
            }
        }
        slots = inter;
    }
    Ok(slots)
}

struct RunResult {
    sent: u64,
    elapsed: Duration,
    lag: Option<Histogram<u64>>,
}

async fn open_loop(
    target: Arc<Target>,
    slots: Vec<Option<Sender>>,
    rate: f64,
    duration: f64,
    drain: f64,
    stats: Arc<Stats>,
) -> RunResult {
    let n_slots = slots.len();
    let pool = Arc::new(Pool { permits: Semaphore::new(n_slots), slots: Mutex::new(slots.into_iter().collect()) });
    let total = (rate * duration).round() as u64;
    let interval = 1e9 / rate; // ns
    let mut lag = Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds");
    let start = Instant::now();
    let scheduled_at = move |i: u64| start + Duration::from_nanos((i as f64 * interval) as u64);
    let mut i: u64 = 0;
    while i < total {
        let now = Instant::now();
        let elapsed_ns = now.duration_since(start).as_nanos() as f64;
        let due = ((elapsed_ns / interval).floor() as u64 + 1).min(total);
        while i < due {
            let scheduled = scheduled_at(i);
            lag.saturating_record(ns(now.saturating_duration_since(scheduled)).max(1_000));
            let (target, pool, stats) = (target.clone(), pool.clone(), stats.clone());
            stats.schedule(i);
            let id = i;
            tokio::spawn(async move {
                let permit = pool.permits.acquire().await.expect("semaphore open");
                let mut slot = pool.slots.lock().expect("pool").pop_front().expect("permit implies a slot");
                let outcome = exchange(&target, &mut slot).await;
                stats.record(Some(id), outcome, scheduled.elapsed());
                pool.slots.lock().expect("pool").push_back(slot);
                drop(permit);
            });
            i += 1;
        }
        if i >= total {
            break;
        }
        let next = scheduled_at(i);
        let wait = next.saturating_duration_since(Instant::now());
        if wait > Duration::from_millis(2) {
            tokio::time::sleep(wait - Duration::from_millis(1)).await;
        } else {
            // Stay precise: a tokio timer would round up to the next millisecond.
            tokio::task::yield_now().await;
        }
    }
    let end_of_schedule = start + Duration::from_secs_f64(duration);
    let drain_until = Instant::now().max(end_of_schedule) + Duration::from_secs_f64(drain);
    while stats.pending() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    stats.cut(scheduled_at);
    let elapsed = start.elapsed().max(Duration::from_secs_f64(duration));
    RunResult { sent: total, elapsed, lag: Some(lag) }
}

async fn closed_loop(target: Arc<Target>, slots: Vec<Option<Sender>>, duration: f64, stats: Arc<Stats>) -> RunResult {
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    let mut tasks = Vec::with_capacity(slots.len());
    for mut slot in slots {
        let (target, stats, sent) = (target.clone(), stats.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                sent.fetch_add(1, Ordering::Relaxed);
                let outcome = exchange(&target, &mut slot).await;
                stats.record(None, outcome, t0.elapsed());
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    RunResult { sent: sent.load(Ordering::Relaxed), elapsed: start.elapsed(), lag: None }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        bail!("--duration must be in (0, {MAX_DURATION_S}] seconds");
    }
    if args.connections == 0 || args.connections > 2000 {
        bail!("--connections must be 1..=2000");
    }
    if args.streams == 0 || args.streams > 256 {
        bail!("--streams must be 1..=256");
    }
    if args.proto == Proto::H1 && args.streams != 1 {
        bail!("--streams applies to h2c only");
    }
    let rate = match (args.closed, args.rate) {
        (true, Some(_)) => bail!("--closed and --rate exclude each other"),
        (true, None) => None,
        (false, Some(r)) if r > 0.0 && r <= 1_000_000.0 => Some(r),
        (false, Some(_)) => bail!("--rate must be in (0, 1e6]"),
        (false, None) => bail!("give --rate RPS (open loop) or --closed"),
    };
    let target = Arc::new(parse_target(&args)?);
    let slots = open_slots(&target, args.connections, args.streams).await?;
    let stats = Arc::new(Stats::new(target.timeout));
    let res = match rate {
        Some(r) => open_loop(target.clone(), slots, r, args.duration, args.drain, stats.clone()).await,
        None => closed_loop(target.clone(), slots, args.duration, stats.clone()).await,
    };
    let t = stats.lock();
    let (ok, status_errors, errors, incomplete) = (t.ok, t.status_errors, t.errors, t.incomplete);
    let completed = ok + status_errors;
    let secs = res.elapsed.as_secs_f64();
    // p50, p90, p99, p99.9, max and mean of a histogram, in µs.
    let figures = |h: &Histogram<u64>| {
        if h.is_empty() {
            return [0.0; 6];
        }
        let q = |x: f64| us(h.value_at_quantile(x));
        [q(0.5), q(0.9), q(0.99), q(0.999), us(h.max()), (h.mean() / 100.0).round() / 10.0]
    };
    let [p50, p90, p99, p999, max, mean] = figures(&t.all);
    let [ok50, ok90, ok99, ok999, okmax, okmean] = figures(&t.ok_hist);
    let mut out = format!(
        "{{\"tool\":\"loadgen\",\"loop\":\"{}\",\"proto\":\"{}\",\"url\":\"{}\",\"connections\":{},\"streams\":{},\"rate\":{},\"duration_s\":{},\"elapsed_s\":{:.3},\"sent\":{},\"completed\":{},\"ok\":{},\"errors\":{},\"status_errors\":{},\"incomplete\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{},\"censored\":{},\"failed_as_us\":{},\"ok_p50_us\":{},\"ok_p90_us\":{},\"ok_p99_us\":{},\"ok_p999_us\":{},\"ok_max_us\":{},\"ok_mean_us\":{}",
        if rate.is_some() { "open" } else { "closed" },
        match args.proto {
            Proto::H1 => "h1",
            Proto::H2c => "h2c",
        },
        args.url.replace('"', ""),
        args.connections,
        args.streams,
        rate.map_or("null".to_string(), |r| format!("{r}")),
        args.duration,
        secs,
        res.sent,
        completed,
        ok,
        errors,
        status_errors,
        incomplete,
        ok as f64 / secs,
        p50,
        p90,
        p99,
        p999,
        max,
        mean,
        incomplete > 0,
        us(ns(stats.failed_as)),
        ok50,
        ok90,
        ok99,
        ok999,
        okmax,
        okmean,
    );
    if let Some(lag) = res.lag {
        out.push_str(&format!(
            ",\"send_lag_p99_us\":{},\"send_lag_max_us\":{}",
            us(lag.value_at_quantile(0.99)),
            us(lag.max())
        ));
    }
    out.push('}');
    println!("{out}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(run(args));
    // Do not wait for requests abandoned after the drain period.
    if let Err(e) = result {
        eprintln!("loadgen: {e:#}");
        std::process::exit(2);
    }
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_sent_counts_and_failures_never_look_fast() {
        let stats = Stats::new(Duration::from_secs(5));
        let start = Instant::now();
        let at = move |i: u64| start + Duration::from_millis(i);
        for id in 0..4 {
            stats.schedule(id);
        }
        stats.record(Some(0), Outcome::Ok, Duration::from_millis(1));
        // A fast refusal enters as the timeout, above every success.
        stats.record(Some(1), Outcome::Status, Duration::from_micros(50));
        stats.record(Some(2), Outcome::Error, Duration::from_micros(50));
        stats.cut(at);
        // Finishing after the cut does not count it twice.
        stats.record(Some(3), Outcome::Ok, Duration::from_millis(1));
        let t = stats.lock();
        assert_eq!((t.ok, t.status_errors, t.errors, t.incomplete), (1, 1, 1, 1));
        assert_eq!(t.all.len(), 4);
        assert_eq!(t.ok_hist.len(), 1);
        assert!(t.all.value_at_quantile(0.75) >= 4_990_000_000, "failures enter as the 5 s timeout");
        assert!(t.all.min() < 2_000_000, "the success and the cut-off request (open ~0 ms) stay low");
    }
}
