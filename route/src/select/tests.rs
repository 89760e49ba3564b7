use super::*;

const UP: bool = true;
const DOWN: bool = false;

/// Endpoints as `(available, in_flight, cost)`.
struct Fake(Vec<(bool, u32, f64)>);

impl EndpointView for Fake {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn available(&self, i: usize) -> bool {
        self.0[i].0
    }
    fn in_flight(&self, i: usize) -> u32 {
        self.0[i].1
    }
    fn cost(&self, i: usize) -> f64 {
        self.0[i].2
    }
}

fn tried(indexes: &[usize]) -> Tried {
    let mut t = Tried::new();
    for &i in indexes {
        t.insert(i);
    }
    t
}

fn draw(rr: usize, r1: u64, r2: u64) -> Draw {
    Draw { rr, r1, r2, explore: u64::MAX }
}

/// What is checked, the endpoints, the tried set, the draw, and the choice expected as
/// `(index, panic)`.
type Case = (&'static str, Vec<(bool, u32, f64)>, &'static [usize], Draw, Option<(usize, bool)>);

fn run(policy: &impl Selection, cases: Vec<Case>) {
    for (what, endpoints, t, d, want) in cases {
        let got = policy.select(&Fake(endpoints), tried(t), d).map(|c| (c.index, c.panic));
        assert_eq!(got, want, "{what}");
    }
}

/// Available endpoints with nothing in flight and equal costs.
fn up(n: usize) -> Vec<(bool, u32, f64)> {
    vec![(UP, 0, 1.0); n]
}

fn with_health(health: &[bool]) -> Vec<(bool, u32, f64)> {
    health.iter().map(|&h| (h, 0, 1.0)).collect()
}

#[test]
fn round_robin() {
    run(
        &RoundRobin,
        vec![
            ("first in turn", up(3), &[], draw(0, 0, 0), Some((0, false))),
            ("next in turn", up(3), &[], draw(1, 0, 0), Some((1, false))),
            ("wraps", up(3), &[], draw(3, 0, 0), Some((0, false))),
            ("wraps again", up(3), &[], draw(5, 0, 0), Some((2, false))),
            ("counter at its maximum", up(3), &[], draw(usize::MAX, 0, 0), Some((0, false))),
            ("counter at its maximum, two endpoints", up(2), &[], draw(usize::MAX, 0, 0), Some((1, false))),
            ("skips ejected", with_health(&[UP, DOWN, UP]), &[], draw(1, 0, 0), Some((2, false))),
            ("skips ejected and wraps", with_health(&[UP, UP, DOWN]), &[], draw(2, 0, 0), Some((0, false))),
            ("skips tried", up(3), &[1], draw(1, 0, 0), Some((2, false))),
            ("panic: all ejected", with_health(&[DOWN, DOWN, DOWN]), &[], draw(1, 0, 0), Some((1, true))),
            ("panic among untried", with_health(&[DOWN, DOWN, UP]), &[2], draw(2, 0, 0), Some((0, true))),
            ("panic: only the tried one is up", with_health(&[UP, DOWN]), &[0], draw(0, 0, 0), Some((1, true))),
            ("empty backend", vec![], &[], draw(0, 0, 0), None),
            ("all tried", up(2), &[0, 1], draw(0, 0, 0), None),
            ("all tried and ejected", with_health(&[DOWN, DOWN]), &[0, 1], draw(0, 0, 0), None),
        ],
    );
}

#[test]
fn least_request() {
    let loads = |l: &[(bool, u32)]| l.iter().map(|&(h, n)| (h, n, 1.0)).collect::<Vec<_>>();
    let four = loads(&[(UP, 3), (UP, 1), (UP, 1), (UP, 2)]);
    run(
        &LeastRequest,
        vec![
            ("fewest in flight, tie from offset 0", four.clone(), &[], draw(0, 0, 0), Some((1, false))),
            ("tie from offset 2", four.clone(), &[], draw(0, 2, 0), Some((2, false))),
            ("tie from offset 3 goes round", four.clone(), &[], draw(0, 3, 0), Some((1, false))),
            ("offset is r1 mod len", four.clone(), &[], draw(0, 6, 0), Some((2, false))),
            ("largest r1", four.clone(), &[], draw(0, u64::MAX, 0), Some((1, false))),
            ("round-robin counter is not used", four.clone(), &[], draw(2, 0, 0), Some((1, false))),
            ("skips ejected", loads(&[(DOWN, 0), (UP, 5), (UP, 2)]), &[], draw(0, 0, 0), Some((2, false))),
            ("skips tried", loads(&[(UP, 0), (UP, 5), (UP, 2)]), &[0], draw(0, 0, 0), Some((2, false))),
            ("panic: all ejected", loads(&[(DOWN, 4), (DOWN, 2), (DOWN, 3)]), &[], draw(0, 0, 0), Some((1, true))),
            ("panic among untried", loads(&[(DOWN, 1), (DOWN, 3), (UP, 0)]), &[2], draw(0, 0, 0), Some((0, true))),
            ("empty backend", vec![], &[], draw(0, 0, 0), None),
            ("all tried", loads(&[(UP, 0), (UP, 0)]), &[1, 0], draw(0, 0, 0), None),
        ],
    );
}

