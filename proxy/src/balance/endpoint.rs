//! Per-endpoint state the balancer reads: peak-EWMA latency, requests in flight, health.
//!
//! The state outlives config reloads: a new snapshot reuses the `Arc<Endpoint>` of every address
//! it still has, so a reload neither forgets latency nor un-ejects a dead endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vane_route::balance::{self, CostWeights, Ewma, LoadInputs, PeakEwma, Prior, Tokens};
use vane_route::config::{Algorithm, Protocol};
use vane_route::health::{EjectionPolicy, Health, Outcome};
use vane_route::orca::LoadReport;
use vane_route::table::Settings;

mod flight;

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
    pub pool: Arc<crate::client::ConnPool>,
    /// How to call it over mTLS, when it is meshed and this proxy has an identity.
    pub mesh: Option<crate::client::Mesh>,
    /// The identity it must present, when the discovery stream says it is meshed.
    peer: Option<Arc<str>>,
    in_flight: AtomicU32,
    /// The sum of the start times (process clock, ns) of the requests in flight: with their
    /// count, how long they have been running on average.
    started_sum_ns: AtomicU64,
    /// Requests ever started here (wrapping), to tell a frozen load report from an idle endpoint.
    started: AtomicU32,
    /// When the endpoint joined (process clock; 0 for one of the proxy's first config): its
    /// slow start runs from then, or from the end of its last ejection.
    joined_ns: u64,
    stats: Mutex<Stats>,
    load_stream: std::sync::atomic::AtomicBool,
    /// Streamed answers in flight that have had their first token.
    streaming: AtomicU32,
    /// When the last token of any of them came (process clock).
    last_token_ns: AtomicU64,
    /// Tokens the requests in flight have received so far (each counting at most its backend's
    /// typical answer less one).
    in_flight_tokens: AtomicU64,
    /// The requests in flight that said how many tokens they ask for, and the sum of the tokens
    /// they are expected to stream.
    expecting: AtomicU32,
    expected_sum: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct ReportCheck {
    in_flight_at_report: u32,
    changed_ns: u64,
    started_at_change: u32,
}

#[derive(Debug)]
struct Stats {
    rtt: PeakEwma,
    /// How long response bodies take from first byte to end (generation time for a stream).
    body: Ewma,
    /// Time per output token of streamed answers, sampled while they stream.
    token: Ewma,
    health: Health,
    /// The endpoint's last load report and when its figures were read (process clock).
    reported: Option<(LoadReport, u64)>,
    /// How far the report agrees with what this proxy sees: requests it had in flight there when
    /// the report came, when the report's figures last changed, and the start count then.
    report_check: ReportCheck,
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
    /// Slow-start window (zero: none).
    pub slow_start: Duration,
}

