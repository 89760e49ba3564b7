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

    /// Keys and their hashes, pinned: every replica of a caller, of any version, must agree, so
    /// a change here moves sticky users to other backends and must be deliberate.
    const HASHES: [(&[u8], u64); 7] = [
        (b"", 0xf52a_15e9_a9b5_e89b),
        (b"a", 0x02c0_bdbf_4814_20f8),
        (b"user-1", 0xc499_b5f8_a721_df58),
        (b"user-2", 0x4fb3_8f41_4590_a87b),
        (b"alice", 0xc5d1_556d_6677_4a5c),
        (b"bob", 0x6e85_72d0_8b26_8dec),
        (b"550e8400-e29b-41d4-a716-446655440000", 0x66e5_9d9b_cff0_ae0b),
    ];

    #[test]
    fn sticky_hash_values_are_pinned() {
        for (key, want) in HASHES {
            assert_eq!(sticky_hash(key), want, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn sticky_keys_land_on_pinned_backends() {
        let canary = Split::new(vec![(7, 90), (3, 10)]).unwrap();
        let half = Split::new(vec![(7, 50), (3, 50)]).unwrap();
        let thirds = Split::new(vec![(4, 1), (5, 1), (6, 1)]).unwrap();
        // key, then the backend on the 90/10, 50/50 and 1/1/1 splits
        let cases: [(&str, [usize; 3]); 7] = [
            ("", [7, 7, 4]),
            ("a", [7, 7, 5]),
            ("user-1", [7, 7, 6]),
            ("user-2", [3, 3, 5]),
            ("alice", [7, 3, 4]),
            ("bob", [7, 3, 4]),
            ("550e8400-e29b-41d4-a716-446655440000", [7, 7, 4]),
        ];
        for (key, want) in cases {
            let h = sticky_hash(key.as_bytes());
            let got = [&canary, &half, &thirds].map(|s| s.pick(h).unwrap());
            assert_eq!(got, want, "{key:?}");
        }
    }

    #[test]
    fn sticky_hash_spreads() {
        let s = Split::new(vec![(0, 50), (1, 50)]).unwrap();
        let on_zero = (0..1000).filter(|i| s.pick(sticky_hash(format!("user-{i}").as_bytes())) == Some(0)).count();
        assert!((400..600).contains(&on_zero), "{on_zero}");
    }
}
