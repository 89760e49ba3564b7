//! Choosing an endpoint of a backend for one attempt: the backend's live state seen through
//! [`EndpointView`], the decision made by the pure [`vane_route::select`] policies.

use super::backend::Backend;
use super::endpoint::{Endpoint, Policy};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vane_route::select::{self, Draw, EndpointView, Tried};
use vane_route::table::Settings;

/// A backend's endpoints at one instant, as the selection policies read them. It remembers the
/// age of the reported load behind the last two costs computed (the two power-of-two candidates),
/// so that the age behind the decision can be recorded.
struct View<'a> {
    endpoints: &'a [Arc<Endpoint>],
    settings: &'a Settings,
    policy: &'a Policy,
    now: u64,
    ages: Cell<[(usize, Option<u64>); 2]>,
}

impl EndpointView for View<'_> {
    fn len(&self) -> usize {
        self.endpoints.len()
    }

    fn available(&self, i: usize) -> bool {
        self.endpoints[i].available(self.now)
    }

    fn in_flight(&self, i: usize) -> u32 {
        self.endpoints[i].in_flight()
    }

    fn cost(&self, i: usize) -> f64 {
        let (c, age) = self.endpoints[i].cost(self.now, self.settings, self.policy);
        let [_, last] = self.ages.get();
        self.ages.set([last, (i, age)]);
        c
    }
}

/// Picks an endpoint of `backend` not in `tried`, by the backend's algorithm (when every untried
/// one is ejected, among those: panic mode). Returns its index and the age in nanoseconds of the
/// reported load the decision used, if any; `None` when every endpoint was tried (or there is none).
pub fn pick(backend: &Backend, tried: Tried, rng: &mut fastrand::Rng) -> Option<(usize, Option<u64>)> {
    let view = View {
        endpoints: &backend.endpoints,
        settings: &backend.settings,
        policy: &backend.policy,
        now: crate::now_ns(),
        ages: Cell::new([(usize::MAX, None); 2]),
    };
    let rr = match backend.policy.algorithm {
        vane_route::config::Algorithm::RoundRobin => backend.rr.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let draw = Draw { rr, r1: rng.u64(..), r2: rng.u64(..) };
    let choice = select::select(backend.policy.algorithm, &view, tried, draw)?;
    let age = view.ages.get().iter().find(|(i, _)| *i == choice.index).and_then(|(_, a)| *a);
    Some((choice.index, age))
}
