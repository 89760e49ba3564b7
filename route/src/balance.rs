//! Endpoint choice: power of two choices over a cost.
//!
//! The cost of an endpoint estimates how long a new request would take there. For answers that
//! stream tokens (the backend has seen streamed answers, and the endpoint's time per token is
//! known, measured or prior), it is the **token-aware finish estimate**:
//!
//! ```text
//! pause     = max(stall − token_time, 0)                 how much longer than a token the streams are silent
//! slower    = max(in_flight_age / (rtt + their_tokens × token_time + pause), 1)
//!                                                        how much longer than they should this proxy's requests there have run
//! answer    = (rtt + tokens × token_time + pause) × slower      one typical answer here, start to end
//! own       = (rtt + own_tokens × token_time + pause) × slower  the new request's own answer here
//! waiting   = in_flight − streaming                      this proxy's requests there not yet streaming
//! running   = max(streaming × tokens − in_flight_tokens, streaming) / tokens
//!                                                        what its streaming requests have still to stream, in answers
//! queued    = max(in_flight_weight × waiting, queue_weight × queue_depth)
//!                                                        requests waiting there, ours or reported
//! kv        = max(kv_use − KV_ROOM, 0) / (1 − KV_ROOM)   KV-cache pressure, 0 below half full
//! cost      = answer × (in_flight_weight × RUNNING_WEIGHT × running + queued + kv_weight × kv) + own
//! ```
//!
//! that is, the work ahead of the new request (the requests of this proxy's that are still to
//! start there, a share of those streaming, the endpoint's waiting queue) divided by the rate the
//! endpoint gets through answers, plus its own answer: its time to first token and its own
//! tokens at the endpoint's time per token.
//!
//! `own_tokens` is what the request itself asks for ([`expected_tokens`]: its `max_tokens`, as
//! read by [`crate::model::max_tokens_from_json`], times the share of what they ask for that the
//! backend's answers have streamed), or a typical answer's `tokens` when it does not say. A long
//! answer then goes where tokens are fastest even past a queue, and a short one where it starts
//! soonest: a slow replica takes the short requests when the others are busy, and the long
//! requests that would be the tail stay off it. Without it every request counts as a typical
//! one, whatever its length. `their_tokens` is the mean of the same figure over this proxy's
//! requests in flight there: the in-flight age is held against how long *those* answers should
//! take, since an endpoint that is given the long answers has older requests in flight without
//! being any slower (held against a typical answer, that made the fast replicas look slow once
//! the long answers went to them).
//!
//! This proxy's requests not yet streaming are also in the endpoint's reported waiting queue once
//! they have reached it, so the two are not added: the larger counts (the report may be older
//! than the latest requests, and it counts other callers' too). KV-cache use says how near the
//! server is to refusing new sequences a place; below half full it has room, and a busy replica
//! (whose many sequences use more of its cache) must not look dearer for it.
//!
//! A request that streams is running in the model server's batch: the new one will run beside
//! it, not after it, and what the batch costs each of its members is already in the measured
//! time per token. So a streaming request counts only as [`RUNNING_WEIGHT`] of its remaining
//! answer (one more sequence in a batch makes each step a little longer), while a request not yet
//! streaming (queued at the server, or in its prefill) counts whole: it will take a place and
//! pause every stream for its prefill first. A server that does not batch streams one answer at a
//! time, so its other requests are the not-yet-streaming ones and count whole, as serial service
//! would. Counting every request in flight as a whole answer (as the first form of this cost did)
//! made a busy fast replica look several times dearer than it is, and sent a replica three times
//! slower per token about 8 % of the requests at half load, where the soonest finish is never
//! there.

//!
//! - `rtt` is a **peak-EWMA** of the time to the first response byte ([`PeakEwma`]): queueing
//!   plus prefill, for a model server.
//! - `tokens` is the backend's typical number of output tokens (stream events) per answer.
//! - `token_time` is the endpoint's EWMA of the gap between tokens, sampled while its answers
//!   stream (from their second token on, milliseconds after they start, not when they end); a
//!   replica three times slower per token shows it at its first answer's second token.
//! - `stall` is how long the endpoint's open streams have gone without a token (0 when none is
//!   streaming). The part of it past one token's time is added once: a new request there waits
//!   at least that much longer, and an endpoint whose streams hang grows dearer with every
//!   instant of silence. It is not taken as the time of every token to come: a model server
//!   pauses its streams for a step whenever it prefills a newcomer's prompt (tens of
//!   milliseconds for a long one), and a busy replica, which takes the most newcomers, would
//!   then look several times slower than it is, and lose to a replica that is slower in truth.
//! - `in_flight_tokens` counts the tokens this proxy's outstanding requests there have received
//!   already (each counting at most `tokens − 1`), so a request about to finish weighs less than
//!   one just started.
//!
//! For answers that do not stream (or before the backend has seen a streamed answer) the cost is
//! the earlier form, which [`crate::config::Algorithm::P2cClassic`] keeps for every answer:
//!
//! ```text
//! cost = max(rtt + body, in_flight_age) × (in_flight_weight × in_flight + 1 + queue_weight × queue_depth + kv_weight × kv_use)
//!        (+ PENALIZED when penalized, or held back by slow start)
//! ```
//!
//! - an endpoint that joined (or came back from ejection) less than its backend's slow-start
//!   window ago competes for only a growing share of the decisions ([`slow_start_holds`]: the
//!   fraction of the window gone by, at least 10 %) and loses the others, so its first seconds
//!   cannot make it a sink.
//!
//! No unknown is free: an endpoint with no sample of its own reads its backend's typical figures
//! (the [`Prior`]), and its estimates decay towards that prior, not towards zero, while it gets
//! no traffic; and `in_flight_age`, the mean time its outstanding requests have been running,
//! is a floor under its latency, so a replica whose first answers are slow is seen as slow while
//! they are still running.
//!
//! - `rtt` jumps up to a slow sample at once and decays back slowly, so a slowing endpoint is
//!   avoided at once and an idle one drifts back to being tried (which is how a recovered
//!   endpoint regains traffic).
//! - `body` is a plain EWMA ([`Ewma`]) of how long response bodies take to stream, from their
//!   first byte to their end. It is about zero for ordinary answers; for a model server streaming
//!   tokens it is the generation time, known only once an answer has ended. Not a peak: one long
//!   answer must not mark an endpoint slow.
//! - `in_flight` counts this proxy's own outstanding requests to the endpoint.
//! - `queue_depth` and `kv_use` are what the endpoint reports about itself (a model server's
//!   waiting queue and KV-cache use); 0 when it reports nothing. A sidecar learns these from
//!   every response, so they stay fresh where a latency average would lag.
//! - an endpoint that just answered 429 or 503 is *penalized* for the `Retry-After` time: it loses
//!   every comparison with an endpoint that is not (a fast refusal must not look like a fast
//!   endpoint), and is compared normally with other penalized ones.
//!
//! [`p2c`] draws two distinct candidates and keeps the cheaper: nearly as good as
//! least-cost over all, without herding every proxy onto the same endpoint.

