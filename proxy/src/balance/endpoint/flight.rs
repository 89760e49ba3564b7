//! An endpoint's count of the requests in flight from this proxy: how many, how long they have
//! been running, how many tokens they are expected to stream and have streamed.

use super::{Endpoint, MAX_BODY_SAMPLE};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Endpoint {
    /// One more request in flight (see [`super::InFlightGuard::start`], which pairs it with
    /// [`Endpoint::end`]).
    pub(in crate::balance) fn begin(&self, started_ns: u64) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.started_sum_ns.fetch_add(started_ns, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request in flight is expected to stream `tokens` (it said how many it asks for), until
    /// [`Endpoint::unexpect`] with the same figure.
    pub(in crate::balance) fn expect(&self, tokens: u32) {
        self.expected_sum.fetch_add(u64::from(tokens), Ordering::Relaxed);
        self.expecting.fetch_add(1, Ordering::Relaxed);
    }

    /// See [`Endpoint::expect`].
    pub(in crate::balance) fn unexpect(&self, tokens: u32) {
        self.expecting.fetch_sub(1, Ordering::Relaxed);
        self.expected_sum.fetch_sub(u64::from(tokens), Ordering::Relaxed);
    }

    /// The mean tokens the requests in flight are expected to stream, those that did not say
    /// counting `typical`; 0 with none in flight.
    pub(in crate::balance) fn in_flight_mean_tokens(&self, typical: f64) -> f64 {
        let n = self.in_flight();
        if n == 0 {
            return 0.0;
        }
        // Read one after the other: clamped to what can be for the instant between updates.
        let said = self.expecting.load(Ordering::Relaxed).min(n);
        let sum = self.expected_sum.load(Ordering::Relaxed) as f64;
        (sum + f64::from(n - said) * typical) / f64::from(n)
    }

    /// The request counted by [`Endpoint::begin`] with `started_ns` is over.
    pub(in crate::balance) fn end(&self, started_ns: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.started_sum_ns.fetch_sub(started_ns, Ordering::Relaxed);
    }

    /// How long the requests in flight have been running, on average, in nanoseconds (0 with
    /// none), at most [`MAX_BODY_SAMPLE`] (a long-lived stream is no sign of a slow endpoint).
    pub fn in_flight_age_ns(&self, now_ns: u64) -> f64 {
        let n = self.in_flight();
        if n == 0 {
            return 0.0;
        }
        // The two counters are updated one after the other: a reading between them is off by
        // one request for an instant, and is clamped to what can be.
        let mean_start = self.started_sum_ns.load(Ordering::Relaxed) / u64::from(n);
        (now_ns.saturating_sub(mean_start) as f64).min(MAX_BODY_SAMPLE.as_nanos() as f64)
    }

    /// How long the streamed answers in flight have gone without a token, in nanoseconds (0 when
    /// none is streaming).
    pub(super) fn stall_ns(&self, now_ns: u64) -> f64 {
        if self.streaming.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        now_ns.saturating_sub(self.last_token_ns.load(Ordering::Relaxed)) as f64
    }

    /// A streamed answer in flight had its first token (`started`), or is over (`!started`,
    /// giving back the `counted` tokens it added with [`Endpoint::tokens`]).
    pub(in crate::balance) fn stream(&self, started: bool, counted: u32, now_ns: u64) {
        if started {
            self.last_token_ns.fetch_max(now_ns, Ordering::Relaxed);
            self.streaming.fetch_add(1, Ordering::Relaxed);
        } else {
            self.streaming.fetch_sub(1, Ordering::Relaxed);
            self.in_flight_tokens.fetch_sub(u64::from(counted), Ordering::Relaxed);
        }
    }

    /// Streams open that have had a token, and the tokens counted for the requests in flight.
    #[cfg(test)]
    pub(in crate::balance) fn stream_counts(&self) -> (u32, u64) {
        (self.streaming.load(Ordering::Relaxed), self.in_flight_tokens.load(Ordering::Relaxed))
    }

    /// Tokens came on a streamed answer in flight at `now_ns`: `counted` of them count towards
    /// the in-flight work done, and `sample` is a fresh figure of the time per token.
    pub(in crate::balance) fn tokens(&self, counted: u32, sample: Option<Duration>, now_ns: u64, decay: Duration) {
        self.last_token_ns.fetch_max(now_ns, Ordering::Relaxed);
        if counted > 0 {
            self.in_flight_tokens.fetch_add(u64::from(counted), Ordering::Relaxed);
        }
        if let Some(t) = sample {
            self.stats().token.observe(t, now_ns, decay);
        }
    }
}
