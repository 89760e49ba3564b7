//! The shedding decision, as pure functions of a request's priority and its backend's load.

use vane_route::table::Shed;

pub use vane_route::priority::{PRIORITY_HEADER, Priority};

/// A backend's load at one instant, as shedding reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// The least waiting queue its available endpoints report; `None` when any of them reports
    /// none (an endpoint whose queue is unknown is not known to be full).
    pub least_queue: Option<f64>,
    /// This proxy's requests in flight to the backend.
    pub in_flight: u32,
}

/// Whether a request of `priority` is shed from a backend with `load` under `shed`: every
/// endpoint's queue at the threshold (half of it for `sheddable`), or the backend's in-flight
/// limit reached (80 % of it for `sheddable`). `critical` requests are never shed.
pub fn shed(priority: Priority, load: &Load, shed: &Shed) -> bool {
    let share = match priority {
        Priority::Critical => return false,
        Priority::Standard => 1.0,
        Priority::Sheddable => 0.5,
    };
    let queue_full = match (shed.queue_depth, load.least_queue) {
        (Some(limit), Some(q)) => q >= limit * share,
        _ => false,
    };
    let limit_share = if priority == Priority::Sheddable { 0.8 } else { 1.0 };
    let in_flight_full =
        shed.max_in_flight.is_some_and(|m| f64::from(load.in_flight) >= (f64::from(m) * limit_share).max(1.0));
    queue_full || in_flight_full
}

/// Whether a request whose answer must come within `deadline` cannot get it: the fastest
/// measured time to first byte of the backend's available endpoints is over it. `None` (some
/// endpoint has no measure) never refuses.
pub fn deadline_unmeetable(deadline: std::time::Duration, fastest: Option<std::time::Duration>) -> bool {
    fastest.is_some_and(|f| f > deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_unmeetable_only_when_every_endpoint_is_known_to_be_slower() {
        let ms = std::time::Duration::from_millis;
        assert!(deadline_unmeetable(ms(100), Some(ms(150))));
        assert!(!deadline_unmeetable(ms(100), Some(ms(100))));
        assert!(!deadline_unmeetable(ms(100), Some(ms(20))));
        assert!(!deadline_unmeetable(ms(100), None), "an endpoint not yet measured");
    }
    use std::time::Duration;

    #[test]
    fn who_is_shed_when() {
        let both = Shed { queue_depth: Some(10.0), max_in_flight: Some(100), retry_after: Duration::from_secs(1) };
        let queue_only = Shed { max_in_flight: None, ..both };
        let limit_only = Shed { queue_depth: None, ..both };
        let load = |q: Option<f64>, n: u32| Load { least_queue: q, in_flight: n };
        use Priority::*;
        let cases = [
            (Standard, load(Some(9.0), 0), &both, false),
            (Standard, load(Some(10.0), 0), &both, true),
            (Sheddable, load(Some(5.0), 0), &both, true),
            (Sheddable, load(Some(4.0), 0), &both, false),
            (Critical, load(Some(1e6), 1_000_000), &both, false),
            // An endpoint that reports nothing is not known to be full.
            (Standard, load(None, 0), &queue_only, false),
            (Sheddable, load(None, 0), &queue_only, false),
            (Standard, load(None, 99), &limit_only, false),
            (Standard, load(None, 100), &limit_only, true),
            (Sheddable, load(None, 80), &limit_only, true),
            (Sheddable, load(None, 79), &limit_only, false),
            (Standard, load(Some(1e6), 0), &limit_only, false),
            (Standard, load(None, 1_000), &queue_only, false),
        ];
        for (p, l, s, want) in cases {
            assert_eq!(shed(p, &l, s), want, "{p:?} {l:?} {s:?}");
        }
        // A limit of 1 sheds sheddable requests at 1, not at 0.8.
        let one = Shed { max_in_flight: Some(1), queue_depth: None, ..both };
        assert!(!shed(Sheddable, &load(None, 0), &one));
        assert!(shed(Sheddable, &load(None, 1), &one));
    }
}