#[test]
fn power_of_two() {
    let costs = |c: &[(bool, f64)]| c.iter().map(|&(h, x)| (h, 0, x)).collect::<Vec<_>>();
    let three = costs(&[(UP, 5.0), (UP, 1.0), (UP, 3.0)]);
    let gap = costs(&[(UP, 5.0), (DOWN, 0.1), (UP, 3.0), (UP, 1.0)]);
    run(
        &PowerOfTwo,
        vec![
            ("0 and 1 drawn, 1 cheaper", three.clone(), &[], draw(0, 0, 0), Some((1, false))),
            ("0 and 2 drawn, 2 cheaper", three.clone(), &[], draw(0, 0, 1), Some((2, false))),
            ("2 and 0 drawn, 2 cheaper", three.clone(), &[], draw(0, 2, 0), Some((2, false))),
            ("2 and 1 drawn, 1 cheaper", three.clone(), &[], draw(0, 2, 1), Some((1, false))),
            ("1 and 0 drawn, 1 cheaper", three.clone(), &[], draw(0, 1, 0), Some((1, false))),
            ("draws reduced mod len", three.clone(), &[], draw(0, 5, 4), Some((2, false))),
            ("round-robin counter is not used", three.clone(), &[], draw(7, 0, 0), Some((1, false))),
            ("tie: the first drawn", costs(&[(UP, 2.0), (UP, 2.0)]), &[], draw(0, 1, 0), Some((1, false))),
            ("ejected is no candidate (0, 2 drawn)", gap.clone(), &[], draw(0, 0, 0), Some((2, false))),
            ("ejected is no candidate (2, 3 drawn)", gap.clone(), &[], draw(0, 1, 1), Some((3, false))),
            ("tried is no candidate", three.clone(), &[1], draw(0, 0, 0), Some((2, false))),
            ("one candidate left", costs(&[(UP, 9.0), (DOWN, 1.0)]), &[], draw(0, 7, 7), Some((0, false))),
            ("one endpoint", costs(&[(UP, 9.0)]), &[], draw(0, 3, 3), Some((0, false))),
            ("panic: all ejected", costs(&[(DOWN, 2.0), (DOWN, 1.0)]), &[], draw(0, 0, 0), Some((1, true))),
            (
                "panic among untried",
                costs(&[(DOWN, 2.0), (DOWN, 1.0), (UP, 0.0)]),
                &[2],
                draw(0, 0, 0),
                Some((1, true)),
            ),
            ("empty backend", vec![], &[], draw(0, 0, 0), None),
            ("all tried", three.clone(), &[0, 1, 2], draw(0, 0, 0), None),
        ],
    );
}

#[test]
fn ejected_endpoint_is_never_chosen_whatever_the_draw() {
    // Endpoint 1 is the cheapest and least loaded, but ejected.
    let view = Fake(vec![(UP, 5, 5.0), (DOWN, 0, 0.1), (UP, 3, 3.0), (UP, 1, 1.0)]);
    for algorithm in [Algorithm::P2c, Algorithm::LeastRequest, Algorithm::RoundRobin] {
        for r in 0..24u64 {
            let c = select(algorithm, &view, Tried::NONE, draw(r as usize, r, r / 3)).unwrap();
            assert_ne!(c.index, 1, "{algorithm:?} r={r}");
            assert!(!c.panic);
        }
    }
}

#[test]
fn tried_set() {
    let mut t = Tried::new();
    assert_eq!(t, Tried::NONE);
    assert_eq!(t, Tried::default());
    assert!(t.is_empty());
    t.insert(0);
    t.insert(63);
    assert!(t.contains(0) && t.contains(63));
    assert!(!t.contains(1) && !t.contains(62));
    assert!(!t.is_empty());
    let before = t;
    t.insert(64);
    t.insert(usize::MAX);
    assert_eq!(t, before, "indexes of 64 and above are not recorded");
    assert!(!t.contains(64) && !t.contains(usize::MAX));
    assert!(tried(&[64, 100]).is_empty());
}

