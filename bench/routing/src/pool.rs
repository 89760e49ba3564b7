//! A pool of distinct prompts that the arrivals draw from, for duplicate-heavy traffic (the
//! coalescing benchmark): `n` prompts, each with its own prompt and output length drawn once,
//! and each arrival takes prompt `k` (0-based) with a Zipf probability ∝ 1 / (k + 1)^s. `s = 0`
//! draws uniformly; `s = 1` is the classic Zipf law, where a few popular questions make up much
//! of the traffic.
//!
//! Two arrivals with the same prompt number send the same body, so a proxy may answer both with
//! one upstream call.

use crate::dist::Dist;
use crate::schedule::Arrival;

/// The prompts and their popularity.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Per prompt: (prompt tokens, output tokens).
    sizes: Vec<(u32, u32)>,
    /// Cumulative probabilities, ending at 1.
    cdf: Vec<f64>,
}

/// Cumulative Zipf probabilities over `n` ranks with exponent `s` (∝ 1 / rank^s).
pub fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    if let Some(last) = cdf.last_mut() {
        *last = 1.0;
    }
    cdf
}

impl Pool {
    /// `n` prompts with Zipf exponent `s`; their lengths are drawn from `prompt` and `output` with
    /// `seed` (a mixture's class is shared by a prompt and its output, as in the schedule).
    pub fn new(n: usize, s: f64, prompt: &Dist, output: &Dist, seed: u64) -> anyhow::Result<Self> {
        if n == 0 || n > 1_000_000 {
            anyhow::bail!("the prompt pool needs 1 to 1000000 prompts, not {n}");
        }
        if !(s.is_finite() && s >= 0.0) {
            anyhow::bail!("the Zipf exponent must be a finite number >= 0, not {s}");
        }
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5851_f42d_4c95_7f2d);
        let mixed = prompt.is_mix() || output.is_mix();
        let sizes = (0..n)
            .map(|_| {
                let class = if mixed { rng.f64() } else { 0.0 };
                (prompt.sample_in_class(class, &mut rng), output.sample_in_class(class, &mut rng))
            })
            .collect();
        Ok(Self { sizes, cdf: zipf_cdf(n, s) })
    }

    /// How many prompts.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// Whether the pool is empty (never: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// The prompt a uniform draw `u` in 0..1 picks.
    pub fn pick(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }

    /// Prompt `k`'s (prompt tokens, output tokens).
    pub fn sizes(&self, k: usize) -> (u32, u32) {
        self.sizes[k]
    }

    /// Gives every arrival a prompt of the pool (drawn with `seed`), with that prompt's sizes;
    /// returns each arrival's prompt number.
    pub fn assign(&self, schedule: &mut [Arrival], seed: u64) -> Vec<u32> {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x2545_f491_4f6c_dd1d);
        schedule
            .iter_mut()
            .map(|a| {
                let k = self.pick(rng.f64());
                (a.prompt_tokens, a.output_tokens) = self.sizes[k];
                k as u32
            })
            .collect()
    }
}

/// The prompt text of pool prompt `k` with `tokens` tokens (4 characters each, the simulator's
/// count): its number, then filler, so that different prompts differ and equal ones are equal.
pub fn prompt_text(k: u32, tokens: u32, filler: &str) -> String {
    let head = format!("{k:07} ");
    let rest = (4 * tokens as usize).saturating_sub(head.len()).min(filler.len());
    head + &filler[..rest]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zipf_probabilities() {
        let c = zipf_cdf(100, 1.0);
        assert_eq!(c.len(), 100);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(c[99], 1.0);
        // Rank 1 has 1 / H_100 = 0.1928 of the mass, rank 2 half of that.
        assert!((c[0] - 0.1928).abs() < 1e-3, "{}", c[0]);
        assert!((c[1] - c[0] - c[0] / 2.0).abs() < 1e-9);
        let u = zipf_cdf(4, 0.0);
        assert_eq!(u, vec![0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn picks_follow_the_cdf() {
        let d = Dist::Fixed(10);
        let p = Pool::new(4, 0.0, &d, &d, 1).unwrap();
        assert_eq!([0.0, 0.2499, 0.25, 0.7, 0.99999].map(|u| p.pick(u)), [0, 0, 1, 2, 3]);
        let p = Pool::new(100, 1.0, &d, &d, 1).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let n = 50_000;
        let top = (0..n).filter(|_| p.pick(rng.f64()) == 0).count() as f64 / n as f64;
        assert!((top - 0.1928).abs() < 0.01, "rank 1 drawn {top}");
        assert!(Pool::new(0, 1.0, &d, &d, 1).is_err());
        assert!(Pool::new(10, -1.0, &d, &d, 1).is_err());
    }

    #[test]
    fn same_prompt_same_sizes_and_same_seed_same_draws() {
        let prompt: Dist = "lognormal:400:0.8:4096".parse().unwrap();
        let output: Dist = "lognormal:128:0.6:1024".parse().unwrap();
        let pool = Pool::new(100, 1.0, &prompt, &output, 9).unwrap();
        let mut a = crate::schedule::poisson(20.0, Duration::from_secs(30), &prompt, &output, 9);
        let mut b = a.clone();
        let ids = pool.assign(&mut a, 9);
        assert_eq!(ids, pool.assign(&mut b, 9));
        assert_eq!(a, b);
        for (arr, &k) in a.iter().zip(&ids) {
            assert_eq!((arr.prompt_tokens, arr.output_tokens), pool.sizes(k as usize));
        }
        let distinct: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
        assert!(distinct.len() < 100 && distinct.len() > 50, "{} distinct of {}", distinct.len(), ids.len());
    }

    #[test]
    fn prompt_texts() {
        let filler = "tok ".repeat(100);
        let t = prompt_text(42, 5, &filler);
        assert_eq!(t, "0000042 tok tok tok ");
        assert_eq!(t.len(), 20);
        assert_ne!(prompt_text(1, 5, &filler), prompt_text(2, 5, &filler));
        assert_eq!(prompt_text(3, 1, &filler), "0000003 ", "never shorter than the number");
    }
}
