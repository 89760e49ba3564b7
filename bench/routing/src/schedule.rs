//! The open-loop schedule: Poisson arrivals, each with its prompt and output length, all drawn
//! from one seed before the run starts.
//!
//! The same seed gives the same requests at the same offsets whatever is measured, so every
//! balancing algorithm faces exactly the same workload. Gaps and lengths come from separate
//! generators, so a different rate keeps the same sequence of request sizes. With mixtures, a
//! third generator draws each request's class, shared by its prompt and its output (see
//! [`Dist::sample_in_class`]).

use crate::dist::{Dist, exp1};
use std::time::Duration;

/// One request of the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    /// When it is due, from the start of the run.
    pub at: Duration,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Output length in tokens (`max_tokens`).
    pub output_tokens: u32,
}

/// Poisson arrivals at `rate` per second during `span`.
pub fn poisson(rate: f64, span: Duration, prompt: &Dist, output: &Dist, seed: u64) -> Vec<Arrival> {
    let mut gaps = fastrand::Rng::with_seed(seed);
    let mut sizes = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut classes = fastrand::Rng::with_seed(seed ^ 0x3c6e_f372_fe94_f82b);
    let mixed = prompt.is_mix() || output.is_mix();
    let end = span.as_secs_f64();
    let mut t = 0.0;
    let mut out = Vec::with_capacity((rate * end * 1.1) as usize + 16);
    if rate.is_nan() || rate <= 0.0 {
        return out;
    }
    loop {
        t += exp1(&mut gaps) / rate;
        if t >= end {
            return out;
        }
        let (prompt_tokens, output_tokens) = if mixed {
            let class = classes.f64();
            (prompt.sample_in_class(class, &mut sizes), output.sample_in_class(class, &mut sizes))
        } else {
            (prompt.sample(&mut sizes), output.sample(&mut sizes))
        };
        out.push(Arrival { at: Duration::from_secs_f64(t), prompt_tokens, output_tokens });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_gaps_are_poisson() {
        let d = Dist::Fixed(10);
        let a = poisson(200.0, Duration::from_secs(50), &d, &d, 1);
        let n = a.len() as f64;
        assert!((n - 10_000.0).abs() < 300.0, "{n} arrivals");
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        // Exponential gaps: the coefficient of variation is 1.
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.05, "cv {cv}");
    }

    #[test]
    fn same_seed_same_schedule_and_sizes_independent_of_rate() {
        let p: Dist = "lognormal:400:0.8".parse().unwrap();
        let o: Dist = "uniform:10:300".parse().unwrap();
        let a = poisson(50.0, Duration::from_secs(10), &p, &o, 9);
        let b = poisson(50.0, Duration::from_secs(10), &p, &o, 9);
        assert_eq!(a, b);
        let c = poisson(80.0, Duration::from_secs(10), &p, &o, 9);
        let sizes = |v: &[Arrival]| v.iter().take(200).map(|x| (x.prompt_tokens, x.output_tokens)).collect::<Vec<_>>();
        assert_eq!(sizes(&a), sizes(&c));
        assert!(poisson(0.0, Duration::from_secs(1), &p, &o, 1).is_empty());
    }
}
