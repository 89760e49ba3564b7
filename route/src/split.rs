//! Weighted backend choice for canary and blue/green splits, optionally sticky by a header.
//!
//! The choice is a pure function of a number: a uniform random draw for plain splits, or a stable
//! hash of the sticky header's value, so the same value always lands on the same backend while the
//! weights stay the same.

/// Backends of a route with cumulative weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    backends: Vec<usize>,
    weights: Vec<u32>,
    cumulative: Vec<u64>,
    total: u64,
}

impl Split {
    /// Builds a split from `(backend index, weight)` pairs. At least one weight must be non-zero.
    pub fn new(pairs: Vec<(usize, u32)>) -> Result<Split, String> {
        if pairs.is_empty() {
            return Err("a route needs at least one backend".into());
        }
        let mut cumulative = Vec::with_capacity(pairs.len());
        let mut total = 0u64;
        for (_, w) in &pairs {
            total += u64::from(*w);
            cumulative.push(total);
        }
        if total == 0 {
            return Err("all backend weights are 0; at least one must be positive".into());
        }
        Ok(Split {
            backends: pairs.iter().map(|p| p.0).collect(),
            weights: pairs.iter().map(|p| p.1).collect(),
            cumulative,
            total,
        })
    }

    /// A split with no backends (only used inside a table that failed validation).
    pub(crate) fn empty() -> Split {
        Split { backends: vec![], weights: vec![], cumulative: vec![], total: 0 }
    }

    /// Sum of the weights.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `(backend index, weight)` pairs in config order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.backends.iter().copied().zip(self.weights.iter().copied())
    }

    /// The backend for a draw `r` (any u64; reduced modulo the total weight).
    pub fn pick(&self, r: u64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return Some(self.backends[0]);
        }
        let x = r % self.total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.backends.get(i).copied()
    }
}

/// A stable 64-bit hash of a sticky key (FNV-1a followed by a finalizer so that nearby keys spread).
/// Stable across processes and versions, so every replica of a caller agrees.
pub fn sticky_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finalizer
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_cumulative_weight() {
        let s = Split::new(vec![(7, 90), (3, 10)]).unwrap();
        assert_eq!(s.pick(0), Some(7));
        assert_eq!(s.pick(89), Some(7));
        assert_eq!(s.pick(90), Some(3));
        assert_eq!(s.pick(99), Some(3));
        assert_eq!(s.pick(100), Some(7));
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let s = Split::new(vec![(0, 0), (1, 100)]).unwrap();
        assert!((0..1000).all(|r| s.pick(r) == Some(1)));
        let s = Split::new(vec![(0, 100), (1, 0)]).unwrap();
        assert!((0..1000).all(|r| s.pick(r) == Some(0)));
    }

    #[test]
    fn rejects_all_zero() {
        assert!(Split::new(vec![(0, 0), (1, 0)]).is_err());
        assert!(Split::new(vec![]).is_err());
    }

    #[test]
    fn weights_are_respected_over_uniform_draws() {
        let s = Split::new(vec![(0, 1), (1, 2), (2, 7)]).unwrap();
        let mut counts = [0u32; 3];
        for r in 0..10_000u64 {
            counts[s.pick(r).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 2000, 7000]);
    }

    #[test]
    fn sticky_hash_is_stable_and_spreads() {
        assert_eq!(sticky_hash(b"user-1"), sticky_hash(b"user-1"));
        assert_ne!(sticky_hash(b"user-1"), sticky_hash(b"user-2"));
        let s = Split::new(vec![(0, 50), (1, 50)]).unwrap();
        let on_zero = (0..1000).filter(|i| s.pick(sticky_hash(format!("user-{i}").as_bytes())) == Some(0)).count();
        assert!((400..600).contains(&on_zero), "{on_zero}");
    }
}
