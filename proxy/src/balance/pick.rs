//! Choosing an endpoint of a backend for one attempt: the backend's live state seen through
//! [`EndpointView`], the decision made by the pure [`vane_route::select`] policies.

use super::backend::Backend;
use super::endpoint::{Endpoint, Policy};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vane_route::balance::Prior;
use vane_route::select::{self, Draw, EndpointView, Tried};
use vane_route::table::Settings;

/// A backend's endpoints at one instant, as the selection policies read them. It remembers the
/// age of the reported load behind the last two costs computed (the two power-of-two candidates),
/// so that the age behind the decision can be recorded.
struct View<'a> {
    endpoints: &'a [Arc<Endpoint>],
    settings: &'a Settings,
    policy: &'a Policy,
    /// The backend's prior, read at the first cost computed (most picks compute none: one
    /// endpoint, or an algorithm that does not compare costs).
    backend: &'a Backend,
    prior: Cell<Option<Prior>>,
    /// A uniform draw for the decision; endpoint `i`'s slow-start check uses it shifted by `i`
    /// golden-ratio steps, so each endpoint gets its own draw, the same however often its cost is
    /// asked within the decision.
    draw: f64,
    now: u64,
    /// The output tokens the request is expected to stream, when it says how many it asks for.
    own: Option<f64>,
    ages: Cell<[(usize, Option<u64>); 2]>,
}

impl EndpointView for View<'_> {
    fn len(&self) -> usize {
        self.endpoints.len()
    }

    fn available(&self, i: usize) -> bool {
        self.endpoints[i].available(self.now)
    }

    fn in_flight(&self, i: usize) -> u32 {
        self.endpoints[i].in_flight()
    }

    fn cost(&self, i: usize) -> f64 {
        let draw = (self.draw + i as f64 * 0.618_033_988_749_894_9).fract();
        let prior = match self.prior.get() {
            Some(p) => p,
            None => {
                let p = self.backend.prior(self.now);
                self.prior.set(Some(p));
                p
            }
        };
        let (c, age) = self.endpoints[i].cost(self.now, self.settings, self.policy, prior, draw, self.own);
        let [_, last] = self.ages.get();
        self.ages.set([last, (i, age)]);
        c
    }
}