use std::time::Duration;

/// Weights of the reported load in the cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostWeights {
    /// Weight of each request this proxy has in flight to the endpoint (1 by default: the
    /// classic peak-EWMA × outstanding requests).
    pub in_flight: f64,
    /// Weight of each request waiting in the endpoint's own queue, relative to one of ours in flight.
    pub queue: f64,
    /// Weight of KV-cache use (0..1).
    pub kv: f64,
}

impl Default for CostWeights {
    fn default() -> Self {
        CostWeights { in_flight: 1.0, queue: 1.0, kv: 4.0 }
    }
}

/// Everything the cost looks at for one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadInputs {
    /// Peak-EWMA RTT in nanoseconds (already decayed to now).
    pub rtt_ns: f64,
    /// EWMA of the body streaming time in nanoseconds (already decayed to now).
    pub body_ns: f64,
    /// Requests this proxy has outstanding to the endpoint.
    pub in_flight: u32,
    /// How long, on average, those requests have been running (nanoseconds; 0 with none). An
    /// answer takes at least as long as it has already been running, so the latency term is never
    /// below this: an endpoint whose first requests are all still running after the others'
    /// finished is known to be slow before any of them ends.
    pub in_flight_age_ns: f64,
    /// Reported waiting requests (0 if unknown or stale).
    pub queue_depth: f64,
    /// Reported KV-cache use 0..1 (0 if unknown or stale).
    pub kv_use: f64,
    /// The endpoint recently answered 429/503 and asked for time.
    pub penalized: bool,
    /// Slow start holds the endpoint back for this decision ([`slow_start_holds`]): it joined,
    /// or came back from ejection, within its window, and this request fell outside its share.
    pub held: bool,
    /// The streamed answers' side ([`Tokens`]); `None` for answers that do not stream, or where
    /// the classic cost is asked for.
    pub tokens: Option<Tokens>,
}

/// What the token-aware cost reads about streamed answers (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tokens {
    /// The backend's typical output tokens per answer (used when at least 2).
    pub per_answer: f64,
    /// The endpoint's time per output token, nanoseconds (already decayed to now; used when above 0).
    pub token_ns: f64,
    /// This proxy's requests in flight there whose answer has started streaming.
    pub streaming: f64,
    /// How long the endpoint's open streams have gone without a token, nanoseconds (0 with none).
    pub stall_ns: f64,
    /// Tokens this proxy's requests in flight there have received so far.
    pub in_flight_tokens: f64,
    /// The output tokens the new request is expected to stream ([`expected_tokens`]); below 1
    /// (or not a number): unknown, a typical answer (`per_answer`).
    pub own: f64,
    /// The output tokens this proxy's requests in flight there are expected to stream, on
    /// average (those that said how many they ask for by it, the others as a typical answer);
    /// below 1: a typical answer. The in-flight age is held against an answer of this length.
    pub in_flight_mean: f64,
}

/// The output tokens a request that asks for at most `asked` is expected to stream, on a backend
/// whose answers have streamed `fill` of what they asked for (tokens streamed over tokens asked,
/// `None` before any answer that asked has ended): `asked × fill`, at least 1 and at most `asked`;
/// `asked` itself before any has ended (an upper bound: not free). `None` when the request asks
/// for no limit (its answer reads as a typical one).
pub fn expected_tokens(asked: Option<u32>, fill: Option<f64>) -> Option<f64> {
    let asked = f64::from(asked?);
    let fill = fill.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(1.0).min(1.0);
    Some((asked * fill).clamp(1.0_f64.min(asked), asked))
}

/// Added to a penalized endpoint's cost: more than any real cost (about 11 days in nanoseconds).
pub const PENALIZED: f64 = 1e15;

/// The endpoint's cost; lower is better (module docs).
pub fn cost(load: &LoadInputs, w: &CostWeights) -> f64 {
    let age = if load.in_flight_age_ns.is_finite() { load.in_flight_age_ns.max(0.0) } else { 0.0 };
    let queue = load.queue_depth.max(0.0);
    let kv = load.kv_use.clamp(0.0, 1.0);
    let reported = 1.0 + w.queue * queue + w.kv * kv;
    let base = match load.tokens.and_then(|t| finish_terms(load.rtt_ns, load.in_flight, &t)) {
        Some(Terms { answer, own, running, waiting, theirs }) => {
            let queued = (w.in_flight * waiting).max(w.queue * queue);
            let pressure = ((kv - KV_ROOM) / (1.0 - KV_ROOM)).max(0.0);
            // An endpoint slower than its figures say (its requests have run longer than their
            // answers should take there) is slower for every answer, by as much.
            let slower = (age / theirs.max(1.0)).max(1.0);
            let unit = (answer * slower).max(1.0);
            unit * (w.in_flight * RUNNING_WEIGHT * running + queued + w.kv * pressure) + own * slower
        }
        None => {
            let body = if load.body_ns.is_finite() { load.body_ns.max(0.0) } else { f64::MAX / 4.0 };
            let rtt = if load.rtt_ns.is_finite() { (load.rtt_ns + body).max(age).max(1.0) } else { f64::MAX / 4.0 };
            rtt * (w.in_flight * f64::from(load.in_flight) + reported)
        }
    };
    if load.penalized || load.held { base + PENALIZED } else { base }
}

/// The token-aware cost's terms ([`finish_terms`]), nanoseconds or answers.
struct Terms {
    /// One typical answer there.
    answer: f64,
    /// The new request's own answer there.
    own: f64,
    /// Answers still to stream by this proxy's streaming requests there.
    running: f64,
    /// This proxy's requests there not yet streaming.
    waiting: f64,
    /// The answer this proxy's requests in flight there should take, by their expected lengths.
    theirs: f64,
}

/// The token-aware cost's terms, or `None` when the figures do not allow it (fewer than 2
/// tokens per answer, no time per token, or a figure that is not a number).
fn finish_terms(rtt_ns: f64, in_flight: u32, t: &Tokens) -> Option<Terms> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    if !(ok(t.per_answer) && t.per_answer >= 2.0 && ok(t.token_ns) && t.token_ns > 0.0 && ok(rtt_ns)) {
        return None;
    }
    let pause = if ok(t.stall_ns) { (t.stall_ns - t.token_ns).max(0.0) } else { 0.0 };
    let length = |n: f64| rtt_ns + if ok(n) && n >= 1.0 { n } else { t.per_answer } * t.token_ns + pause;
    let n = f64::from(in_flight);
    let running = if ok(t.streaming) { t.streaming.min(n) } else { 0.0 };
    let streamed = if ok(t.in_flight_tokens) { t.in_flight_tokens } else { 0.0 };
    let running_left = (running * t.per_answer - streamed).max(running) / t.per_answer;
    Some(Terms {
        answer: length(t.per_answer),
        own: length(t.own),
        running: running_left,
        waiting: n - running,
        theirs: length(t.in_flight_mean),
    })
}

