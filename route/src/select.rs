//! Endpoint selection: which endpoint of a backend takes a request, behind one small trait.
//!
//! A [`Selection`] reads what it needs about a backend's endpoints at one instant through an
//! [`EndpointView`], skips those already [`Tried`] for this request, and decides from the
//! caller's [`Draw`] (a round-robin counter value and two random numbers), so that the decision
//! is a pure function: the proxy owns the endpoints' state, the counters and the random source.
//!
//! - [`RoundRobin`]: in turn, from the counter value.
//! - [`LeastRequest`]: the fewest requests in flight; ties go to the first met from a random offset.
//! - [`PowerOfTwo`]: [`balance::p2c`] over the endpoints' cost.
//!
//! Ejected endpoints are skipped, unless every untried endpoint is ejected: then ejection is
//! ignored among the untried ones (*panic mode*, as in Envoy), so that a backend whose only
//! endpoint failed once is tried again rather than failing fast for seconds. A choice made so is
//! marked [`Choice::panic`]. There is no choice only when every endpoint has been tried.
//!
//! [`select`] dispatches on a backend's [`Algorithm`].
//!
//! ```
//! use vane_route::config::Algorithm;
//! use vane_route::select::{select, Draw, EndpointView, Tried};
//!
//! struct Costs(Vec<f64>);
//! impl EndpointView for Costs {
//!     fn len(&self) -> usize { self.0.len() }
//!     fn available(&self, _: usize) -> bool { true }
//!     fn in_flight(&self, _: usize) -> u32 { 0 }
//!     fn cost(&self, i: usize) -> f64 { self.0[i] }
//! }
//!
//! let view = Costs(vec![5.0, 1.0, 3.0]);
//! let draw = Draw { rr: 0, r1: 0, r2: 0, explore: u64::MAX };
//! let choice = select(Algorithm::P2c, &view, Tried::NONE, draw).unwrap();
//! assert_eq!(choice.index, 1); // endpoints 0 and 1 were drawn; 1 is cheaper
//! ```

use crate::balance;
use crate::config::Algorithm;

/// What a selection policy may read about a backend's endpoints at one instant, by index
/// `0..len()`. Indexes passed in are always below `len()`.
pub trait EndpointView {
    /// Number of endpoints.
    fn len(&self) -> usize;

    /// Whether there are no endpoints.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether endpoint `i` may take traffic (it is not ejected).
    fn available(&self, i: usize) -> bool;

    /// Requests this proxy has outstanding to endpoint `i`.
    fn in_flight(&self, i: usize) -> u32;

    /// Endpoint `i`'s balancer cost ([`balance::cost`]); lower is better.
    fn cost(&self, i: usize) -> f64;
}

/// The endpoints (by index) already tried for one request, so that a retry goes elsewhere.
///
/// A bit set of 64: indexes of 64 and above are never recorded and always count as untried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    /// Nothing tried yet.
    pub const NONE: Tried = Tried(0);

    /// Nothing tried yet.
    pub const fn new() -> Tried {
        Tried::NONE
    }

    /// Records endpoint `i` as tried (no effect for `i >= 64`).
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }

    /// Whether endpoint `i` was recorded as tried (never for `i >= 64`).
    pub fn contains(self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }

    /// Whether nothing was recorded.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The caller's draws for one decision.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    /// The value fetched (and incremented) from the backend's round-robin counter.
    pub rr: usize,
    /// A uniform random number.
    pub r1: u64,
    /// Another uniform random number, independent of `r1`.
    pub r2: u64,
    /// A third, for exploration ([`EXPLORE`]): below `EXPLORE × u64::MAX` the first drawn
    /// candidate is taken without comparing (`u64::MAX` never explores).
    pub explore: u64,
}

/// The endpoint chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Its index in the view.
    pub index: usize,
    /// It was chosen while every untried endpoint was ejected (panic mode).
    pub panic: bool,
}

/// A policy that chooses one endpoint for a request.
pub trait Selection {
    /// Chooses among the endpoints of `view` not in `tried`: among the available ones, or, when
    /// none of those is, among all untried ones (panic mode). `None` only when every endpoint has
    /// been tried (or there are none).
    fn select<V: EndpointView + ?Sized>(&self, view: &V, tried: Tried, draw: Draw) -> Option<Choice>;
}

/// The endpoints a policy may choose from, for one decision.
struct Eligible<'a, V: ?Sized> {
    view: &'a V,
    tried: Tried,
    panic: bool,
    /// Every endpoint is eligible (nothing tried, and all available or panic): index = position.
    all: bool,
}