impl Endpoint {
    /// A fresh endpoint: until its first answers it reads as its backend's typical figures.
    /// `joined_ns` starts its slow start (0: it was there from the start, no slow start).
    pub fn new(addr: SocketAddr, protocol: Protocol, joined_ns: u64) -> Endpoint {
        let authority = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            addr,
            protocol,
            authority,
            pool: Arc::default(),
            mesh: None,
            peer: None,
            load_stream: false.into(),
            streaming: AtomicU32::new(0),
            last_token_ns: AtomicU64::new(0),
            in_flight_tokens: AtomicU64::new(0),
            expecting: AtomicU32::new(0),
            expected_sum: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            started_sum_ns: AtomicU64::new(0),
            started: AtomicU32::new(0),
            joined_ns,
            stats: Mutex::new(Stats {
                rtt: PeakEwma::new(crate::now_ns()),
                body: Ewma::new(crate::now_ns()),
                token: Ewma::new(crate::now_ns()),
                health: Health::default(),
                reported: None,
                report_check: ReportCheck::default(),
                penalty_until_ns: 0,
            }),
        }
    }

    /// The same endpoint, meshed: it must present `peer`, and is called with `mesh` (mTLS) when
    /// this proxy has an identity.
    pub fn meshed(mut self, mesh: Option<crate::client::Mesh>, peer: Option<Arc<str>>) -> Endpoint {
        self.mesh = mesh;
        self.peer = peer;
        self
    }

    /// The identity it must present, if it is meshed.
    pub fn peer_identity(&self) -> Option<Arc<str>> {
        self.peer.clone()
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        crate::lock(&self.stats)
    }

    /// Requests in flight from this proxy.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is not ejected at `now_ns`.
    pub fn available(&self, now_ns: u64) -> bool {
        self.stats().health.available(now_ns)
    }

    /// The balancer's cost at `now_ns`, and the age of the reported load it used (if any).
    /// `prior` is the backend's typical figures, which the endpoint reads before its own first
    /// samples and decays towards between them.
    ///
    /// `draw` (uniform in 0..1) decides whether slow start holds the endpoint back this time;
    /// `own` is the output tokens the new request is expected to stream, when it says.
    pub fn cost(
        &self,
        now_ns: u64,
        settings: &Settings,
        policy: &Policy,
        prior: Prior,
        draw: f64,
        own: Option<f64>,
    ) -> (f64, Option<u64>) {
        let in_flight_age_ns = self.in_flight_age_ns(now_ns);
        let st = self.stats();
        let rtt_ns = st.rtt.get(now_ns, settings.ewma_decay, prior.rtt_ns);
        let body_ns = st.body.get(now_ns, settings.ewma_decay, prior.body_ns);
        let in_flight = self.in_flight();
        let mut load = LoadInputs { rtt_ns, body_ns, in_flight, in_flight_age_ns, ..Default::default() };
        let mut age = None;
        // The endpoint's own report of its time per token (a probe reading its model server's
        // counters, for every caller's streams) is used over this proxy's samples when believed.
        let mut reported_token = None;
        if matches!(policy.algorithm, Algorithm::P2c | Algorithm::P2cClassic) {
            if let Some((r, a, Some(q))) = self.believed(&st, now_ns, settings) {
                load.queue_depth = q;
                load.kv_use = r.kv_use.unwrap_or(0.0);
                reported_token = r.token_time;
                age = Some(a);
            }
            load.penalized = now_ns < st.penalty_until_ns;
        }
        if policy.algorithm == Algorithm::P2c && prior.tokens >= 2.0 {
            let token_ns = match reported_token {
                Some(t) => t.as_nanos() as f64,
                None => st.token.get(now_ns, settings.ewma_decay, prior.token_ns),
            };
            load.tokens = (token_ns > 0.0).then(|| Tokens {
                per_answer: prior.tokens,
                token_ns,
                stall_ns: self.stall_ns(now_ns),
                streaming: f64::from(self.streaming.load(Ordering::Relaxed)),
                in_flight_tokens: self.in_flight_tokens.load(Ordering::Relaxed) as f64,
                own: own.unwrap_or(0.0),
                in_flight_mean: self.in_flight_mean_tokens(prior.tokens),
            });
        }
        let since = self.joined_ns.max(st.health.ejected_until_ns());
        load.held = balance::slow_start_holds(balance::slow_start(since, now_ns, policy.slow_start), draw);
        let cost = balance::cost(&load, &policy.weights);
        tracing::trace!(target: "vane_proxy::balance", endpoint = %self.addr, cost, ?load, "cost");
        (cost, age)
    }

    /// The last load report that is not stale at `now_ns`, its age, and the waiting queue to
    /// believe from it (`None`: not to be used, [`balance::believed_queue`]).
    fn believed<'s>(
        &self,
        st: &'s Stats,
        now_ns: u64,
        settings: &Settings,
    ) -> Option<(&'s LoadReport, u64, Option<f64>)> {
        let (r, at) = st.reported.as_ref()?;
        let a = now_ns.saturating_sub(*at);
        if a > settings.load_staleness.as_nanos() as u64 {
            return Some((r, a, None));
        }
        let c = st.report_check;
        let unchanged = Duration::from_nanos(now_ns.saturating_sub(c.changed_ns));
        let started = self.started.load(Ordering::Relaxed).wrapping_sub(c.started_at_change);
        Some((r, a, balance::believed_queue(r.queue_depth, r.running, c.in_flight_at_report, unchanged, started)))
    }

    /// The endpoint's waiting queue at `now_ns` as its believed load report gives it (`None`: no
    /// report, or one not to be used): what load shedding reads.
    pub fn queue_depth(&self, now_ns: u64, settings: &Settings) -> Option<f64> {
        let st = self.stats();
        self.believed(&st, now_ns, settings).and_then(|(_, _, q)| q)
    }

    /// How the endpoint's load report is used at `now_ns` (for metrics): 1 as reported, 0.5 with
    /// its queue raised to this proxy's own requests it leaves out, 0 not at all (frozen or
    /// stale); `None` with no report.
    pub fn report_trust(&self, now_ns: u64, settings: &Settings) -> Option<f64> {
        let st = self.stats();
        let (r, _, q) = self.believed(&st, now_ns, settings)?;
        Some(match q {
            None => 0.0,
            Some(q) if q > r.queue_depth.unwrap_or(0.0) => 0.5,
            Some(_) => 1.0,
        })
    }

    /// The time per output token of streamed answers the cost uses, in seconds (for metrics):
    /// `None` before the backend has measured any.
    pub fn token_seconds(&self, now_ns: u64, decay: Duration, prior: Prior) -> Option<f64> {
        let t = self.stats().token.get(now_ns, decay, prior.token_ns);
        (t > 0.0).then_some(t / 1e9)
    }

    /// Records a load report received at `now_ns`.
    pub fn report(&self, r: LoadReport, now_ns: u64) {
        let age = r.age.map_or(0, |a| a.as_nanos() as u64);
        let in_flight = self.in_flight();
        let started = self.started.load(Ordering::Relaxed);
        let mut st = self.stats();
        let same = st
            .reported
            .as_ref()
            .is_some_and(|(p, _)| (p.queue_depth, p.running, p.kv_use) == (r.queue_depth, r.running, r.kv_use));
        let mut check = st.report_check;
        check.in_flight_at_report = in_flight;
        if !same {
            check.changed_ns = now_ns;
            check.started_at_change = started;
        }
        st.report_check = check;
        st.reported = Some((r, now_ns.saturating_sub(age)));
    }

    /// Whether this call is the first to claim the endpoint's load stream (whoever gets `true`
    /// starts following it; every later call gets `false`).
    pub fn claim_load_stream(&self) -> bool {
        !self.load_stream.swap(true, Ordering::Relaxed)
    }

    /// Makes the endpoint costlier until `until_ns` (after a 429 or 503 answer).
    pub fn penalize(&self, until_ns: u64) {
        let mut st = self.stats();
        st.penalty_until_ns = st.penalty_until_ns.max(until_ns);
    }

    /// Current latency estimate in seconds, as the cost uses it: time to first byte plus body
    /// streaming time, at least the mean age of the requests in flight (for metrics).
    pub fn rtt_seconds(&self, now_ns: u64, decay: Duration, prior: Prior) -> f64 {
        let age = self.in_flight_age_ns(now_ns);
        let st = self.stats();
        (st.rtt.get(now_ns, decay, prior.rtt_ns) + st.body.get(now_ns, decay, prior.body_ns)).max(age) / 1e9
    }

    /// Its time to first byte (peak-EWMA, decayed to now towards the backend's), once it has
    /// answered at least once.
    pub fn measured_first_byte_ns(&self, now_ns: u64, decay: Duration, prior: Prior) -> Option<f64> {
        let st = self.stats();
        st.rtt.measured().then(|| st.rtt.get(now_ns, decay, prior.rtt_ns))
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

    /// An attempt given up on (cancelled, its hedge won, its client gone) after `at_least`
    /// without a first byte: it takes at least that long here (see `PeakEwma::observe_at_least`).
    pub fn observe_at_least(&self, at_least: Duration, decay: Duration) {
        let now = crate::now_ns();
        self.stats().rtt.observe_at_least(at_least, now, decay);
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