/// Picks an endpoint of `backend` not in `tried`, by the backend's algorithm (when every untried
/// one is ejected, among those: panic mode). Returns its index and the age in nanoseconds of the
/// reported load the decision used, if any; `None` when every endpoint was tried (or there is none).
/// `own`: the output tokens the request is expected to stream, when it says.
pub fn pick(
    backend: &Backend,
    tried: Tried,
    rng: &mut fastrand::Rng,
    own: Option<f64>,
) -> Option<(usize, Option<u64>)> {
    let now = crate::now_ns();
    let view = View {
        endpoints: &backend.endpoints,
        settings: &backend.settings,
        policy: &backend.policy,
        backend,
        prior: Cell::new(None),
        draw: rng.f64(),
        now,
        own,
        ages: Cell::new([(usize::MAX, None); 2]),
    };
    let rr = match backend.policy.algorithm {
        vane_route::config::Algorithm::RoundRobin => backend.rr.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let draw = Draw { rr, r1: rng.u64(..), r2: rng.u64(..), explore: rng.u64(..) };
    let choice = select::select(backend.policy.algorithm, &view, tried, draw)?;
    tracing::trace!(target: "vane_proxy::balance", backend = %backend.name, endpoint = %backend.endpoints[choice.index].addr, "picked");
    let age = view.ages.get().iter().find(|(i, _)| *i == choice.index).and_then(|(_, a)| *a);
    Some((choice.index, age))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Typical;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use vane_route::balance::CostWeights;
    use vane_route::config::{Algorithm, Protocol};

    fn backend(n: usize) -> Backend {
        let table = vane_route::Table::from_config(vane_route::Config::default()).unwrap();
        Backend {
            name: "b".into(),
            endpoints: (0..n)
                .map(|i| {
                    let addr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                    Arc::new(Endpoint::new(addr, Protocol::Http1, 0))
                })
                .collect(),
            policy: Policy { algorithm: Algorithm::P2c, weights: CostWeights::default(), slow_start: Duration::ZERO },
            rr: AtomicUsize::new(0),
            settings: Arc::new(table.settings),
            load_age: prometheus_client::metrics::histogram::Histogram::new([1.0]),
            typical: Arc::new(Typical::default()),
            ask_load_reports: true,
            retry_budget: Arc::new(tower::retry::budget::TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            shed: None,
        }
    }

    /// [`pick`] as at `now`.
    fn pick_at(b: &Backend, now: u64, rng: &mut fastrand::Rng) -> Option<usize> {
        let view = View {
            endpoints: &b.endpoints,
            settings: &b.settings,
            policy: &b.policy,
            backend: b,
            prior: Cell::new(None),
            draw: rng.f64(),
            now,
            own: None,
            ages: Cell::new([(usize::MAX, None); 2]),
        };
        let draw = Draw { rr: 0, r1: rng.u64(..), r2: rng.u64(..), explore: rng.u64(..) };
        select::select(b.policy.algorithm, &view, Tried::new(), draw).map(|c| c.index)
    }

    fn cost(b: &Backend, i: usize, now: u64) -> f64 {
        b.endpoints[i].cost(now, &b.settings, &b.policy, b.prior(now), 0.5, None).0
    }

    #[test]
    fn an_unmeasured_endpoint_is_not_free_and_long_running_requests_count_against_it() {
        let b = backend(2);
        let decay = b.settings.ewma_decay;
        // Endpoint 0 has answered: 50 ms to the first token, 4 s of streaming. Endpoint 1 has not.
        b.endpoints[0].observe(Some(Duration::from_millis(50)), Some(Duration::from_secs(4)), decay);
        b.typical.observe(Some(Duration::from_millis(50)), Some(Duration::from_secs(4)), decay);
        let now = crate::now_ns();
        // Unmeasured, it reads the backend's figures, not zero (before, it cost 1 ms).
        let (c0, c1) = (cost(&b, 0, now), cost(&b, 1, now));
        assert!(c1 > 4e9 && (c1 / c0 - 1.0).abs() < 0.01, "{c0} {c1}");
        // Two requests on each: endpoint 0's started a second ago, endpoint 1's six seconds ago and
        // still running, past the backend's usual 4 s: it is the slow one, before any has ended.
        for ep in [0, 1] {
            let started = now - if ep == 0 { 1_000_000_000 } else { 6_000_000_000 };
            b.endpoints[ep].begin(started);
            b.endpoints[ep].begin(started);
        }
        let (c0, c1) = (cost(&b, 0, now), cost(&b, 1, now));
        assert!(c1 > 1.4 * c0, "{c0} {c1}");
        assert!((b.endpoints[1].in_flight_age_ns(now) - 6e9).abs() < 1e6);
        // With two endpoints both are drawn, and the pick is the cheaper; exploration never sends
        // a request to an endpoint that has some in flight already.
        let mut rng = fastrand::Rng::with_seed(3);
        let to_slow = (0..2000).filter(|_| pick(&b, Tried::new(), &mut rng, None).map(|p| p.0) == Some(1)).count();
        assert_eq!(to_slow, 0, "{to_slow} of 2000 went to the slow endpoint");
        for ep in [0, 1] {
            let started = now - if ep == 0 { 1_000_000_000 } else { 6_000_000_000 };
            b.endpoints[ep].end(started);
            b.endpoints[ep].end(started);
        }
        assert_eq!(b.endpoints[1].in_flight_age_ns(now), 0.0);
    }

    #[test]
    fn a_long_request_goes_where_tokens_are_fast_and_a_short_one_where_it_starts_soonest() {
        let b = backend(2);
        let decay = b.settings.ewma_decay;
        let t0 = crate::now_ns();
        // Answers of 150 tokens; endpoint 0 streams at 6 ms a token and has three requests of this
        // proxy's waiting, endpoint 1 is idle at 18 ms a token.
        b.typical.observe_stream(Some(Duration::from_millis(6)), 150, true, decay);
        for (i, ms) in [(0, 6), (1, 18)] {
            b.endpoints[i].observe(Some(Duration::from_millis(80)), None, decay);
            b.endpoints[i].tokens(0, Some(Duration::from_millis(ms)), t0, decay);
        }
        for _ in 0..3 {
            b.endpoints[0].begin(t0);
        }
        let mut rng = fastrand::Rng::with_seed(5);
        let mut to_fast = |own: Option<f64>| {
            (0..1000).filter(|_| pick(&b, Tried::new(), &mut rng, own).map(|p| p.0) == Some(0)).count()
        };
        let (long, short, unsaid) = (to_fast(Some(1000.0)), to_fast(Some(20.0)), to_fast(None));
        assert!(long > 950, "a 1000-token answer goes to the fast replica past its queue: {long}");
        assert!(short < 50, "a 20-token one to the idle slow one: {short}");
        assert!(unsaid < 50, "one that does not say counts as a typical answer: {unsaid}");
        for _ in 0..3 {
            b.endpoints[0].end(t0);
        }
    }

    #[test]
    fn an_endpoint_that_joins_takes_a_growing_share_over_its_slow_start() {
        let mut b = backend(1);
        b.policy.slow_start = Duration::from_secs(10);
        let now = crate::now_ns();
        b.endpoints.push(Arc::new(Endpoint::new("127.0.0.1:9100".parse().unwrap(), Protocol::Http1, now)));
        // Two equal endpoints (neither measured): the newcomer's share of 10 000 picks, at the
        // start of its window, half way and after it.
        let share = |at: u64| {
            let mut rng = fastrand::Rng::with_seed(7);
            let view_picks = (0..10_000).filter(|_| pick_at(&b, at, &mut rng) == Some(1)).count();
            view_picks as f64 / 10_000.0
        };
        let (start, half, after) = (share(now), share(now + 5_000_000_000), share(now + 11_000_000_000));
        assert!((0.03..0.08).contains(&start), "just joined: about 10 % of a full (50 %) share: {start}");
        assert!((0.2..0.3).contains(&half), "half way: about half of a full share: {half}");
        assert!((0.45..0.55).contains(&after), "after the window: a full share: {after}");
    }

    #[test]
    fn a_frozen_load_report_is_not_believed_and_a_contradicting_one_is_corrected() {
        let b = backend(1);
        let ep = &b.endpoints[0];
        let s = 1_000_000_000u64;
        let t0 = crate::now_ns();
        let busy = vane_route::orca::LoadReport { queue_depth: Some(20.0), running: Some(8.0), ..Default::default() };
        ep.report(busy, t0);
        let believed = cost(&b, 0, t0);
        // The same figures keep coming while this proxy's requests come and go: frozen.
        for k in 1..=5 {
            ep.begin(t0 + k * s / 2);
            ep.end(t0 + k * s / 2);
            ep.report(busy, t0 + k * s / 2);
        }
        let frozen = cost(&b, 0, t0 + 5 * s / 2);
        assert!(frozen * 10.0 < believed, "a stuck report kept its weight: {frozen} vs {believed}");
        // Figures that move again are believed again.
        ep.report(vane_route::orca::LoadReport { queue_depth: Some(19.0), ..busy }, t0 + 3 * s);
        assert!(cost(&b, 0, t0 + 3 * s) > 10.0 * frozen, "a report that moves again is believed again");
        // An "idle" report while six of this proxy's requests are in flight there (one of them the
        // answer carrying it): five waiting at least.
        for _ in 0..6 {
            ep.begin(t0 + 3 * s);
        }
        ep.report(vane_route::orca::LoadReport { queue_depth: Some(0.0), running: Some(0.0), ..busy }, t0 + 3 * s);
        let at = t0 + 3 * s;
        let inputs_cost = cost(&b, 0, at);
        let plain = b.endpoints[0].rtt_seconds(at, b.settings.ewma_decay, b.prior(at)) * 1e9;
        // rtt × (6 in flight + 1 + 5 waiting) at least: the in-flight age may raise the rtt term.
        assert!(inputs_cost >= plain * 12.0 * 0.999, "{inputs_cost} vs {plain}");
        for _ in 0..6 {
            ep.end(t0 + 3 * s);
        }
    }

    #[test]
    fn a_reported_token_time_is_used_over_the_proxys_own_samples() {
        let b = backend(2);
        let decay = b.settings.ewma_decay;
        let t0 = crate::now_ns();
        // Answers of 100 tokens have streamed; endpoint 0 measured 10 ms a token itself.
        b.typical.observe_stream(Some(Duration::from_millis(10)), 100, true, decay);
        b.endpoints[0].tokens(0, Some(Duration::from_millis(10)), t0, decay);
        b.endpoints[0].observe(Some(Duration::from_millis(100)), None, decay);
        let own = cost(&b, 0, t0);
        assert!((own / 1.1e9 - 1.0).abs() < 0.05, "100 ms + 100 × 10 ms: {own}");
        // Its probe reports 30 ms a token (a GPU slowed down by another tenant): that is used.
        let r = vane_route::orca::LoadReport {
            queue_depth: Some(0.0),
            running: Some(4.0),
            token_time: Some(Duration::from_millis(30)),
            ..Default::default()
        };
        b.endpoints[0].report(r, t0);
        let reported = cost(&b, 0, t0);
        assert!((reported / 3.1e9 - 1.0).abs() < 0.05, "100 ms + 100 × 30 ms: {reported}");
        // An endpoint that has streamed nothing for this proxy reads its report, not the prior.
        b.endpoints[1].report(r, t0);
        assert!(cost(&b, 1, t0) > 2.9e9);
        // The classic cost reads neither.
        let mut classic = backend(1);
        classic.policy.algorithm = Algorithm::P2cClassic;
        classic.endpoints[0].report(r, t0);
        assert!(cost(&classic, 0, t0) < 1e9);
    }
}
