//! `vane_requests_by_priority_total{direction, priority, outcome}`: every request the proxy
//! answers, by the priority it carried (`vane-priority`) and what became of it. The counters are
//! made at start (2 × 3 × 4), so a request only adds to an atomic.

use super::route::Direction;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use vane_route::priority::{Outcome, Priority};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PriorityLabels {
    direction: Direction,
    priority: &'static str,
    outcome: &'static str,
}

type ByOutcome = [Counter; Outcome::ALL.len()];

/// The counters, by direction, priority and outcome.
#[derive(Debug)]
pub struct PriorityMetrics {
    outbound: [ByOutcome; Priority::ALL.len()],
    inbound: [ByOutcome; Priority::ALL.len()],
}

impl PriorityMetrics {
    pub(super) fn register(registry: &mut Registry) -> PriorityMetrics {
        let family = Family::<PriorityLabels, Counter>::default();
        registry.register(
            "requests_by_priority",
            "Requests by their vane-priority and outcome (success, shed, rejected, failed)",
            family.clone(),
        );
        let side = |direction: Direction| {
            Priority::ALL.map(|p| {
                Outcome::ALL.map(|o| {
                    let labels = PriorityLabels { direction, priority: p.as_str(), outcome: o.as_str() };
                    family.get_or_create(&labels).clone()
                })
            })
        };
        PriorityMetrics { outbound: side(Direction::Outbound), inbound: side(Direction::Inbound) }
    }

    /// Counts one answered request.
    pub fn record(&self, direction: Direction, priority: Priority, outcome: Outcome) {
        let side = match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        };
        side[priority.index()][outcome.index()].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_lands_in_its_own_series() {
        let mut registry = Registry::with_prefix("vane");
        let m = PriorityMetrics::register(&mut registry);
        m.record(Direction::Outbound, Priority::Sheddable, Outcome::Shed);
        m.record(Direction::Outbound, Priority::Sheddable, Outcome::Shed);
        m.record(Direction::Inbound, Priority::Critical, Outcome::Success);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = |l: &str| text.lines().find(|x| x.starts_with(l)).map(|x| x.rsplit(' ').next().unwrap().to_string());
        let s = r#"vane_requests_by_priority_total{direction="outbound",priority="sheddable",outcome="shed"}"#;
        assert_eq!(line(s).as_deref(), Some("2"));
        let c = r#"vane_requests_by_priority_total{direction="inbound",priority="critical",outcome="success"}"#;
        assert_eq!(line(c).as_deref(), Some("1"));
        let z = r#"vane_requests_by_priority_total{direction="outbound",priority="standard",outcome="failed"}"#;
        assert_eq!(line(z).as_deref(), Some("0"), "every series is there from the start");
    }
}
