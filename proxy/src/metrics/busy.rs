//! GPU-seconds per request, apportioned from a backend's busy time.
//!
//! The proxy cannot see a GPU; it sees requests in flight. A backend of `k` endpoints with `n`
//! requests in flight is taken to have `min(n, k)` endpoints busy (the balancer spreads
//! requests), each request holding an equal share: `min(1, k / n)` of an endpoint. A request's
//! GPU-seconds are that share integrated over its life, from when it was sent to when its
//! answer's body ended. The shares of all requests add up to the busy endpoint-seconds, so the
//! total is neither double counted nor lost, and a request that shares its endpoint with
//! others is charged for its part only.
//!
//! This is a processor-sharing clock: `v` advances at `min(1, k / n)` per second while
//! requests are in flight, and a request's share is `v` at its end less `v` at its start.
//! Inbound (one endpoint, the local model server, seen by the sidecar beside it) the figure is
//! the pod's own; outbound it is this caller's view of a backend that others may share too.
//! Time is weighted, not tokens: a long prompt's prefill and a long answer's decode both hold
//! the endpoint, and both are time.

use std::sync::Mutex;
use std::time::Instant;

/// The clock of one backend.
#[derive(Debug)]
pub struct BusyClock {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests in flight.
    n: u32,
    /// Virtual seconds: the share a request in flight all along has been charged.
    v: f64,
    last: Instant,
}

impl Default for BusyClock {
    fn default() -> Self {
        BusyClock { state: Mutex::new(State { n: 0, v: 0.0, last: Instant::now() }) }
    }
}

impl State {
    fn advance(&mut self, now: Instant, k: u32) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        if self.n > 0 {
            self.v += dt * (f64::from(k.max(1)) / f64::from(self.n)).min(1.0);
        }
        self.last = now;
    }
}

impl BusyClock {
    /// A request starts on a backend of `k` endpoints: the clock reading to give to [`leave`](Self::leave).
    pub fn enter(&self, now: Instant, k: u32) -> f64 {
        let mut s = crate::lock(&self.state);
        s.advance(now, k);
        s.n += 1;
        s.v
    }

    /// The request that entered at `v0` ends: its GPU-seconds.
    pub fn leave(&self, now: Instant, k: u32, v0: f64) -> f64 {
        let mut s = crate::lock(&self.state);
        s.advance(now, k);
        s.n = s.n.saturating_sub(1);
        (s.v - v0).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn shares_add_up_to_busy_time() {
        let c = BusyClock::default();
        let t0 = Instant::now();
        // One endpoint: a runs 0..4, b runs 1..3. Busy 4 s; b holds half of 1..3, a the rest.
        let a = c.enter(t0, 1);
        let b = c.enter(at(t0, 1.0), 1);
        let b = c.leave(at(t0, 3.0), 1, b);
        let a = c.leave(at(t0, 4.0), 1, a);
        assert!((b - 1.0).abs() < 1e-9, "{b}");
        assert!((a - 3.0).abs() < 1e-9, "{a}");
        // Idle time is nobody's.
        let d = c.enter(at(t0, 10.0), 1);
        assert!((c.leave(at(t0, 11.0), 1, d) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn requests_on_separate_endpoints_each_hold_one() {
        let c = BusyClock::default();
        let t0 = Instant::now();
        let a = c.enter(t0, 2);
        let b = c.enter(t0, 2);
        let x = c.enter(at(t0, 1.0), 2);
        // 0..1: two requests on two endpoints (1 each); 1..2: three on two (2/3 each).
        let a = c.leave(at(t0, 2.0), 2, a);
        let x = c.leave(at(t0, 2.0), 2, x);
        let b = c.leave(at(t0, 2.0), 2, b);
        assert!((a - (1.0 + 2.0 / 3.0)).abs() < 1e-9, "{a}");
        assert!((b - a).abs() < 1e-9);
        assert!((x - 2.0 / 3.0).abs() < 1e-9, "{x}");
        assert!((a + b + x - 4.0).abs() < 1e-9, "two endpoints busy for two seconds");
    }
}
