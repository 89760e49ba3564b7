//! Per-endpoint state the balancer reads: peak-EWMA latency, requests in flight, health.
//!
//! The state outlives config reloads: a new snapshot reuses the `Arc<Endpoint>` of every address
//! it still has, so a reload neither forgets latency nor un-ejects a dead endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vane_route::balance::{self, CostWeights, Ewma, LoadInputs, PeakEwma};
use vane_route::config::{Algorithm, Protocol};
use vane_route::health::{EjectionPolicy, Health, Outcome};
use vane_route::orca::LoadReport;
use vane_route::table::Settings;

/// One endpoint (an `ip:port` of a backend).
#[derive(Debug)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Protocol spoken to it.
    pub protocol: Protocol,
    /// URI authority for requests to it (built once).
    pub authority: http::uri::Authority,
    /// Its connections.
    pub pool: Arc<crate::pool::ConnPool>,
    in_flight: AtomicU32,
    stats: Mutex<Stats>,
    load_stream: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Stats {
    rtt: PeakEwma,
    /// How long response bodies take from first byte to end (generation time for a stream).
    body: Ewma,
    health: Health,
    /// The endpoint's last load report and when its figures were read (process clock).
    reported: Option<(LoadReport, u64)>,
    /// A 429/503 answer makes the endpoint costlier until then.
    penalty_until_ns: u64,
}

/// How a backend weighs its endpoints (from the config, resolved per backend).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Endpoint choice.
    pub algorithm: Algorithm,
    /// Cost weights of reported load.
    pub weights: CostWeights,
}

impl Endpoint {
    /// A fresh endpoint with the configured default RTT.
    pub fn new(addr: SocketAddr, protocol: Protocol, default_rtt: Duration) -> Endpoint {
        let authority = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            addr,
            protocol,
            authority,
            pool: Arc::default(),
            load_stream: false.into(),
            in_flight: AtomicU32::new(0),
            stats: Mutex::new(Stats {
                rtt: PeakEwma::new(default_rtt, crate::now_ns()),
                body: Ewma::new(crate::now_ns()),
                health: Health::default(),
                reported: None,
                penalty_until_ns: 0,
            }),
        }
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        crate::lock(&self.stats)
    }

    /// Requests in flight from this proxy.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            ep: Arc::clone(self),
            conn: None,
            idle_timeout: Duration::ZERO,
            rtt_from: None,
            body_from: None,
        }
    }

    /// Whether the endpoint is not ejected at `now_ns`.
    pub fn available(&self, now_ns: u64) -> bool {
        self.stats().health.available(now_ns)
    }

    /// The balancer's cost at `now_ns`, and the age of the reported load it used (if any).
    pub fn cost(&self, now_ns: u64, settings: &Settings, policy: &Policy) -> (f64, Option<u64>) {
        let st = self.stats();
        let rtt_ns = st.rtt.get(now_ns, settings.ewma_decay);
        let body_ns = st.body.get(now_ns, settings.ewma_decay);
        let mut load = LoadInputs { rtt_ns, body_ns, in_flight: self.in_flight(), ..Default::default() };
        let mut age = None;
        if policy.algorithm == Algorithm::P2c {
            if let Some((r, at)) = &st.reported {
                let a = now_ns.saturating_sub(*at);
                if a <= settings.load_staleness.as_nanos() as u64 {
                    load.queue_depth = r.queue_depth.unwrap_or(0.0);
                    load.kv_use = r.kv_use.unwrap_or(0.0);
                    age = Some(a);
                }
            }
            load.penalized = now_ns < st.penalty_until_ns;
        }
        (balance::cost(&load, &policy.weights), age)
    }

    /// Records a load report received at `now_ns`.
    pub fn report(&self, r: LoadReport, now_ns: u64) {
        let age = r.age.map_or(0, |a| a.as_nanos() as u64);
        self.stats().reported = Some((r, now_ns.saturating_sub(age)));
    }

    /// Starts following the endpoint's load stream (once; the task ends when the endpoint is
    /// dropped from the config). Needs a running tokio runtime; does nothing without one.
    pub fn follow_load_stream(self: &Arc<Self>) {
        if self.load_stream.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(crate::load::follow(Arc::downgrade(self)));
        }
    }

    /// Makes the endpoint costlier until `until_ns` (after a 429 or 503 answer).
    pub fn penalize(&self, until_ns: u64) {
        let mut st = self.stats();
        st.penalty_until_ns = st.penalty_until_ns.max(until_ns);
    }

    /// Current latency estimate in seconds, as the cost uses it: time to first byte plus body
    /// streaming time (for metrics).
    pub fn rtt_seconds(&self, now_ns: u64, decay: Duration) -> f64 {
        let st = self.stats();
        (st.rtt.get(now_ns, decay) + st.body.get(now_ns, decay)) / 1e9
    }

    /// Whether the endpoint is ejected at `now_ns` (for metrics).
    pub fn ejected(&self, now_ns: u64) -> bool {
        !self.available(now_ns)
    }

    /// Records a response's timings: its time to the first body byte, and how long the body took
    /// from that byte to its end, capped at [`MAX_BODY_SAMPLE`] so that a long-lived stream (a
    /// watch, a gRPC feed) cannot mark an endpoint slow for long. One lock for both.
    pub fn observe(&self, first_byte: Option<Duration>, body: Option<Duration>, decay: Duration) {
        let now = crate::now_ns();
        let mut st = self.stats();
        if let Some(rtt) = first_byte {
            st.rtt.observe(rtt, now, decay);
        }
        if let Some(took) = body {
            st.body.observe(took.min(MAX_BODY_SAMPLE), now, decay);
        }
    }

    /// Records an outcome; logs an ejection.
    pub fn record(&self, outcome: Outcome, policy: &EjectionPolicy) {
        let now = crate::now_ns();
        if let Some(d) = self.stats().health.record(outcome, now, policy) {
            tracing::warn!(endpoint = %self.addr, ?outcome, "endpoint ejected for {d:?}");
        }
    }
}