/// What a streaming request's remaining answer counts for in the token-aware cost's `ahead`
/// (module docs): the new request runs beside it in the batch, slowed a little by it.
pub const RUNNING_WEIGHT: f64 = 0.125;

/// The share of its KV cache a model server can use before the token-aware cost counts it
/// (module docs).
pub const KV_ROOM: f64 = 0.5;

/// The least share an endpoint in slow start gets, as Envoy's `min_weight_percent` (10 %).
pub const SLOW_START_MIN_SHARE: f64 = 0.1;

/// Slow start, as Envoy's (with aggression 1): an endpoint `progress` (0..1) into its window
/// weighs `progress` of a full one, at least [`SLOW_START_MIN_SHARE`].
pub fn slow_start_share(progress: f64) -> f64 {
    if progress.is_finite() { progress.clamp(SLOW_START_MIN_SHARE, 1.0) } else { 1.0 }
}

/// Whether slow start holds an endpoint back from one decision: with `progress` into its window
/// (`None`: past it) and `draw` uniform in 0..1, it competes only for [`slow_start_share`] of the
/// decisions and loses the rest, so its share of traffic grows with the window instead of waiting
/// for it to end (a cost multiplier would, under light load, hold it at nothing and then at all).
pub fn slow_start_holds(progress: Option<f64>, draw: f64) -> bool {
    progress.is_some_and(|p| draw >= slow_start_share(p))
}

/// How far into its slow-start `window` an endpoint is that started (joined, or came back from
/// ejection) at `since_ns`: `None` once past it (or with no window).
pub fn slow_start(since_ns: u64, now_ns: u64, window: Duration) -> Option<f64> {
    let elapsed = now_ns.saturating_sub(since_ns);
    let w = window.as_nanos() as u64;
    (w > 0 && elapsed < w).then(|| elapsed as f64 / w as f64)
}

/// A load report's figures that have not changed for this long, while at least
/// [`FROZEN_AFTER_REQUESTS`] of this proxy's requests started at the endpoint, are taken as frozen
/// (a stuck exporter, a probe that stopped scraping) and not used.
pub const FROZEN_AFTER: Duration = Duration::from_secs(2);

/// See [`FROZEN_AFTER`].
pub const FROZEN_AFTER_REQUESTS: u32 = 4;

/// The waiting-queue figure to use from a load report, by how well it agrees with what this
/// proxy sees itself; `None` when the report is not to be used at all.
///
/// - A report whose figures have been frozen ([`FROZEN_AFTER`] with [`FROZEN_AFTER_REQUESTS`]
///   requests started meanwhile) is not used: an endpoint whose exporter stuck at "idle" must not
///   keep attracting traffic, nor one stuck at "busy" keep losing it.
/// - A report that counts fewer requests at the endpoint (running + waiting) than this proxy alone
///   had in flight there when it came, less the one whose answer carries it, contradicts what the
///   proxy knows: the queue used is then at least the proxy's own requests the report does not
///   account for. (Without that allowance every report of a server that writes it before counting
///   its request read as one waiting, which costs a whole answer.)
pub fn believed_queue(
    queue: Option<f64>,
    running: Option<f64>,
    own_in_flight_at_report: u32,
    unchanged_for: Duration,
    started_since_change: u32,
) -> Option<f64> {
    if unchanged_for >= FROZEN_AFTER && started_since_change >= FROZEN_AFTER_REQUESTS {
        return None;
    }
    let q = queue.filter(|q| q.is_finite()).unwrap_or(0.0).max(0.0);
    Some(match running.filter(|r| r.is_finite()) {
        // The request whose answer carries the report is among this proxy's in flight, and a
        // server may write the report before it counts that request: one is not a contradiction.
        Some(r) => q.max(f64::from(own_in_flight_at_report.saturating_sub(1)) - r.max(0.0)),
        None => q,
    })
}

/// Two costs closer than this (relatively) are a tie: [`p2c`] then keeps its first, random,
/// draw, so that near-equal endpoints share instead of the one a little faster by chance winning
/// every comparison while nothing is in flight.
pub const NEAR_TIE: f64 = 0.1;

/// Power of two choices among `n` candidates. `r1` and `r2` are random draws; `cost_of(i)` gives
/// candidate `i`'s cost. Returns the index of the cheaper of two distinct candidates (the first on
/// a tie or a near-tie, [`NEAR_TIE`]), or `None` when `n == 0`.
pub fn p2c(n: usize, r1: u64, r2: u64, mut cost_of: impl FnMut(usize) -> f64) -> Option<usize> {
    match p2c_pair(n, r1, r2)? {
        (a, None) => Some(a),
        (a, Some(b)) => {
            let (ca, cb) = (cost_of(a), cost_of(b));
            if cb < ca * (1.0 - NEAR_TIE) { Some(b) } else { Some(a) }
        }
    }
}

/// The two distinct candidates [`p2c`] draws from `r1` and `r2` (the first alone when `n == 1`).
pub fn p2c_pair(n: usize, r1: u64, r2: u64) -> Option<(usize, Option<usize>)> {
    match n {
        0 => None,
        1 => Some((0, None)),
        _ => {
            let a = (r1 % n as u64) as usize;
            let mut b = (r2 % (n as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            Some((a, Some(b)))
        }
    }
}

/// `e^(-(now - stamp)/decay)`: how much of an estimate made at `stamp_ns` is left at `now_ns`.
fn decay_factor(stamp_ns: u64, now_ns: u64, decay: Duration) -> f64 {
    let elapsed = now_ns.saturating_sub(stamp_ns) as f64;
    let tau = decay.as_nanos().max(1) as f64;
    (-elapsed / tau).exp()
}

/// What an endpoint's estimates read before its first sample, and decay towards while it gets
/// none: its backend's typical figures (nanoseconds), or the configured default where the backend
/// has measured nothing either.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prior {
    /// Time to first body byte.
    pub rtt_ns: f64,
    /// Body streaming time.
    pub body_ns: f64,
    /// Time per output token of streamed answers (0: none measured).
    pub token_ns: f64,
    /// Output tokens per streamed answer (0: none measured).
    pub tokens: f64,
}

/// A backend's typical figures: plain time-decayed averages of every sample its endpoints gave,
/// which decay towards the configured default while none comes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackendPrior {
    rtt: Ewma,
    body: Ewma,
    token: Ewma,
    tokens: Ewma,
    /// Of answers whose request asked for at most so many tokens: tokens asked, and streamed.
    asked: Ewma,
    answered: Ewma,
}

