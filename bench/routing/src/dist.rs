//! Length distributions for prompts and outputs, sampled from a seeded generator.
//!
//! Written as `kind:params`, for example `fixed:128`, `uniform:64:512`, `exp:200:2048`
//! (mean, cap) or `lognormal:400:0.8:4096` (median, sigma, cap). Every sample is at least 1.
//!
//! A mixture is `mix:W*DIST+W*DIST+...`, e.g. `mix:0.9*lognormal:200:0.6:2048+0.1*fixed:2000`:
//! each sample comes from one part, drawn with probability weight / sum of weights. The part is
//! chosen by a uniform number the caller may pass ([`Dist::sample_in_class`]), so that a prompt
//! mixture and an output mixture with the same weights draw the same class for one request (a
//! long prompt comes with a long answer).

use std::fmt;
use std::str::FromStr;

/// A distribution of token counts.
#[derive(Clone, Debug, PartialEq)]
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
    /// A mixture: `(weight, part)`, weights > 0; parts are not mixtures themselves.
    Mix(Vec<(f64, Dist)>),
}

/// A distribution that could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseDistError(String);

impl fmt::Display for ParseDistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected fixed:N, uniform:LO:HI, exp:MEAN[:MAX], lognormal:MEDIAN:SIGMA[:MAX] or mix:W*DIST+W*DIST...",
            self.0
        )
    }
}

impl std::error::Error for ParseDistError {}

/// The cap when none is given: the simulator's default `--max-model-len` is 16384.
const DEFAULT_MAX: u32 = 8192;

impl FromStr for Dist {
    type Err = ParseDistError;

    fn from_str(s: &str) -> Result<Dist, ParseDistError> {
        let err = || ParseDistError(s.to_string());
        if let Some(rest) = s.strip_prefix("mix:") {
            let parts = rest
                .split('+')
                .map(|p| {
                    let (w, d) = p.split_once('*').ok_or_else(err)?;
                    let w: f64 = w.trim().parse().map_err(|_| err())?;
                    let d: Dist = d.trim().parse()?;
                    if !(w.is_finite() && w > 0.0) || matches!(d, Dist::Mix(_)) {
                        return Err(err());
                    }
                    Ok((w, d))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Dist::Mix(parts));
        }
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
            Dist::Mix(parts) => {
                f.write_str("mix:")?;
                for (i, (w, d)) in parts.iter().enumerate() {
                    write!(f, "{}{w}*{d}", if i == 0 { "" } else { "+" })?;
                }
                Ok(())
            }
        }
    }
}

impl Dist {
    /// One sample, at least 1.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        match self {
            Dist::Mix(parts) => {
                let class = rng.f64();
                pick(parts, class).sample(rng)
            }
            _ => self.sample_in_class(0.0, rng),
        }
    }

    /// One sample, at least 1; a mixture takes the part where `class` (uniform in 0..1) falls
    /// on its cumulative weights, other distributions ignore it.
    pub fn sample_in_class(&self, class: f64, rng: &mut fastrand::Rng) -> u32 {
        let v = match *self {
            Dist::Fixed(n) => return n,
            Dist::Uniform { lo, hi } => return rng.u32(lo..=hi),
            Dist::Exp { mean, max } => (exp1(rng) * mean).round().min(max as f64),
            Dist::LogNormal { median, sigma, max } => (median * (sigma * normal(rng)).exp()).round().min(max as f64),
            Dist::Mix(ref parts) => return pick(parts, class).sample(rng),
        };
        (v as u32).max(1)
    }

    /// Whether this is a mixture.
    pub fn is_mix(&self) -> bool {
        matches!(self, Dist::Mix(_))
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
            Dist::Mix(ref parts) => parts.iter().map(|(_, d)| d.max()).max().unwrap_or(1),
        }
    }
}

/// The part of a mixture where `class` falls on the cumulative weights.
fn pick(parts: &[(f64, Dist)], class: f64) -> &Dist {
    let total: f64 = parts.iter().map(|(w, _)| w).sum();
    let mut at = class.clamp(0.0, 1.0) * total;
    for (w, d) in parts {
        if at < *w {
            return d;
        }
        at -= w;
    }
    &parts[parts.len() - 1].1
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
        let m = "mix:0.9*lognormal:200:0.6:2048+0.1*fixed:2000";
        assert_eq!(m.parse::<Dist>().unwrap().to_string(), m);
        assert_eq!(m.parse::<Dist>().unwrap().max(), 2048);
        for bad in [
            "",
            "fixed",
            "fixed:0",
            "fixed:1.5",
            "uniform:9:3",
            "lognormal:-1:1",
            "normal:3:1",
            "exp:x",
            "mix:",
            "mix:0.5",
            "mix:0*fixed:3",
            "mix:1*fixed:3+x*fixed:4",
            "mix:1*mix:1*fixed:3",
        ] {
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
    fn a_mixture_draws_its_parts_by_weight_and_shares_the_class() {
        let prompt: Dist = "mix:0.9*lognormal:200:0.6:2048+0.1*fixed:2000".parse().unwrap();
        let output: Dist = "mix:0.9*lognormal:64:0.6:512+0.1*uniform:512:1024".parse().unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let n = 20_000;
        let (mut long, mut paired) = (0, 0);
        for _ in 0..n {
            let class = rng.f64();
            let p = prompt.sample_in_class(class, &mut rng);
            let o = output.sample_in_class(class, &mut rng);
            if p == 2000 {
                long += 1;
                paired += u32::from((512..=1024).contains(&o));
            }
        }
        assert!((long as f64 / n as f64 - 0.1).abs() < 0.01, "{long} long of {n}");
        assert_eq!(paired, long, "a long prompt always comes with a long answer");
        let mean = prompt.mean_estimate();
        // 0.9 * 200 * exp(0.18) + 0.1 * 2000
        assert!((mean - 415.5).abs() < 10.0, "mean {mean}");
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
