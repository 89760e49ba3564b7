//! Exact percentiles over one run's samples (a run holds at most a few thousand requests, so
//! sorting beats a histogram's rounding).

use serde_json::{Value, json};

/// The `q`-quantile (0..=1) of sorted `v` by nearest rank; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90, p99, max and mean of `v`, in the unit given, rounded to 0.1; empty gives nulls.
pub fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let r = |x: Option<f64>| x.map(|x| (x * 10.0).round() / 10.0);
    let mean = if v.is_empty() { None } else { Some(v.iter().sum::<f64>() / v.len() as f64) };
    json!({
        "n": v.len(),
        "p50": r(quantile(&v, 0.50)),
        "p90": r(quantile(&v, 0.90)),
        "p99": r(quantile(&v, 0.99)),
        "max": r(v.last().copied()),
        "mean": r(mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
    }

    #[test]
    fn summary_shape() {
        let s = summary(vec![3.0, 1.0, 2.0, 4.0]);
        assert_eq!(s["n"], 4);
        assert_eq!(s["p50"], 2.0);
        assert_eq!(s["max"], 4.0);
        assert_eq!(s["mean"], 2.5);
        assert!(summary(vec![])["p99"].is_null());
    }
}