impl BackendPrior {
    /// Nothing measured yet.
    pub fn new(now_ns: u64) -> BackendPrior {
        BackendPrior {
            rtt: Ewma::new(now_ns),
            body: Ewma::new(now_ns),
            token: Ewma::new(now_ns),
            tokens: Ewma::new(now_ns),
            asked: Ewma::new(now_ns),
            answered: Ewma::new(now_ns),
        }
    }

    /// Adds a streamed answer that ended after `streamed` tokens, whose request asked for at
    /// most `asked`.
    pub fn observe_fill(&mut self, asked: u32, streamed: u32, now_ns: u64, decay: Duration) {
        if asked > 0 {
            self.asked.observe_value(f64::from(asked), now_ns, decay);
            self.answered.observe_value(f64::from(streamed.min(asked)), now_ns, decay);
        }
    }

    /// Tokens streamed over tokens asked, over the answers whose request asked (`None` before
    /// one has ended): what [`expected_tokens`] scales a request's ask by.
    pub fn fill(&self) -> Option<f64> {
        let (a, s) = (self.asked.value()?, self.answered.value()?);
        (a > 0.0).then(|| s / a)
    }

    /// Adds a streamed answer's figures: a sample of its time per token, or (at its end) how
    /// many tokens it had.
    pub fn observe_stream(&mut self, token: Option<Duration>, tokens: Option<f64>, now_ns: u64, decay: Duration) {
        if let Some(t) = token {
            self.token.observe(t, now_ns, decay);
        }
        if let Some(n) = tokens.filter(|n| n.is_finite() && *n >= 0.0) {
            self.tokens.observe_value(n, now_ns, decay);
        }
    }

    /// Adds one response's figures (either may be missing).
    pub fn observe(&mut self, rtt: Option<Duration>, body: Option<Duration>, now_ns: u64, decay: Duration) {
        if let Some(r) = rtt {
            self.rtt.observe(r, now_ns, decay);
        }
        if let Some(b) = body {
            self.body.observe(b, now_ns, decay);
        }
    }

    /// The typical output tokens per streamed answer, once one has ended.
    pub fn tokens(&self) -> Option<f64> {
        self.tokens.value()
    }

    /// The prior at `now_ns`; `default` (the configured figures) where nothing was measured.
    pub fn get(&self, now_ns: u64, decay: Duration, default: Prior) -> Prior {
        Prior {
            rtt_ns: self.rtt.get(now_ns, decay, default.rtt_ns),
            body_ns: self.body.get(now_ns, decay, default.body_ns),
            token_ns: self.token.get(now_ns, decay, default.token_ns),
            // A figure of the workload, not of load: it does not decay.
            tokens: self.tokens.value().unwrap_or(default.tokens),
        }
    }
}

/// An estimate made at `stamp_ns`, decayed towards `prior_ns` for the time since.
fn towards(prior_ns: f64, estimate_ns: f64, stamp_ns: u64, now_ns: u64, decay: Duration) -> f64 {
    prior_ns + (estimate_ns - prior_ns) * decay_factor(stamp_ns, now_ns, decay)
}

/// Peak-EWMA estimate of an endpoint's latency, in nanoseconds, with time passed in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp_ns: u64,
    samples: u32,
}

impl PeakEwma {
    /// No sample yet: reads as the prior.
    pub fn new(now_ns: u64) -> PeakEwma {
        PeakEwma { estimate_ns: 0.0, stamp_ns: now_ns, samples: 0 }
    }

    /// The estimate, decayed towards `prior_ns` for the time since the last sample (`prior_ns`
    /// itself before the first).
    pub fn get(&self, now_ns: u64, decay: Duration, prior_ns: f64) -> f64 {
        if self.samples == 0 {
            return prior_ns;
        }
        towards(prior_ns, self.estimate_ns, self.stamp_ns, now_ns, decay)
    }

    /// Whether any sample has come.
    pub fn measured(&self) -> bool {
        self.samples > 0
    }

    /// A lower bound: an attempt given up on after `at_least` without an answer took at least
    /// that long. It raises a measured estimate it is above (as a slower sample would) and
    /// leaves a lower one, or one not measured yet, as it is: a bound says nothing about an
    /// endpoint being faster.
    pub fn observe_at_least(&mut self, at_least: Duration, now_ns: u64, decay: Duration) {
        if self.samples > 0 && at_least.as_nanos() as f64 > self.estimate_ns {
            self.observe(at_least, now_ns, decay);
        }
    }

    /// Adds a sample: a slower one replaces the estimate (peak), a faster one is averaged in by
    /// the time since the last sample, and at least by `1/n` for the n-th: an endpoint's first
    /// answer (a cold connection, a cold cache) does not keep it looking slow for a decay time.
    pub fn observe(&mut self, rtt: Duration, now_ns: u64, decay: Duration) {
        let rtt_ns = rtt.as_nanos() as f64;
        self.samples = self.samples.saturating_add(1);
        let weight = (1.0 - decay_factor(self.stamp_ns, now_ns, decay)).max(1.0 / f64::from(self.samples));
        self.estimate_ns = if self.samples == 1 || rtt_ns > self.estimate_ns {
            rtt_ns
        } else {
            self.estimate_ns + (rtt_ns - self.estimate_ns) * weight
        };
        self.stamp_ns = self.stamp_ns.max(now_ns);
    }
}

/// Time-decayed EWMA of a duration, in nanoseconds: each sample weighs in by how long it has
/// been since the last one (`1 - e^(-Δt/decay)`), and the estimate decays towards a prior while
/// no sample comes, like [`PeakEwma`]'s.
///
/// Until enough samples have come for the time weights to take over, each sample weighs at least
/// `1/n` (the n-th sample): the first sample is the estimate and the first few are averaged
/// equally. Without that, a fresh estimate would start at the prior and need a whole decay time to
/// reach the endpoint's real figure, during which a slow endpoint looks like the others.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    estimate_ns: f64,
    stamp_ns: u64,
    samples: u32,
}

impl Ewma {
    /// No sample yet: reads as the prior.
    pub fn new(now_ns: u64) -> Ewma {
        Ewma { estimate_ns: 0.0, stamp_ns: now_ns, samples: 0 }
    }

    /// The estimate, decayed towards `prior_ns` for the time since the last sample (`prior_ns`
    /// itself before the first).
    pub fn get(&self, now_ns: u64, decay: Duration, prior_ns: f64) -> f64 {
        if self.samples == 0 {
            return prior_ns;
        }
        towards(prior_ns, self.estimate_ns, self.stamp_ns, now_ns, decay)
    }

