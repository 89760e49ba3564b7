//! A backend as the balancer sees it: its endpoints' live state and how to choose among them.

use super::endpoint::{Endpoint, Policy};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vane_route::balance::{BackendPrior, Prior};
use vane_route::table::Settings;

/// A backend with live endpoint state.
#[derive(Debug)]
pub struct Backend {
    /// Backend name.
    pub name: Arc<str>,
    /// Endpoints, in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How endpoints are chosen.
    pub policy: Policy,
    /// Round-robin position.
    pub rr: AtomicUsize,
    /// The config's proxy-wide settings (timeouts, ejection, decay), shared by every backend of
    /// one snapshot.
    pub settings: Arc<Settings>,
    /// Age of the reported load used at each balancing decision.
    pub load_age: Histogram,
    /// The backend's typical figures, shared with the previous snapshot's backend of the same name.
    pub typical: Arc<Typical>,
    /// Ask its endpoints for an ORCA load report with every request.
    pub ask_load_reports: bool,
    /// Its retry budget, shared with the previous snapshot's backend of the same name while the
    /// budget's settings stay the same.
    pub retry_budget: Arc<tower::retry::budget::TpsBudget>,
    /// Its load shedding, if any.
    pub shed: Option<vane_route::table::Shed>,
}

impl Backend {
    /// Whether its answers stream (any has had two tokens or more), read without a lock.
    pub fn streams(&self) -> bool {
        self.typical.longest.load(Ordering::Relaxed) >= 2
    }

    /// The least measured time to first byte among its available endpoints (decayed to now),
    /// or `None` when any of them has no measure yet: an endpoint nobody has measured is not
    /// known to be slow.
    pub fn fastest_first_byte(&self, now_ns: u64) -> Option<Duration> {
        let decay = self.settings.ewma_decay;
        let prior = self.prior(now_ns);
        let any_available = self.endpoints.iter().any(|e| e.available(now_ns));
        let mut best: Option<f64> = None;
        for e in &self.endpoints {
            if any_available && !e.available(now_ns) {
                continue;
            }
            let ns = e.measured_first_byte_ns(now_ns, decay, prior)?;
            best = Some(best.map_or(ns, |b: f64| b.min(ns)));
        }
        best.filter(|b| b.is_finite()).map(|b| Duration::from_nanos(b as u64))
    }

    /// The figures an endpoint without samples of its own reads (and decays towards): the
    /// backend's typical ones, or the configured default RTT (and no body time) where it has
    /// measured nothing. Until a streamed answer has ended, the tokens per answer read as the
    /// most any stream has had so far (a lower bound, so that time per token counts from a
    /// fresh proxy's first streams on, not from their end).
    pub fn prior(&self, now_ns: u64) -> Prior {
        let default = Prior {
            rtt_ns: self.settings.default_rtt.as_nanos() as f64,
            tokens: f64::from(self.typical.longest.load(Ordering::Relaxed)),
            ..Prior::default()
        };
        self.typical.get(now_ns, self.settings.ewma_decay, default)
    }
}

/// A backend's typical first-byte, body and per-token times and tokens per answer: every sample
/// of every endpoint of it, averaged ([`BackendPrior`]).
#[derive(Debug)]
pub struct Typical {
    prior: Mutex<BackendPrior>,
    /// The most tokens any streamed answer has had so far.
    longest: AtomicU32,
    /// The last [`RECENT`] times to first byte, in microseconds (0: no sample yet), a ring.
    recent: [AtomicU32; RECENT],
    next: AtomicUsize,
}

/// How many recent times to first byte a backend keeps for percentiles (hedging's delay).
pub const RECENT: usize = 128;

impl Default for Typical {
    fn default() -> Self {
        Typical {
            prior: Mutex::new(BackendPrior::new(crate::now_ns())),
            longest: AtomicU32::new(0),
            recent: std::array::from_fn(|_| AtomicU32::new(0)),
            next: AtomicUsize::new(0),
        }
    }
}

impl Typical {
    /// Adds one answer's figures.
    pub fn observe(&self, rtt: Option<Duration>, body: Option<Duration>, decay: Duration) {
        if let Some(r) = rtt {
            let us = u32::try_from(r.as_micros()).unwrap_or(u32::MAX).max(1);
            self.recent[self.next.fetch_add(1, Ordering::Relaxed) % RECENT].store(us, Ordering::Relaxed);
        }
        crate::lock(&self.prior).observe(rtt, body, crate::now_ns(), decay);
    }

