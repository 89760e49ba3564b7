//! The reconnect policy: exponential delays from a minimum, doubling to a maximum, with jitter so
//! that many clients that lost the same server do not come back in step.
//!
//! The exponential schedule is `backon`'s [`ExponentialBuilder`] (no retry limit: a sidecar
//! reconnects for as long as it runs). backon's own jitter adds up to one more delay on top
//! (`d..2d`, past the maximum), so the jitter here is applied to its undisturbed schedule
//! instead: [`Jitter::Full`] draws from `0..=d` (AWS "full jitter"), [`Jitter::Half`] from
//! `d/2..=d` (what the proxy's reconnect loops have used).
//!
//! ```
//! use std::time::Duration;
//! use vane_runtime::backoff::{Backoff, Jitter};
//!
//! let policy = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jitter(Jitter::Half);
//! let mut retry = policy.start();
//! let first = retry.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! retry.reset(); // after a connection that worked
//! ```

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// How much of each delay is randomised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// The delays exactly (for tests and single clients).
    None,
    /// Uniform in `0..=d`: spreads reconnects the most.
    #[default]
    Full,
    /// Uniform in `d/2..=d`: never retries sooner than half the schedule.
    Half,
}

impl Jitter {
    /// Applies the jitter to `d`, with `unit` uniform in `0..1`. Pure.
    pub fn apply(self, d: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 1.0 };
        match self {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(unit),
            Jitter::Half => d.mul_f64(0.5 + unit * 0.5),
        }
    }
}

/// A reconnect policy: cheap to copy, shared by every loop that uses it.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f32,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Backoff {
    /// Delays from `min` doubling to `max` (a `max` below `min` is raised to `min`), with
    /// [`Jitter::Full`].
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), factor: 2.0, jitter: Jitter::Full, seed: None }
    }

    /// The same policy with another jitter.
    pub fn jitter(self, jitter: Jitter) -> Backoff {
        Backoff { jitter, ..self }
    }

    /// The same policy growing by `factor` per attempt instead of 2 (values below 1 are taken as 1).
    pub fn factor(self, factor: f32) -> Backoff {
        Backoff { factor: if factor.is_finite() { factor.max(1.0) } else { 2.0 }, ..self }
    }

    /// The same policy with a fixed random seed, so that its delays can be asserted in tests.
    pub fn seed(self, seed: u64) -> Backoff {
        Backoff { seed: Some(seed), ..self }
    }

    /// The shortest delay before jitter.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest delay before jitter.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// A fresh sequence of delays for one reconnecting loop.
    pub fn start(&self) -> Retry {
        Retry {
            policy: *self,
            schedule: self.schedule(),
            rng: self.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            attempts: 0,
        }
    }

    fn schedule(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(self.factor)
            .without_max_times()
            .build()
    }
}

/// The delays of one reconnecting loop: call [`Retry::next_delay`] after each failure and
/// [`Retry::reset`] after a connection that worked.
#[derive(Debug)]
pub struct Retry {
    policy: Backoff,
    schedule: ExponentialBackoff,
    rng: fastrand::Rng,
    attempts: u32,
}

impl Retry {
    /// The delay before the next attempt (jittered), and a step further along the schedule.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        // Unlimited attempts: the schedule never ends, but stay total anyway.
        let d = self.schedule.next().unwrap_or(self.policy.max).min(self.policy.max);
        // backon multiplies in f32: round its 200.000003 ms back to 200 ms.
        let d = Duration::from_micros(u64::try_from((d.as_nanos() + 500) / 1000).unwrap_or(u64::MAX));
        self.policy.jitter.apply(d, self.rng.f64())
    }

    /// Sleeps for [`Retry::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.schedule = self.policy.schedule();
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_from_min_to_max_and_stays_there() {
        let mut r = Backoff::new(MS(100), MS(1000)).jitter(Jitter::None).start();
        let got: Vec<_> = (0..7).map(|_| r.next_delay()).collect();
        assert_eq!(got, [MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000), MS(1000)]);
        assert_eq!(r.attempts(), 7);
        r.reset();
        assert_eq!(r.attempts(), 0);
        assert_eq!(r.next_delay(), MS(100));
    }

    #[test]
    fn jitter_stays_within_its_band_and_varies() {
        for (jitter, low) in [(Jitter::Full, 0.0), (Jitter::Half, 0.5)] {
            let mut r = Backoff::new(MS(100), MS(400)).jitter(jitter).seed(7).start();
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..50 {
                let cap = MS(100 << i.min(2));
                let d = r.next_delay();
                assert!(d <= cap && d >= cap.mul_f64(low), "{jitter:?} attempt {i}: {d:?} outside {low}..=1 × {cap:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 10, "{jitter:?}: delays do not vary: {seen:?}");
        }
    }

    #[test]
    fn jitter_is_pure_and_clamped() {
        assert_eq!(Jitter::Full.apply(MS(100), 0.25), MS(25));
        assert_eq!(Jitter::Half.apply(MS(100), 0.0), MS(50));
        assert_eq!(Jitter::Half.apply(MS(100), 7.0), MS(100));
        assert_eq!(Jitter::Full.apply(MS(100), f64::NAN), MS(100));
        assert_eq!(Jitter::None.apply(MS(100), 0.3), MS(100));
    }

    #[test]
    fn same_seed_same_delays_and_max_below_min_is_raised() {
        let p = Backoff::new(MS(300), MS(10)).seed(42);
        assert_eq!(p.max(), MS(300));
        let a: Vec<_> = std::iter::repeat_with({
            let mut r = p.start();
            move || r.next_delay()
        })
        .take(5)
        .collect();
        let mut r = p.start();
        let b: Vec<_> = (0..5).map(|_| r.next_delay()).collect();
        assert_eq!(a, b);
    }
}