impl<'a, V: EndpointView + ?Sized> Eligible<'a, V> {
    /// `None` when no endpoint is untried.
    fn scan(view: &'a V, tried: Tried) -> Option<Self> {
        let n = view.len();
        let mut untried = 0;
        let mut usable = 0;
        for i in (0..n).filter(|&i| !tried.contains(i)) {
            untried += 1;
            if view.available(i) {
                usable += 1;
            }
        }
        if untried == 0 {
            return None;
        }
        let panic = usable == 0;
        let all = tried.is_empty() && (panic || usable == n);
        Some(Eligible { view, tried, panic, all })
    }

    fn contains(&self, i: usize) -> bool {
        self.all || (!self.tried.contains(i) && (self.panic || self.view.available(i)))
    }

    fn choice(&self, index: usize) -> Choice {
        Choice { index, panic: self.panic }
    }
}

/// In turn: the first eligible endpoint from `rr mod len`, like a Kubernetes Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundRobin;

impl Selection for RoundRobin {
    fn select<V: EndpointView + ?Sized>(&self, view: &V, tried: Tried, draw: Draw) -> Option<Choice> {
        let e = Eligible::scan(view, tried)?;
        let n = view.len();
        let start = draw.rr % n;
        (0..n).map(|k| (start + k) % n).find(|&i| e.contains(i)).map(|i| e.choice(i))
    }
}

/// The eligible endpoint with the fewest requests in flight from this proxy; among equals, the
/// first met going round from offset `r1 mod len`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeastRequest;

impl Selection for LeastRequest {
    fn select<V: EndpointView + ?Sized>(&self, view: &V, tried: Tried, draw: Draw) -> Option<Choice> {
        let e = Eligible::scan(view, tried)?;
        let n = view.len();
        let offset = (draw.r1 % n as u64) as usize;
        (0..n)
            .map(|k| (offset + k) % n)
            .filter(|&i| e.contains(i))
            .min_by_key(|&i| view.in_flight(i))
            .map(|i| e.choice(i))
    }
}

/// Power of two choices ([`balance::p2c`] with `r1`, `r2`) over the eligible endpoints' cost.
///
/// When nothing was tried and every endpoint is eligible (the common case), the endpoints are
/// the candidates as they are and nothing is allocated; otherwise the eligible indexes are listed
/// first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerOfTwo;

/// The share of power-of-two decisions that take the first drawn candidate without comparing,
/// when that candidate is idle (nothing in flight from this proxy), neither penalized nor held
/// back, and at most [`EXPLORE_WITHIN`] times as costly as the other. Without it, an endpoint that
/// lost while nothing was in flight is never sampled again, and of two equal replicas the one a
/// little faster by chance takes everything until its estimate decays; with it, every endpoint
/// keeps being measured, and a request is never explored onto a replica known to be far busier.
pub const EXPLORE: f64 = 0.02;

/// See [`EXPLORE`].
pub const EXPLORE_WITHIN: f64 = 4.0;

impl Selection for PowerOfTwo {
    fn select<V: EndpointView + ?Sized>(&self, view: &V, tried: Tried, draw: Draw) -> Option<Choice> {
        let e = Eligible::scan(view, tried)?;
        let candidates: Vec<usize> =
            if e.all { Vec::new() } else { (0..view.len()).filter(|&i| e.contains(i)).collect() };
        let at = |j: usize| if e.all { j } else { candidates[j] };
        let m = if e.all { view.len() } else { candidates.len() };
        if draw.explore < (EXPLORE * u64::MAX as f64) as u64
            && let Some((a, Some(b))) = balance::p2c_pair(m, draw.r1, draw.r2)
        {
            let (a, b) = (at(a), at(b));
            let (ca, cb) = (view.cost(a), view.cost(b));
            if view.in_flight(a) == 0 && ca < balance::PENALIZED && ca <= EXPLORE_WITHIN * cb {
                return Some(e.choice(a));
            }
        }
        let index = at(balance::p2c(m, draw.r1, draw.r2, |j| view.cost(at(j)))?);
        Some(e.choice(index))
    }
}

/// Chooses by a backend's algorithm. `P2c`, `P2cClassic` and `P2cLatency` all use [`PowerOfTwo`]:
/// they differ only in the cost the view reports.
pub fn select<V: EndpointView + ?Sized>(algorithm: Algorithm, view: &V, tried: Tried, draw: Draw) -> Option<Choice> {
    match algorithm {
        Algorithm::RoundRobin => RoundRobin.select(view, tried, draw),
        Algorithm::LeastRequest => LeastRequest.select(view, tried, draw),
        Algorithm::P2c | Algorithm::P2cClassic | Algorithm::P2cLatency => PowerOfTwo.select(view, tried, draw),
    }
}

#[cfg(test)]
mod tests;