    /// The `p`-th percentile (0..100) of the recent times to first byte; `None` with no sample.
    pub fn first_byte_percentile(&self, p: f64) -> Option<Duration> {
        let mut v: Vec<u32> = self.recent.iter().map(|a| a.load(Ordering::Relaxed)).filter(|&us| us > 0).collect();
        if v.is_empty() {
            return None;
        }
        let k = ((p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64).round() as usize;
        let (_, at, _) = v.select_nth_unstable(k);
        Some(Duration::from_micros(u64::from(*at)))
    }

    /// Adds a streamed answer's figures: a time-per-token sample while it streams (with the
    /// tokens it has had so far), or its token count once it has ended (`ended`).
    pub fn observe_stream(&self, token: Option<Duration>, tokens: u32, ended: bool, decay: Duration) {
        self.longest.fetch_max(tokens, Ordering::Relaxed);
        let count = ended.then_some(f64::from(tokens));
        if token.is_some() || count.is_some() {
            crate::lock(&self.prior).observe_stream(token, count, crate::now_ns(), decay);
        }
    }

    /// A streamed answer whose request asked for at most `asked` tokens ended after `streamed`.
    pub fn observe_fill(&self, asked: u32, streamed: u32, decay: Duration) {
        crate::lock(&self.prior).observe_fill(asked, streamed, crate::now_ns(), decay);
    }

    /// The output tokens a request asking for at most `asked` is expected to stream here
    /// ([`vane_route::balance::expected_tokens`]); `None` when it asks for no limit.
    pub fn expected_tokens(&self, asked: Option<u32>) -> Option<f64> {
        asked?;
        vane_route::balance::expected_tokens(asked, crate::lock(&self.prior).fill())
    }

    /// The typical tokens per streamed answer, or the most any has had where none has ended.
    pub fn tokens_per_answer(&self) -> f64 {
        crate::lock(&self.prior).tokens().unwrap_or_else(|| f64::from(self.longest.load(Ordering::Relaxed)))
    }

    fn get(&self, now_ns: u64, decay: Duration, default: Prior) -> Prior {
        crate::lock(&self.prior).get(now_ns, decay, default)
    }
}

/// Request extension: a slot the balancer fills with the index of the endpoint it picked for
/// the attempt (plus one; 0 until it has picked), so that a layer above knows it before the
/// answer comes (hedging sends its copy elsewhere).
#[derive(Clone, Debug, Default)]
pub struct Picked(pub Arc<std::sync::atomic::AtomicUsize>);

impl Picked {
    /// The endpoint picked, once picked.
    pub fn get(&self) -> Option<usize> {
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// Request extension: where the balancer sends the request (left by the route layer).
#[derive(Clone, Debug)]
pub struct Target {
    /// The backend chosen by the route's split (or the inbound target).
    pub backend: Arc<Backend>,
    /// Response-header deadline.
    pub timeout: Duration,
    /// Whether `timeout` must hold for the whole answer, not only its headers: the client's own
    /// gRPC deadline, or a backend whose answers do not stream (their first byte comes with
    /// the whole answer). Then a request that the backend's endpoints cannot answer in time is
    /// refused at once (the shedding layer).
    pub whole_answer: bool,
    /// The most output tokens the request asks for (its `max_tokens`), when its body says.
    pub asked_tokens: Option<u32>,
}

/// Error extension: the endpoint an attempt went to (by index in its backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempted(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_first_byte_percentiles() {
        let t = Typical::default();
        let d = Duration::from_secs(10);
        assert_eq!(t.first_byte_percentile(90.0), None);
        for ms in 1..=100 {
            t.observe(Some(Duration::from_millis(ms)), None, d);
        }
        assert_eq!(t.first_byte_percentile(50.0), Some(Duration::from_millis(51)));
        assert_eq!(t.first_byte_percentile(90.0), Some(Duration::from_millis(90)));
        assert_eq!(t.first_byte_percentile(100.0), Some(Duration::from_millis(100)));
        // Only the last 128 count: 200 slow answers push the fast ones out.
        for _ in 0..200 {
            t.observe(Some(Duration::from_secs(2)), None, d);
        }
        assert_eq!(t.first_byte_percentile(1.0), Some(Duration::from_secs(2)));
    }
}
