//! Keeping a certificate from the identity service: the first one as soon as possible, then a
//! new one (with a new key) at about 70 % of each one's lifetime.
//!
//! - **When**: [`next_renewal`], a pure function: 70 % of the lifetime, times a jitter between
//!   0.9 and 1.1 (so between 63 % and 77 %), so that proxies started together do not all ask
//!   at once. The lifetime is counted from when the certificate arrived.
//! - **On failure**: again after 100 ms doubling to 30 s (half jitter, `vane_runtime::backoff`),
//!   for as long as it takes; meanwhile the current certificate stays in use until it expires.
//! - **Existing connections** keep the certificate they were made with: a renewal only swaps
//!   the [`Identity`]'s `ArcSwap`, which new connections read.
//!
//! Every attempt is counted in `vane_identity_renewals_total{outcome}`.

use super::Identity;
use super::service::Client;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use vane_runtime::backoff::{Backoff, Jitter};

/// The share of a certificate's lifetime after which a new one is asked for.
pub const RENEW_AT: f64 = 0.7;

/// How far the renewal point is moved at random, as a share of itself (±).
pub const JITTER: f64 = 0.1;

/// After a failure: 100 ms doubling to 30 s, each wait between half and all of it.
pub fn retry_policy() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(30)).jitter(Jitter::Half)
}

/// When to ask for the next certificate: `not_before + (not_after − not_before) × 0.7 × j`, with
/// `j = 1 + 0.1 × (2 × unit − 1)` and `unit` in `0..=1` (out of range is clamped, NaN taken as
/// 0.5); never before `now`. A certificate already expired, or with no lifetime, is renewed at
/// once. Pure.
pub fn next_renewal(not_before: SystemTime, not_after: SystemTime, now: SystemTime, unit: f64) -> SystemTime {
    let unit = if unit.is_nan() { 0.5 } else { unit.clamp(0.0, 1.0) };
    let Ok(lifetime) = not_after.duration_since(not_before) else { return now };
    let share = RENEW_AT * (1.0 + JITTER * (2.0 * unit - 1.0));
    let at = not_before.checked_add(lifetime.mul_f64(share)).unwrap_or(not_after);
    at.max(now)
}

/// Asks for certificates for as long as the process runs.
pub async fn run(client: Client, identity: Arc<Identity>, metrics: Arc<Metrics>) {
    let mut retry = retry_policy().start();
    loop {
        let outcome = match client.request().await {
            Ok(issued) => identity.set(&issued.credentials).map(|_| issued).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        metrics.identity.renewal(outcome.is_ok());
        let wait = match outcome {
            Ok(issued) => {
                retry.reset();
                let now = SystemTime::now();
                let at = next_renewal(issued.received, issued.credentials.not_after, now, fastrand::f64());
                let wait = at.duration_since(now).unwrap_or_default();
                tracing::debug!(identity = %client.id, "next certificate in {wait:?}");
                wait
            }
            Err(why) => {
                let wait = retry.next_delay();
                let serving = match identity.load() {
                    Some(l) if super::seconds_left(l.not_after) >= 0 => "serving the current certificate",
                    Some(_) => "the current certificate has expired",
                    None => "no certificate yet",
                };
                tracing::warn!(identity = %client.id, service = %client.addr, "certificate request failed: {why}; {serving}; retrying in {wait:?}");
                identity.failed(why);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        T0 + Duration::from_secs(s)
    }

    #[test]
    fn renewal_is_at_seventy_percent_with_ten_percent_jitter() {
        // A 1000 s certificate from t = 100 s.
        let (nb, na) = (at(100), at(1100));
        for (unit, want) in [(0.5, 800.0), (0.0, 730.0), (1.0, 870.0), (0.25, 765.0), (-3.0, 730.0), (9.0, 870.0)] {
            let got = next_renewal(nb, na, at(100), unit).duration_since(T0).unwrap().as_secs_f64();
            assert!((got - want).abs() < 1e-6, "unit {unit}: {got} != {want}");
        }
        let mid = next_renewal(nb, na, at(100), f64::NAN);
        assert_eq!(mid, at(800), "NaN is the middle");
    }

    #[test]
    fn late_expired_or_empty_certificates_are_renewed_now() {
        let (nb, na) = (at(100), at(1100));
        assert_eq!(next_renewal(nb, na, at(900), 0.5), at(900), "past the point: now");
        assert_eq!(next_renewal(nb, na, at(5000), 0.5), at(5000), "expired: now");
        assert_eq!(next_renewal(na, nb, at(100), 0.5), at(100), "not_after before not_before: now");
        assert_eq!(next_renewal(nb, nb, at(100), 0.5), at(100), "no lifetime: now");
    }

    /// Property: over any lifetime and jitter, the renewal lies in the band and before expiry.
    #[test]
    fn the_renewal_stays_in_its_band() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let nb = at(rng.u64(0..1_000_000));
            let life = Duration::from_millis(rng.u64(1..100_000_000));
            let na = nb + life;
            let got = next_renewal(nb, na, nb, rng.f64()).duration_since(nb).unwrap();
            assert!(got >= life.mul_f64(0.63 - 1e-9) && got <= life.mul_f64(0.77 + 1e-9), "{got:?} of {life:?}");
            assert!(nb + got < na);
        }
    }

    #[test]
    fn failures_back_off_from_100_ms_to_30_s() {
        let p = retry_policy();
        assert_eq!((p.min(), p.max()), (Duration::from_millis(100), Duration::from_secs(30)));
        let mut r = p.seed(1).start();
        let last = (0..20).map(|_| r.next_delay()).last().unwrap();
        assert!(last >= Duration::from_secs(15) && last <= Duration::from_secs(30), "{last:?}");
    }
}
