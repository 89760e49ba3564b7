//! Outlier ejection with exponential backoff, as a pure state machine over time passed in.
//!
//! - A refused or failed connection ejects the endpoint at once (it is not there).
//! - Other failures (5xx answers, resets, timeouts) eject after `consecutive_failures` in a row.
//! - An ejection lasts `base × 2^(n-1)` for the n-th ejection in a row, capped at `max`.
//! - When it is over the endpoint is *probing*: it takes traffic again; one success makes it
//!   healthy (and resets the backoff), one failure ejects it again for twice as long.

use std::time::Duration;

/// Ejection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// First ejection time.
    pub base: Duration,
    /// Longest ejection time.
    pub max: Duration,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        EjectionPolicy { consecutive_failures: 5, base: Duration::from_secs(1), max: Duration::from_secs(30) }
    }
}

/// What happened to one request sent to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a server failure.
    Success,
    /// A 5xx answer, a reset, or a timeout.
    Failure,
    /// The connection was refused or could not be made.
    ConnectFailed,
}

/// One endpoint's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    failures: u32,
    ejections: u32,
    ejected_until_ns: u64,
}

impl Health {
    /// Whether the endpoint may take traffic at `now_ns`.
    pub fn available(&self, now_ns: u64) -> bool {
        now_ns >= self.ejected_until_ns
    }

    /// Whether the endpoint is ejected or probing after an ejection.
    pub fn is_recovering(&self) -> bool {
        self.ejections > 0
    }

    /// When the current ejection ends (0 if never ejected).
    pub fn ejected_until_ns(&self) -> u64 {
        self.ejected_until_ns
    }

    /// Records an outcome; returns the ejection time when this outcome ejected the endpoint.
    pub fn record(&mut self, outcome: Outcome, now_ns: u64, policy: &EjectionPolicy) -> Option<Duration> {
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                if self.available(now_ns) {
                    self.ejections = 0;
                }
                None
            }
            Outcome::Failure | Outcome::ConnectFailed => {
                if !self.available(now_ns) {
                    // Already ejected: a late answer from before the ejection changes nothing.
                    return None;
                }
                self.failures = self.failures.saturating_add(1);
                let probing = self.ejections > 0;
                if outcome == Outcome::ConnectFailed || probing || self.failures >= policy.consecutive_failures {
                    let shift = self.ejections.min(20);
                    let d = policy.base.saturating_mul(1u32 << shift).min(policy.max);
                    self.ejections = self.ejections.saturating_add(1);
                    self.failures = 0;
                    self.ejected_until_ns = now_ns.saturating_add(d.as_nanos() as u64);
                    Some(d)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn refused_connection_ejects_at_once_with_backoff() {
        let p = EjectionPolicy::default();
        let mut h = Health::default();
        assert!(h.available(0));
        assert_eq!(h.record(Outcome::ConnectFailed, 0, &p), Some(Duration::from_secs(1)));
        assert!(!h.available(S / 2));
        assert!(h.available(S));
        // probe fails: twice as long
        assert_eq!(h.record(Outcome::ConnectFailed, S, &p), Some(Duration::from_secs(2)));
        assert!(!h.available(2 * S));
        assert_eq!(h.record(Outcome::Failure, 3 * S, &p), Some(Duration::from_secs(4)));
        assert!(h.available(7 * S));
        // probe succeeds: healthy and backoff reset
        assert_eq!(h.record(Outcome::Success, 7 * S, &p), None);
        assert!(!h.is_recovering());
        assert_eq!(h.record(Outcome::ConnectFailed, 8 * S, &p), Some(Duration::from_secs(1)));
    }

    #[test]
    fn failures_eject_only_in_a_row() {
        let p = EjectionPolicy { consecutive_failures: 3, ..Default::default() };
        let mut h = Health::default();
        assert_eq!(h.record(Outcome::Failure, 0, &p), None);
        assert_eq!(h.record(Outcome::Failure, 0, &p), None);
        assert_eq!(h.record(Outcome::Success, 0, &p), None);
        assert_eq!(h.record(Outcome::Failure, 0, &p), None);
        assert_eq!(h.record(Outcome::Failure, 0, &p), None);
        assert_eq!(h.record(Outcome::Failure, 0, &p), Some(Duration::from_secs(1)));
        assert!(!h.available(1));
    }

    #[test]
    fn backoff_is_capped() {
        let p = EjectionPolicy { consecutive_failures: 1, base: Duration::from_secs(1), max: Duration::from_secs(5) };
        let mut h = Health::default();
        let mut now = 0;
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = h.record(Outcome::Failure, now, &p).unwrap();
            now += last.as_nanos() as u64;
        }
        assert_eq!(last, Duration::from_secs(5));
    }

    #[test]
    fn late_failures_while_ejected_are_ignored() {
        let p = EjectionPolicy::default();
        let mut h = Health::default();
        h.record(Outcome::ConnectFailed, 0, &p);
        assert_eq!(h.record(Outcome::ConnectFailed, 10, &p), None);
        assert_eq!(h.ejected_until_ns(), S);
    }
}