    /// The estimate as last sampled, not decayed (`None` before the first sample): for a figure
    /// of the workload, such as tokens per answer, which idle time does not change.
    pub fn value(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.estimate_ns)
    }

    /// Averages a sample in.
    pub fn observe(&mut self, sample: Duration, now_ns: u64, decay: Duration) {
        self.observe_value(sample.as_nanos() as f64, now_ns, decay);
    }

    /// Averages in a sample that is not a duration (a count); [`Ewma::get`] reads it back.
    pub fn observe_value(&mut self, sample: f64, now_ns: u64, decay: Duration) {
        self.samples = self.samples.saturating_add(1);
        let weight = (1.0 - decay_factor(self.stamp_ns, now_ns, decay)).max(1.0 / f64::from(self.samples));
        self.estimate_ns += (sample - self.estimate_ns) * weight;
        self.stamp_ns = self.stamp_ns.max(now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_bound_only_raises_a_measured_estimate() {
        let decay = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let mut e = PeakEwma::new(0);
        e.observe_at_least(ms(500), 1, decay);
        assert!(!e.measured(), "a bound alone is not a measure");
        e.observe(ms(80), 2, decay);
        e.observe_at_least(ms(20), 3, decay);
        assert!((e.get(3, decay, 0.0) - 80e6).abs() < 1e3, "a bound below the estimate says nothing");
        e.observe_at_least(ms(300), 4, decay);
        assert!((e.get(4, decay, 0.0) - 300e6).abs() < 1e3, "a bound above it raises it, as a peak does");
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn cost_table() {
        let w = CostWeights { in_flight: 1.0, queue: 1.0, kv: 4.0 };
        let base = LoadInputs { rtt_ns: 1e6, ..Default::default() };
        let cases = [
            (base, 1e6),
            (LoadInputs { in_flight: 3, ..base }, 4e6),
            (LoadInputs { queue_depth: 2.0, ..base }, 3e6),
            (LoadInputs { kv_use: 0.5, ..base }, 3e6),
            (LoadInputs { kv_use: 7.0, ..base }, 5e6), // clamped to 1
            (LoadInputs { penalized: true, ..base }, 1e6 + PENALIZED),
            (LoadInputs { rtt_ns: 0.0, ..base }, 1.0), // never zero: in-flight still counts
            (LoadInputs { rtt_ns: 0.0, in_flight: 4, ..base }, 5.0),
            (LoadInputs { queue_depth: -3.0, ..base }, 1e6),
        ];
        for (inp, want) in cases {
            assert_eq!(cost(&inp, &w), want, "{inp:?}");
        }
        let no_load = CostWeights { in_flight: 1.0, queue: 0.0, kv: 0.0 };
        assert_eq!(cost(&LoadInputs { in_flight: 3, ..base }, &CostWeights { in_flight: 0.5, ..w }), 2.5e6);
        assert_eq!(cost(&LoadInputs { queue_depth: 9.0, kv_use: 1.0, ..base }, &no_load), 1e6);
    }

    #[test]
    fn token_aware_cost_table() {
        let w = CostWeights::default();
        let ms = 1e6;
        // 100 ms to first token, 10 ms a token, 100 tokens an answer: 1.1 s an answer.
        let t = Tokens { per_answer: 100.0, token_ns: 10.0 * ms, ..Default::default() };
        let base = LoadInputs { rtt_ns: 100.0 * ms, body_ns: 9e9, tokens: Some(t), ..Default::default() };
        let streaming = |n: f64, streamed: f64| Some(Tokens { streaming: n, in_flight_tokens: streamed, ..t });
        let cases = [
            // Idle: one answer (the body EWMA is not read).
            (base, 1100.0 * ms),
            // Two in flight, not streaming yet: two answers ahead of it.
            (LoadInputs { in_flight: 2, ..base }, 3300.0 * ms),
            // Two streaming, just started: it runs beside them, each an eighth of an answer.
            (LoadInputs { in_flight: 2, tokens: streaming(2.0, 0.0), ..base }, 1375.0 * ms),
            // Two streaming, 150 of their 200 tokens streamed: an eighth of half an answer.
            (LoadInputs { in_flight: 2, tokens: streaming(2.0, 150.0), ..base }, 1168.75 * ms),
            // Nearly done, but an answer in flight is never counted as less than a token.
            (LoadInputs { in_flight: 2, tokens: streaming(2.0, 1e6), ..base }, 1102.75 * ms),
            // One streaming, one still to start: the second counts whole.
            (LoadInputs { in_flight: 2, tokens: streaming(1.0, 50.0), ..base }, 2268.75 * ms),
            // More streams counted than requests in flight (a reading between two counters).
            (LoadInputs { in_flight: 1, tokens: streaming(3.0, 0.0), ..base }, 1237.5 * ms),
            // Three waiting in the endpoint's queue: three answers more.
            (LoadInputs { queue_depth: 3.0, ..base }, 4400.0 * ms),
            // Two of ours not streaming yet and three reported waiting: ours are among them.
            (LoadInputs { in_flight: 2, queue_depth: 3.0, ..base }, 4400.0 * ms),
            // Five of ours not streaming, a report (older) of three waiting: five.
            (LoadInputs { in_flight: 5, queue_depth: 3.0, ..base }, 6600.0 * ms),
            // KV cache under half full: room, nothing counted; three quarters: two answers more.
            (LoadInputs { kv_use: 0.3, ..base }, 1100.0 * ms),
            (LoadInputs { kv_use: 0.75, ..base }, 3300.0 * ms),
            // Streams silent for 50 ms (a prefill step): the 40 ms past a token's time, once.
            (LoadInputs { tokens: Some(Tokens { stall_ns: 50.0 * ms, ..t }), ..base }, 1140.0 * ms),
            // Silent for 5 s (hung): dearer than four answers.
            (LoadInputs { tokens: Some(Tokens { stall_ns: 5000.0 * ms, ..t }), ..base }, 6090.0 * ms),
            // A silence shorter than a token's time changes nothing.
            (LoadInputs { tokens: Some(Tokens { stall_ns: 5.0 * ms, ..t }), ..base }, 1100.0 * ms),
            // Requests running for longer than an answer should take: their age is the floor.
            (LoadInputs { in_flight: 1, in_flight_age_ns: 3000.0 * ms, ..base }, 6000.0 * ms),
            (LoadInputs { penalized: true, ..base }, 1100.0 * ms + PENALIZED),
        ];
        for (inp, want) in cases {
            let got = cost(&inp, &w);
            assert!((got - want).abs() < 1.0, "{inp:?}: {got} want {want}");
        }
        // Figures that do not allow the estimate fall back to latency × load.
        let classic = LoadInputs { tokens: None, ..base };
        for t in [
            Tokens { per_answer: 1.0, ..t },
            Tokens { token_ns: 0.0, ..t },
            Tokens { per_answer: f64::NAN, ..t },
            Tokens { token_ns: f64::INFINITY, ..t },
        ] {
            assert_eq!(cost(&LoadInputs { tokens: Some(t), ..base }, &w), cost(&classic, &w), "{t:?}");
        }
        assert_eq!(cost(&classic, &w), 9100.0 * ms);
    }

    #[test]
    fn a_slower_replica_shows_by_its_token_time_before_its_answers_end() {
        let w = CostWeights::default();
        let ms = 1e6;
        let t = Tokens { per_answer: 150.0, token_ns: 6.0 * ms, ..Default::default() };
        // Same time to first token; the slow one 3 times slower per token. Idle, it loses to a
        // fast one with its two in flight half done; with 4 still to start on the fast one, it
        // wins.
        let slow =
            LoadInputs { rtt_ns: 80.0 * ms, tokens: Some(Tokens { token_ns: 18.0 * ms, ..t }), ..Default::default() };
        let fast = |n: u32, done: f64| LoadInputs {
            rtt_ns: 80.0 * ms,
            in_flight: n,
            tokens: Some(Tokens {
                streaming: if done > 0.0 { f64::from(n) } else { 0.0 },
                in_flight_tokens: done,
                ..t
            }),
            ..Default::default()
        };
        assert!(cost(&fast(2, 150.0), &w) < cost(&slow, &w));
        assert!(cost(&slow, &w) < cost(&fast(4, 0.0), &w));
        // A batch of fourteen half-done streams on the fast one still beats the idle slow one:
        // at half load the soonest finish is never on the slow replica.
        assert!(cost(&fast(14, 14.0 * 75.0), &w) < cost(&slow, &w));
        // A busy fast replica in a 60 ms prefill pause (its ten streams half done) still beats
        // the slow one with five half done: the pause is not the time of every token to come.
        let paused = |l: LoadInputs| LoadInputs { tokens: l.tokens.map(|t| Tokens { stall_ns: 60.0 * ms, ..t }), ..l };
        let slow5 = LoadInputs {
            in_flight: 5,
            tokens: slow.tokens.map(|t| Tokens { streaming: 5.0, in_flight_tokens: 375.0, ..t }),
            ..slow
        };
        assert!(cost(&paused(fast(10, 750.0)), &w) < cost(&slow5, &w));
    }

    #[test]
    fn a_request_that_says_its_length_is_placed_by_it() {
        let w = CostWeights::default();
        let ms = 1e6;
        let t = Tokens { per_answer: 150.0, token_ns: 6.0 * ms, ..Default::default() };
        // A fast replica with two of this proxy's requests waiting, and an idle one three times
        // slower per token.
        let fast = LoadInputs { rtt_ns: 80.0 * ms, in_flight: 2, tokens: Some(t), ..Default::default() };
        let slow =
            LoadInputs { rtt_ns: 80.0 * ms, tokens: Some(Tokens { token_ns: 18.0 * ms, ..t }), ..Default::default() };
        let asking = |l: LoadInputs, own: f64| LoadInputs { tokens: l.tokens.map(|t| Tokens { own, ..t }), ..l };
        // A typical request (or one that does not say) costs as before: 2 answers ahead + its own
        // on the fast one, its own on the slow one.
        let table = [
            (fast, 3.0 * (80.0 + 900.0) * ms),
            (slow, (80.0 + 2700.0) * ms),
            (asking(fast, 150.0), 3.0 * 980.0 * ms),
            (asking(fast, 1000.0), (2.0 * 980.0 + 80.0 + 6000.0) * ms),
            (asking(slow, 20.0), (80.0 + 360.0) * ms),
            (asking(slow, f64::NAN), 2780.0 * ms),
            (asking(slow, 0.5), 2780.0 * ms),
        ];
        for (i, (load, want)) in table.into_iter().enumerate() {
            let got = cost(&load, &w);
            assert!((got - want).abs() < 1e-3 * want, "case {i}: {got} vs {want}");
        }
        // A long answer goes to the fast replica past its queue; a short one to the idle slow one.
        assert!(cost(&asking(fast, 1000.0), &w) < cost(&asking(slow, 1000.0), &w));
        assert!(cost(&asking(slow, 20.0), &w) < cost(&asking(fast, 20.0), &w));
        // A replica slower than its figures (its one request has run 5.56 s, twice the 2.78 s an
        // answer takes by them) is twice as slow for the new request's own answer too.
        let late = LoadInputs { in_flight_age_ns: 5560.0 * ms, in_flight: 1, ..asking(slow, 150.0) };
        assert!((cost(&late, &w) - 2.0 * 5560.0 * ms).abs() < ms, "{}", cost(&late, &w));
        // Not when those requests are long ones: a fast replica given the 600-token answers has
        // requests 2.5 s old in flight, past a typical answer (980 ms) but not past theirs (3.68 s).
        let long = |l: LoadInputs| LoadInputs { tokens: l.tokens.map(|t| Tokens { in_flight_mean: 600.0, ..t }), ..l };
        let busy = LoadInputs { in_flight_age_ns: 2500.0 * ms, ..asking(fast, 150.0) };
        assert!((cost(&long(busy), &w) - 3.0 * 980.0 * ms).abs() < ms, "{}", cost(&long(busy), &w));
        assert!(cost(&busy, &w) > 2.5 * cost(&long(busy), &w), "held against a typical answer it looked slow");
    }

    #[test]
    fn expected_tokens_scale_the_ask_by_what_answers_stream() {
        let table = [
            ((None, Some(0.5)), None),
            ((Some(1000), None), Some(1000.0)),
            ((Some(1000), Some(0.25)), Some(250.0)),
            ((Some(1000), Some(3.0)), Some(1000.0)),
            ((Some(1000), Some(f64::NAN)), Some(1000.0)),
            ((Some(1000), Some(0.0)), Some(1000.0)),
            ((Some(10), Some(0.01)), Some(1.0)),
            ((Some(0), Some(0.5)), Some(0.0)),
        ];
        for ((asked, fill), want) in table {
            assert_eq!(expected_tokens(asked, fill), want, "{asked:?} {fill:?}");
        }
        let mut p = BackendPrior::new(0);
        assert_eq!(p.fill(), None);
        p.observe_fill(1000, 100, MS, Duration::from_secs(10));
        p.observe_fill(500, 900, 2 * MS, Duration::from_secs(10)); // never more than asked
        let f = p.fill().unwrap();
        assert!((f - 600.0 / 1500.0).abs() < 0.01, "{f}");
    }

    #[test]
    fn penalized_loses_to_any_unpenalized_and_keeps_order_among_penalized() {
        let w = CostWeights::default();
        let fast_refusal = LoadInputs { rtt_ns: 1.0, penalized: true, ..Default::default() };
        let slow = LoadInputs { rtt_ns: 5e9, in_flight: 100, queue_depth: 500.0, kv_use: 1.0, ..Default::default() };
        assert!(cost(&slow, &w) < cost(&fast_refusal, &w));
        let busier_refusal = LoadInputs { in_flight: 3, ..fast_refusal };
        assert!(cost(&fast_refusal, &w) < cost(&busier_refusal, &w));
    }

    #[test]
    fn body_time_adds_to_latency() {
        let w = CostWeights::default();
        let base = LoadInputs { rtt_ns: 1e6, ..Default::default() };
        assert_eq!(cost(&LoadInputs { body_ns: 3e6, ..base }, &w), 4e6);
        assert_eq!(cost(&LoadInputs { body_ns: 3e6, in_flight: 1, ..base }, &w), 8e6);
        assert_eq!(cost(&LoadInputs { body_ns: -5.0, ..base }, &w), 1e6); // never below the rtt
        // A replica three times slower per token, with the same time to first token, costs more
        // than a fast one with twice its requests in flight.
        let fast = LoadInputs { rtt_ns: 50e6, body_ns: 1e9, in_flight: 4, ..Default::default() };
        let slow = LoadInputs { rtt_ns: 60e6, body_ns: 3e9, in_flight: 2, ..Default::default() };
        assert!(cost(&fast, &w) < cost(&slow, &w));
    }

    #[test]
    fn ewma_averages_and_decays() {
        let d = Duration::from_secs(10);
        let mut e = Ewma::new(0);
        assert_eq!(e.get(0, d, 0.0), 0.0);
        // The first sample is the estimate, however soon it comes.
        e.observe(Duration::from_secs(2), MS, d);
        assert!((e.get(MS, d, 0.0) - 2e9).abs() < 1e6, "{e:?}");
        // The first few are averaged equally.
        e.observe(Duration::from_secs(4), 2 * MS, d);
        assert!((e.get(2 * MS, d, 0.0) - 3e9).abs() < 1e7, "{e:?}");
        // Once many have come, one long sample 100 ms later moves it by about 1 %, not to the peak.
        for i in 0..2000u64 {
            e.observe(Duration::from_secs(2), 3 * MS + i * 50 * MS, d);
        }
        let t = 3 * MS + 1999 * 50 * MS + 100 * MS;
        e.observe(Duration::from_secs(30), t, d);
        let v = e.get(t, d, 0.0);
        assert!(v > 2.2e9 && v < 2.4e9, "{v}");
        // Idle for one decay time: down by 1/e.
        let later = e.get(t + 10_000 * MS, d, 0.0);
        assert!((later / v - (-1f64).exp()).abs() < 1e-9);
    }

    #[test]
    fn slow_endpoint_costs_more_than_busy_fast_one() {
        let w = CostWeights::default();
        let slow = LoadInputs { rtt_ns: 10e6, ..Default::default() };
        let busy = LoadInputs { rtt_ns: 1e6, in_flight: 5, ..Default::default() };
        assert!(cost(&busy, &w) < cost(&slow, &w));
    }

    #[test]
    fn p2c_picks_cheaper_of_two_distinct() {
        let costs = [5.0, 1.0, 3.0];
        /// n, r1, r2, the two candidates drawn (sorted), and the pick.
        type Case = (usize, u64, u64, [usize; 2], Option<usize>);
        let cases: [Case; 10] = [
            (3, 0, 0, [0, 1], Some(1)),
            (3, 0, 1, [0, 2], Some(2)),
            (3, 1, 0, [0, 1], Some(1)),
            (3, 1, 1, [1, 2], Some(1)),
            (3, 2, 0, [0, 2], Some(2)),
            (3, 2, 1, [1, 2], Some(1)),
            (3, 5, 4, [0, 2], Some(2)),
            (3, u64::MAX, u64::MAX, [0, 2], Some(2)),
            (2, 0, 7, [0, 1], Some(1)),
            (2, 1, 7, [0, 1], Some(1)),
        ];
        for (n, r1, r2, drawn, want) in cases {
            let mut seen = Vec::new();
            let got = p2c(n, r1, r2, |i| {
                seen.push(i);
                costs[i]
            });
            seen.sort_unstable();
            seen.dedup();
            assert_eq!((seen.as_slice(), got), (&drawn[..], want), "n={n} r1={r1} r2={r2}");
        }
        // On a tie, the first drawn (r1's).
        assert_eq!(p2c(2, 1, 0, |_| 2.0), Some(1));
        assert_eq!(p2c(2, 0, 0, |_| 2.0), Some(0));
        assert_eq!(p2c(0, 1, 2, |_| 0.0), None);
        assert_eq!(p2c(1, 1, 2, |_| 0.0), Some(0));
    }

    #[test]
    fn p2c_never_picks_the_worst_of_many() {
        let costs: Vec<f64> = (0..10).map(f64::from).collect();
        for r1 in 0..50u64 {
            for r2 in 0..50u64 {
                assert_ne!(p2c(10, r1.wrapping_mul(7919), r2.wrapping_mul(104_729), |i| { costs[i] }), Some(9));
            }
        }
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let decay = Duration::from_secs(10);
        let mut e = PeakEwma::new(0);
        // The first samples weigh at least 1/n: a slow first answer (9 ms) is pulled half way to
        // the next (1 ms: 5 ms), then a third of the way to the one after (2 ms: 4 ms).
        e.observe(Duration::from_millis(9), MS, decay);
        e.observe(Duration::from_millis(1), 2 * MS, decay);
        e.observe(Duration::from_millis(2), 3 * MS, decay);
        assert!((e.get(3 * MS, decay, 0.0) - 4e6).abs() < 1e3, "{e:?}");
        for i in 0..1000u64 {
            e.observe(Duration::from_millis(1), 4 * MS + i * MS, decay);
        }
        // Once warm, a slow sample is the estimate at once,
        e.observe(Duration::from_millis(50), 2000 * MS, decay);
        assert_eq!(e.get(2000 * MS, decay, 0.0), 50e6);
        // and a fast sample right after barely moves it.
        e.observe(Duration::from_millis(1), 2001 * MS, decay);
        assert!(e.get(2001 * MS, decay, 0.0) > 49e6);
        // after one decay constant with no samples it has decayed to ~1/e of the way to the prior
        let later = e.get(2001 * MS + 10_000 * MS, decay, 0.0);
        assert!((later / 50e6 - (-1f64).exp()).abs() < 0.01, "{later}");
        // many fast samples over time pull it down
        let mut t = 2001 * MS;
        for _ in 0..1000 {
            t += 100 * MS;
            e.observe(Duration::from_millis(1), t, decay);
        }
        assert!(e.get(t, decay, 0.0) < 2e6, "{}", e.get(t, decay, 0.0));
    }

    #[test]
    fn peak_ewma_ignores_time_going_backwards() {
        let decay = Duration::from_secs(1);
        let mut e = PeakEwma::new(10 * MS);
        e.observe(Duration::from_millis(2), 5 * MS, decay);
        assert_eq!(e.get(5 * MS, decay, 0.0), 2e6);
    }

    #[test]
    fn unknowns_read_the_prior_and_estimates_decay_towards_it() {
        let d = Duration::from_secs(10);
        // No sample: the prior, whatever it is, never zero unless the prior is.
        assert_eq!(PeakEwma::new(0).get(5 * MS, d, 3e6), 3e6);
        assert_eq!(Ewma::new(0).get(5 * MS, d, 4e9), 4e9);
        // A fast endpoint avoided for one decay time goes 1/e of the way back up to the prior, not
        // down to zero; a slow one comes down towards it.
        let mut fast = Ewma::new(0);
        fast.observe(Duration::from_secs(1), MS, d);
        let v = fast.get(MS + 10_000 * MS, d, 4e9);
        assert!((v - (4e9 - 3e9 * (-1f64).exp())).abs() < 1e3, "{v}");
        let mut slow = PeakEwma::new(0);
        slow.observe(Duration::from_secs(12), MS, d);
        let v = slow.get(MS + 10_000 * MS, d, 4e9);
        assert!((v - (4e9 + 8e9 * (-1f64).exp())).abs() < 1e3, "{v}");
        assert!(slow.get(MS + 1_000_000 * MS, d, 4e9) - 4e9 < 1.0, "long idle: the prior");
    }

    #[test]
    fn a_backend_prior_is_its_endpoints_average_or_the_default() {
        let d = Duration::from_secs(10);
        let default = Prior { rtt_ns: 5e6, ..Prior::default() };
        let mut p = BackendPrior::new(0);
        assert_eq!(p.get(MS, d, default), default);
        p.observe(Some(Duration::from_millis(50)), Some(Duration::from_secs(4)), MS, d);
        p.observe(Some(Duration::from_millis(70)), Some(Duration::from_secs(2)), 2 * MS, d);
        let got = p.get(2 * MS, d, default);
        assert!((got.rtt_ns - 60e6).abs() < 1e3 && (got.body_ns - 3e9).abs() < 1e3, "{got:?}");
        // Only a first-byte time (a bodiless answer): the body average is unchanged.
        p.observe(Some(Duration::from_millis(60)), None, 3 * MS, d);
        assert!((p.get(3 * MS, d, default).body_ns - 3e9).abs() < 1e6);
    }

    #[test]
    fn reports_are_believed_by_agreement_with_what_the_proxy_sees() {
        let s = Duration::from_secs;
        // queue, running, own in flight at report, unchanged for, started since the last change, used queue
        let cases = [
            (Some(3.0), Some(10.0), 4, s(0), 0, Some(3.0)),  // agrees
            (Some(0.0), Some(2.0), 6, s(0), 0, Some(3.0)),   // 6 of ours, it counts 2 and may not count its own: 3 wait
            (Some(0.0), Some(2.0), 3, s(0), 0, Some(0.0)),   // 3 of ours, one the report's own: agrees
            (Some(5.0), Some(2.0), 6, s(0), 0, Some(5.0)),   // its own queue is larger: kept
            (Some(0.0), None, 6, s(0), 0, Some(0.0)),        // no running figure: nothing to compare
            (Some(0.0), Some(0.0), 0, s(30), 100, None),     // frozen while requests came and went
            (Some(9.0), Some(9.0), 0, s(30), 3, Some(9.0)),  // unchanged, but barely used: may be true
            (Some(0.0), Some(0.0), 0, s(1), 100, Some(0.0)), // not unchanged for long enough
            (Some(f64::NAN), Some(-1.0), 2, s(0), 0, Some(1.0)),
        ];
        for (queue, running, own, unchanged, started, want) in cases {
            assert_eq!(believed_queue(queue, running, own, unchanged, started), want, "{queue:?} {running:?} {own}");
        }
    }

    #[test]
    fn near_ties_share_and_real_differences_do_not() {
        // Two identical replicas, one a little faster by chance: the first draw (random) is kept.
        assert_eq!(p2c(2, 0, 0, |i| [1.00e6, 0.95e6][i]), Some(0));
        assert_eq!(p2c(2, 1, 0, |i| [1.00e6, 0.95e6][i]), Some(1));
        // Beyond 10 % the cheaper wins whatever the draw.
        assert_eq!(p2c(2, 0, 0, |i| [1.00e6, 0.85e6][i]), Some(1));
        assert_eq!(p2c(2, 1, 0, |i| [1.00e6, 0.85e6][i]), Some(1));
    }

    #[test]
    fn slow_start_ramps_an_endpoint_in_over_its_window() {
        let w = Duration::from_secs(10);
        let s = 1_000_000_000u64;
        assert_eq!(slow_start(0, 0, w), Some(0.0));
        assert_eq!(slow_start(0, 5 * s, w), Some(0.5));
        assert_eq!(slow_start(0, 10 * s, w), None);
        assert_eq!(slow_start(20 * s, 10 * s, w), Some(0.0)); // clock before the start: just started
        assert_eq!(slow_start(0, 0, Duration::ZERO), None);
        // progress, draw, held
        let cases = [
            (None, 0.99, false),
            (Some(0.0), 0.05, false),
            (Some(0.0), 0.1, true),
            (Some(0.05), 0.5, true),
            (Some(0.5), 0.49, false),
            (Some(0.5), 0.5, true),
            (Some(0.99), 0.98, false),
            (Some(f64::NAN), 0.99, false),
        ];
        for (progress, draw, held) in cases {
            assert_eq!(slow_start_holds(progress, draw), held, "{progress:?} {draw}");
        }
        let weights = CostWeights::default();
        let base = LoadInputs { rtt_ns: 1e6, ..Default::default() };
        let busy = LoadInputs { rtt_ns: 1e9, in_flight: 50, ..Default::default() };
        assert!(cost(&busy, &weights) < cost(&LoadInputs { held: true, ..base }, &weights));
    }

    #[test]
    fn requests_running_longer_than_the_estimate_raise_the_latency_term() {
        let w = CostWeights::default();
        // Fast replica: 4 s answers, two in flight for 2 s on average. Slow replica, not yet
        // measured (its estimate is the backend's 4 s), two in flight for 6 s.
        let fast =
            LoadInputs { rtt_ns: 0.05e9, body_ns: 4e9, in_flight: 2, in_flight_age_ns: 2e9, ..Default::default() };
        let slow = LoadInputs { in_flight_age_ns: 6e9, ..fast };
        assert_eq!(cost(&fast, &w), 4.05e9 * 3.0);
        assert_eq!(cost(&slow, &w), 6e9 * 3.0);
        assert!(cost(&slow, &w) > cost(&fast, &w));
        // Garbage ages count as none.
        assert_eq!(cost(&LoadInputs { in_flight_age_ns: f64::NAN, ..fast }, &w), cost(&fast, &w));
        assert_eq!(cost(&LoadInputs { in_flight_age_ns: -1.0, ..fast }, &w), cost(&fast, &w));
    }
}