/// The longest body streaming time one response adds to its endpoint's estimate.
pub const MAX_BODY_SAMPLE: Duration = Duration::from_secs(30);

/// Keeps a request counted in flight on its endpoint until dropped, and holds the HTTP/1.1
/// connection that carries its response.
#[derive(Debug)]
pub struct InFlightGuard {
    ep: Arc<Endpoint>,
    conn: Option<crate::pool::PooledConn>,
    idle_timeout: Duration,
    /// When the request was sent and the EWMA decay, until the first response byte is seen.
    rtt_from: Option<(std::time::Instant, Duration)>,
    /// When the first body byte came and the EWMA decay, until the body ends.
    body_from: Option<(std::time::Instant, Duration)>,
}

impl InFlightGuard {
    /// Attaches the connection to give back when the response ends cleanly, and (unless the
    /// answer was a refusal) when the request was sent, to time the first response byte.
    pub fn hold(
        &mut self,
        conn: Option<crate::pool::PooledConn>,
        idle_timeout: Duration,
        rtt_from: Option<(std::time::Instant, Duration)>,
    ) {
        self.conn = conn;
        self.idle_timeout = idle_timeout;
        self.rtt_from = rtt_from;
    }

    /// The first byte of the response body arrived: its latency is the endpoint's RTT sample.
    ///
    /// Internal: a streaming model server sends its headers at once and its first token after
    /// queueing and prefill, so the first *body* byte is what shows how loaded it is.
    pub fn first_byte(&mut self) {
        if let Some((sent, decay)) = self.rtt_from.take() {
            let now = std::time::Instant::now();
            self.ep.observe(Some(now.saturating_duration_since(sent)), None, decay);
            self.body_from = Some((now, decay));
        }
    }

    /// The response body ended cleanly: its streaming time is sampled (with the first-byte time
    /// too when the body came in one piece) and the connection goes back to the pool. A body
    /// that breaks off is not sampled.
    pub fn finish(mut self) {
        if let Some((sent, decay)) = self.rtt_from.take() {
            // The first byte and the end at once: the body took no time.
            self.ep.observe(Some(sent.elapsed()), Some(Duration::ZERO), decay);
        } else if let Some((first, decay)) = self.body_from.take() {
            self.ep.observe(None, Some(first.elapsed()), decay);
        }
        if let Some(c) = self.conn.take() {
            c.release(self.idle_timeout);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint among the available ones not in `tried` (a bit set of endpoint indexes),
/// by the backend's algorithm; when all untried ones are ejected, among those (panic mode). Returns the index and the age in nanoseconds of the reported load
/// the decision used, if any. `None` when no endpoint is available.
pub fn pick(
    endpoints: &[Arc<Endpoint>],
    tried: u64,
    settings: &Settings,
    policy: &Policy,
    rr: &AtomicUsize,
    rng: &mut fastrand::Rng,
) -> Option<(usize, Option<u64>)> {
    let now = crate::now_ns();
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let untried = |i: usize| i >= 64 || tried & (1 << i) == 0;
    // Panic mode (as in Envoy): when every untried endpoint is ejected, ejection is ignored, so a
    // backend whose only endpoint failed once is tried again rather than failing fast for seconds.
    // One pass over the endpoints' health, shared by the panic check and the fast path below.
    let usable = (0..n).filter(|&i| untried(i) && endpoints[i].available(now)).count();
    let panic = usable == 0;
    let eligible = |i: usize| untried(i) && (panic || endpoints[i].available(now));
    // No retry yet and every endpoint eligible (the common case).
    let all = tried == 0 && (panic || usable == n);
    match policy.algorithm {
        Algorithm::RoundRobin => {
            let start = rr.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| eligible(i)).map(|i| (i, None))
        }
        Algorithm::LeastRequest => {
            let offset = rng.usize(..n);
            (0..n)
                .map(|k| (offset + k) % n)
                .filter(|&i| eligible(i))
                .min_by_key(|&i| endpoints[i].in_flight())
                .map(|i| (i, None))
        }
        Algorithm::P2c | Algorithm::P2cLatency => {
            // Fast path: every endpoint eligible, no candidate list to allocate.
            let candidates: Vec<usize> = if all { Vec::new() } else { (0..n).filter(|&i| eligible(i)).collect() };
            let index = |j: usize| if all { j } else { candidates[j] };
            let m = if all { n } else { candidates.len() };
            // Remember the age of the reported load behind the two costs compared.
            let mut seen = [(usize::MAX, None); 2];
            let mut k = 0;
            let chosen = index(balance::p2c(m, rng.u64(..), rng.u64(..), |j| {
                let i = index(j);
                let (c, age) = endpoints[i].cost(now, settings, policy);
                if k < 2 {
                    seen[k] = (i, age);
                    k += 1;
                }
                c
            })?);
            let age = seen.iter().find(|s| s.0 == chosen).and_then(|s| s.1);
            Some((chosen, age))
        }
    }
}
