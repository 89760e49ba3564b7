//! Length distributions for prompts and outputs, sampled from a seeded generator.
//!
//! Written as `kind:params`, for example `fixed:128`, `uniform:64:512`, `exp:200:2048`
//! (mean, cap) or `lognormal:400:0.8:4096` (median, sigma, cap). Every sample is at least 1.

use std::fmt;
use std::str::FromStr;

/// A distribution of token counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Always `n`.
    Fixed(u32),
    /// Uniform over `lo..=hi`.
    Uniform {
        /// Smallest value.
        lo: u32,
        /// Largest value.
        hi: u32,
    },
    /// Exponential with this mean, cut at `max`.
    Exp {
        /// Mean before the cut.
        mean: f64,
        /// Largest value.
        max: u32,
    },
    /// Log-normal with this median and shape, cut at `max` (LLM prompt and answer lengths have
    /// this long right tail).
    LogNormal {
        /// Median (e^mu).
        median: f64,
        /// Standard deviation of the underlying normal.
        sigma: f64,
        /// Largest value.
        max: u32,
    },
}

/// A distribution that could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseDistError(String);

impl fmt::Display for ParseDistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected fixed:N, uniform:LO:HI, exp:MEAN[:MAX] or lognormal:MEDIAN:SIGMA[:MAX]", self.0)
    }
}

impl std::error::Error for ParseDistError {}

/// The cap when none is given: the simulator's default `--max-model-len` is 16384.
const DEFAULT_MAX: u32 = 8192;

impl FromStr for Dist {
    type Err = ParseDistError;

    fn from_str(s: &str) -> Result<Dist, ParseDistError> {
        let err = || ParseDistError(s.to_string());
        let mut parts = s.split(':');
        let kind = parts.next().ok_or_else(err)?;
        let nums: Vec<f64> = parts.map(|p| p.parse::<f64>().map_err(|_| err())).collect::<Result<_, _>>()?;
        if nums.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(err());
        }
        let int = |x: f64| if x >= 1.0 && x <= u32::MAX as f64 && x.fract() == 0.0 { Ok(x as u32) } else { Err(err()) };
        let d = match (kind, nums.as_slice()) {
            ("fixed", [n]) => Dist::Fixed(int(*n)?),
            ("uniform", [lo, hi]) if lo <= hi => Dist::Uniform { lo: int(*lo)?, hi: int(*hi)? },
            ("exp", [mean]) if *mean >= 1.0 => Dist::Exp { mean: *mean, max: DEFAULT_MAX },
            ("exp", [mean, max]) if *mean >= 1.0 => Dist::Exp { mean: *mean, max: int(*max)? },
            ("lognormal", [median, sigma]) if *median >= 1.0 => {
                Dist::LogNormal { median: *median, sigma: *sigma, max: DEFAULT_MAX }
            }
            ("lognormal", [median, sigma, max]) if *median >= 1.0 => {
                Dist::LogNormal { median: *median, sigma: *sigma, max: int(*max)? }
            }
            _ => return Err(err()),
        };
        Ok(d)
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Fixed(n) => write!(f, "fixed:{n}"),
            Dist::Uniform { lo, hi } => write!(f, "uniform:{lo}:{hi}"),
            Dist::Exp { mean, max } => write!(f, "exp:{mean}:{max}"),
            Dist::LogNormal { median, sigma, max } => write!(f, "lognormal:{median}:{sigma}:{max}"),
        }
    }
}

impl Dist {
    /// One sample, at least 1.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let v = match *self {
            Dist::Fixed(n) => return n,
            Dist::Uniform { lo, hi } => return rng.u32(lo..=hi),
            Dist::Exp { mean, max } => (exp1(rng) * mean).round().min(max as f64),
            Dist::LogNormal { median, sigma, max } => (median * (sigma * normal(rng)).exp()).round().min(max as f64),
        };
        (v as u32).max(1)
    }

    /// The mean of `n` samples from a fixed seed (exact enough for sizing a run; the cap makes
    /// the closed form of a cut log-normal awkward).
    pub fn mean_estimate(&self) -> f64 {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let n = 200_000;
        (0..n).map(|_| self.sample(&mut rng) as f64).sum::<f64>() / n as f64
    }

    /// The largest value a sample can take.
    pub fn max(&self) -> u32 {
        match *self {
            Dist::Fixed(n) => n,
            Dist::Uniform { hi, .. } => hi,
            Dist::Exp { max, .. } | Dist::LogNormal { max, .. } => max,
        }
    }
}

/// A standard exponential sample (mean 1).
pub fn exp1(rng: &mut fastrand::Rng) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    -(1.0 - rng.f64()).ln()
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["fixed:128", "uniform:64:512", "exp:200:2048", "lognormal:400:0.8:4096"] {
            let d: Dist = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("exp:200".parse::<Dist>().unwrap(), Dist::Exp { mean: 200.0, max: DEFAULT_MAX });
        for bad in ["", "fixed", "fixed:0", "fixed:1.5", "uniform:9:3", "lognormal:-1:1", "normal:3:1", "exp:x"] {
            assert!(bad.parse::<Dist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_follow_the_shape() {
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 20_000;
        let d: Dist = "lognormal:400:0.8:100000".parse().unwrap();
        let mut v: Vec<u32> = (0..n).map(|_| d.sample(&mut rng)).collect();
        v.sort_unstable();
        let median = v[n / 2] as f64;
        assert!((median - 400.0).abs() < 20.0, "median {median}");
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        // E = median * exp(sigma^2 / 2) = 400 * 1.377
        assert!((mean - 551.0).abs() < 25.0, "mean {mean}");

        assert!((d.mean_estimate() - 551.0).abs() < 10.0);
        assert_eq!(Dist::Fixed(9).mean_estimate(), 9.0);

        let d: Dist = "exp:100:300".parse().unwrap();
        let v: Vec<u32> = (0..n).map(|_| d.sample(&mut rng)).collect();
        assert!(v.iter().all(|&x| (1..=300).contains(&x)));

        let d: Dist = "uniform:5:9".parse().unwrap();
        assert!((0..1000).map(|_| d.sample(&mut rng)).all(|x| (5..=9).contains(&x)));
    }

    #[test]
    fn same_seed_same_samples() {
        let d: Dist = "lognormal:128:0.6".parse().unwrap();
        let a: Vec<u32> = {
            let mut r = fastrand::Rng::with_seed(42);
            (0..100).map(|_| d.sample(&mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = fastrand::Rng::with_seed(42);
            (0..100).map(|_| d.sample(&mut r)).collect()
        };
        assert_eq!(a, b);
    }
}