#[test]
fn more_than_64_endpoints() {
    // 70 endpoints, the first 64 tried: only 64..70 are candidates (they cannot be recorded).
    let every_index: Vec<usize> = (0..70).collect();
    let t = tried(&every_index);
    let in_flight = [5, 4, 3, 3, 4, 5];
    // Each endpoint 20 % cheaper than the one before (well clear of a near-tie).
    let view = Fake(
        (0..70).map(|i| (UP, if i < 64 { 0 } else { in_flight[i - 64] }, 100.0 * 0.8f64.powi(i as i32))).collect(),
    );
    let pick = |a: Algorithm, t: Tried, d: Draw| select(a, &view, t, d).map(|c| (c.index, c.panic));
    let cases = [
        (Algorithm::RoundRobin, t, draw(0, 0, 0), Some((64, false))),
        (Algorithm::RoundRobin, t, draw(66, 0, 0), Some((66, false))),
        (Algorithm::RoundRobin, t, draw(69, 0, 0), Some((69, false))),
        (Algorithm::LeastRequest, t, draw(0, 0, 0), Some((66, false))),
        (Algorithm::LeastRequest, t, draw(0, 67, 0), Some((67, false))),
        (Algorithm::LeastRequest, t, draw(0, 68, 0), Some((66, false))),
        // candidates 64..70: draws (0, 0) are 64 and 65, 65 cheaper; (5, 4) are 69 and 68, 69 cheaper.
        (Algorithm::P2c, t, draw(0, 0, 0), Some((65, false))),
        (Algorithm::P2c, t, draw(0, 5, 4), Some((69, false))),
        // nothing tried: all 70 are candidates; (69, 0) are 69 and 0, 69 cheaper.
        (Algorithm::P2c, Tried::NONE, draw(0, 69, 0), Some((69, false))),
        (Algorithm::P2c, Tried::NONE, draw(0, 65, 67), Some((68, false))),
        (Algorithm::RoundRobin, Tried::NONE, draw(68, 0, 0), Some((68, false))),
    ];
    for (algorithm, t, d, want) in cases {
        assert_eq!(pick(algorithm, t, d), want, "{algorithm:?} {d:?}");
    }
}

#[test]
fn dispatch_by_algorithm() {
    let view = Fake(vec![(UP, 2, 9.0), (UP, 0, 5.0), (UP, 1, 1.0)]);
    let as_dyn: &dyn EndpointView = &view;
    let d = draw(0, 0, 1);
    let cases =
        [(Algorithm::RoundRobin, 0), (Algorithm::LeastRequest, 1), (Algorithm::P2c, 2), (Algorithm::P2cLatency, 2)];
    for (algorithm, want) in cases {
        assert_eq!(
            select(algorithm, &view, Tried::NONE, d),
            Some(Choice { index: want, panic: false }),
            "{algorithm:?}"
        );
        assert_eq!(select(algorithm, as_dyn, Tried::NONE, d).map(|c| c.index), Some(want), "{algorithm:?} (dyn)");
    }
    assert!(!view.is_empty());
    assert!(Fake(vec![]).is_empty());
}

#[test]
fn power_of_two_explores_a_small_share_but_never_a_penalized_endpoint() {
    let view = Fake(vec![(UP, 0, 3.0), (UP, 0, 1.0), (UP, 0, 2.0)]);
    let explore = |r1: u64, e: u64| select(Algorithm::P2c, &view, Tried::NONE, Draw { rr: 0, r1, r2: 0, explore: e });
    // Draws (0, 0) compare endpoints 0 and 1: 1 wins; exploring, the first drawn (0) is taken.
    assert_eq!(explore(0, u64::MAX).map(|c| c.index), Some(1));
    assert_eq!(explore(0, 0).map(|c| c.index), Some(0));
    assert_eq!(explore(2, 0).map(|c| c.index), Some(2));
    // Just above the 2 % band: compared as usual.
    assert_eq!(explore(0, (0.021 * u64::MAX as f64) as u64).map(|c| c.index), Some(1));
    // A penalized first draw is not explored: the comparison decides.
    let penalized = Fake(vec![(UP, 0, 5.0 + crate::balance::PENALIZED), (UP, 0, 1.0)]);
    let d = Draw { rr: 0, r1: 0, r2: 0, explore: 0 };
    assert_eq!(select(Algorithm::P2c, &penalized, Tried::NONE, d).map(|c| c.index), Some(1));
    // With some tried, the first drawn among the rest.
    let t = tried(&[0]);
    assert_eq!(select(Algorithm::P2c, &view, t, Draw { rr: 0, r1: 1, r2: 0, explore: 0 }).map(|c| c.index), Some(2));
    // Never onto one with requests in flight, nor one more than 4 times as costly.
    let busy = Fake(vec![(UP, 1, 5.0), (UP, 0, 4.0)]);
    assert_eq!(select(Algorithm::P2c, &busy, Tried::NONE, d).map(|c| c.index), Some(1));
    let far = Fake(vec![(UP, 0, 50.0), (UP, 0, 10.0)]);
    assert_eq!(select(Algorithm::P2c, &far, Tried::NONE, d).map(|c| c.index), Some(1));
    let near = Fake(vec![(UP, 0, 30.0), (UP, 0, 10.0)]);
    assert_eq!(select(Algorithm::P2c, &near, Tried::NONE, d).map(|c| c.index), Some(0));
}
