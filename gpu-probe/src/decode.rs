//! The decode speed: how fast the model server generates tokens, measured from its own
//! counters across successive scrapes.
//!
//! Two figures come out:
//!
//! - the **decode rate**, tokens generated per second over all streams: the rate of the
//!   generated-token counter over a window of scrapes (or the server's own tokens/s gauge where
//!   it has one, SGLang's `gen_throughput`);
//! - the **token time**, seconds per output token for one stream: the time-per-output-token
//!   histogram's mean over the window (`_sum` and `_count` deltas) when its count moved, else
//!   the mean number of running requests over the window divided by the decode rate.
//!
//! A slow GPU shows in both before any answer ends (for vLLM, whose counter moves every engine
//! step).
//!
//! The rules, in [`DecodeMeter`] (the window) and the pure [`decide`], [`counter_step`] and
//! [`histogram_step`] (the rest):
//!
//! - **Window.** The rate is taken between the newest scrape and the newest one at least the
//!   window (250 ms by default) of decoding time older, so 10 ms scrapes do not turn into a
//!   jittery per-scrape rate. Only busy time counts (see [`DecodeMeter`]). Until the probe has
//!   a window of history (after start, a failed stretch or a switch of server) the last
//!   figures are kept. A counter that moves only when a request ends (SGLang's
//!   and TGI's) is read over at least [`FINISH_WINDOW`], since one request ending in a short
//!   window would read as a burst; SGLang's own tokens/s gauge, where it is exported, needs no
//!   such wait.
//! - **Idle.** When nothing was generated and nothing runs, the last figures are kept with the
//!   time they were measured, so an idle replica keeps its last known speed and the reader can
//!   see how old it is.
//! - **Stalled.** When requests run but a counter that moves per token stood still for the whole
//!   window, the rate is 0 and the token time unknown. A counter that moves only at the end of
//!   a request standing still says nothing; the last figures are kept.
//! - **Resets.** A counter (or histogram) that goes down was reset (a server restart, or one of
//!   several engines restarting): that one step counts as no progress, never as a negative one.

use crate::servers::DecodeCounters;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The default window the rates are taken over.
pub const WINDOW: Duration = Duration::from_millis(250);

/// The shortest window for a token counter that moves only when a request ends.
pub const FINISH_WINDOW: Duration = Duration::from_secs(10);

/// Where a token time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTimeSource {
    /// The server's time-per-output-token histogram.
    Histogram,
    /// Running requests divided by the decode rate.
    Counter,
}

/// A measured decode speed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeRate {
    /// Tokens generated per second, all streams together (`None` when the server exports no
    /// token counter, only a token-time histogram).
    pub tokens_per_s: Option<f64>,
    /// Time per output token for one stream.
    pub token_time: Option<Duration>,
    /// Where [`DecodeRate::token_time`] comes from.
    pub token_time_source: Option<TokenTimeSource>,
    /// When the figures were measured (the end of their window).
    pub at: Instant,
}

/// What changed over one window of scrapes: the input of [`decide`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowDelta {
    /// The time between the window's first and last scrape.
    pub span: Duration,
    /// Tokens generated over the window (`None`: no token counter).
    pub tokens: Option<f64>,
    /// Whether the token counter moves only when a request ends.
    pub counted_at_finish: bool,
    /// The server's own tokens/s figure at the window's end.
    pub tokens_per_s: Option<f64>,
    /// Growth of the token-time histogram's `_sum` (seconds) over the window.
    pub token_time_sum: Option<f64>,
    /// Growth of its `_count` over the window.
    pub token_time_count: Option<f64>,
    /// Mean running requests over the window's scrapes.
    pub running_mean: Option<f64>,
    /// Running requests at the window's end.
    pub running_now: Option<f64>,
}

/// The progress of a counter between two successive scrapes: never negative. A counter that
/// went down was reset, and a counter missing from either scrape made no known progress; both
/// count as none.
pub fn counter_step(prev: Option<f64>, cur: Option<f64>) -> f64 {
    match (prev, cur) {
        (Some(p), Some(c)) if c >= p => c - p,
        _ => 0.0,
    }
}

/// The progress of a histogram's `(sum, count)` between two successive scrapes. If either part
/// went down the histogram was reset, and the step counts as none.
pub fn histogram_step(prev: (Option<f64>, Option<f64>), cur: (Option<f64>, Option<f64>)) -> (f64, f64) {
    match (prev, cur) {
        ((Some(ps), Some(pc)), (Some(cs), Some(cc))) if cs >= ps && cc >= pc => (cs - ps, cc - pc),
        _ => (0.0, 0.0),
    }
}

/// The mean of the observations a histogram gained: `sum / count` seconds, when the count moved
/// and the mean is above zero.
pub fn histogram_mean(sum: f64, count: f64) -> Option<Duration> {
    if count <= 0.0 || sum.is_nan() || sum <= 0.0 {
        return None;
    }
    seconds(sum / count).filter(|d| !d.is_zero())
}

/// The time per output token of one stream when `running` streams share `tokens_per_s`.
pub fn per_stream_time(running: f64, tokens_per_s: f64) -> Option<Duration> {
    if running.is_nan() || tokens_per_s.is_nan() || running <= 0.0 || tokens_per_s <= 0.0 {
        return None;
    }
    seconds(running / tokens_per_s).filter(|d| !d.is_zero())
}

/// The decode speed after a window `d` that ended at `at`, given the `last` one measured.
/// Returns `last` unchanged when the window says nothing new (idle, or a counter that only
/// moves when requests end standing still).
pub fn decide(d: &WindowDelta, last: Option<DecodeRate>, at: Instant) -> Option<DecodeRate> {
    let hist = match (d.token_time_sum, d.token_time_count) {
        (Some(sum), Some(count)) => histogram_mean(sum, count),
        _ => None,
    };
    let progressed = d.tokens.is_some_and(|t| t > 0.0) || hist.is_some();
    if !progressed {
        if !d.running_now.is_some_and(|r| r > 0.0) {
            return last; // idle: keep the last known speed
        }
        // Requests run and nothing counted: a live counter standing still is a stall; one that
        // moves only when requests end says nothing. The server's own gauge speaks for itself.
        if d.tokens_per_s.is_none() && (d.counted_at_finish || d.tokens.is_none()) {
            return last;
        }
    }
    let secs = d.span.as_secs_f64();
    let counter_rate = d.tokens.filter(|_| secs > 0.0).map(|t| t / secs);
    let tokens_per_s = d.tokens_per_s.or(counter_rate);
    let (token_time, token_time_source) = match hist {
        Some(t) => (Some(t), Some(TokenTimeSource::Histogram)),
        None => match tokens_per_s.zip(d.running_mean).and_then(|(rate, running)| per_stream_time(running, rate)) {
            Some(t) => (Some(t), Some(TokenTimeSource::Counter)),
            None => (None, None),
        },
    };
    Some(DecodeRate { tokens_per_s, token_time, token_time_source, at })
}

/// One stretch of the meter's history: what its last scrape read, and running totals since the
/// history began that never go down.
#[derive(Clone, Copy, Debug)]
struct Point {
    at: Instant,
    raw: DecodeCounters,
    running: Option<f64>,
    /// Time spent decoding: the scrape intervals with requests running at both ends, or with
    /// tokens counted in them.
    busy: Duration,
    tokens: f64,
    token_time_sum: f64,
    token_time_count: f64,
    running_sum: f64,
    running_n: u64,
}

impl Point {
    fn first(at: Instant, raw: &DecodeCounters, running: Option<f64>) -> Point {
        Point {
            at,
            raw: *raw,
            running,
            busy: Duration::ZERO,
            tokens: 0.0,
            token_time_sum: 0.0,
            token_time_count: 0.0,
            running_sum: 0.0,
            running_n: 0,
        }
    }

    /// The point after this one, and whether the interval between them was busy.
    fn then(&self, at: Instant, raw: &DecodeCounters, running: Option<f64>) -> (Point, bool) {
        let tokens = counter_step(self.raw.generated_tokens, raw.generated_tokens);
        let (sum, count) = histogram_step(
            (self.raw.token_time_sum, self.raw.token_time_count),
            (raw.token_time_sum, raw.token_time_count),
        );
        let runs = |r: Option<f64>| r.is_some_and(|r| r > 0.0);
        let busy = (runs(self.running) && runs(running)) || tokens > 0.0 || count > 0.0;
        let interval = if busy { at.saturating_duration_since(self.at) } else { Duration::ZERO };
        let point = Point {
            at,
            raw: *raw,
            running,
            busy: self.busy + interval,
            tokens: self.tokens + tokens,
            token_time_sum: self.token_time_sum + sum,
            token_time_count: self.token_time_count + count,
            running_sum: self.running_sum + if busy { running.unwrap_or(0.0) } else { 0.0 },
            running_n: self.running_n + u64::from(busy && running.is_some()),
        };
        (point, busy)
    }
}

/// Turns successive scrapes into a [`DecodeRate`]: a short history of scrapes and the last
/// figures measured.
///
/// The window counts busy time only (intervals with requests running at both ends, or with
/// tokens counted), so the rate is the speed while decoding: the figure kept when a replica
/// goes idle is not diluted by the idle time after its last token, nor is the first one after
/// a pause by the pause. Idle scrapes fold into one point, so the history stays about one
/// window long however long a replica idles.
#[derive(Clone, Debug)]
pub struct DecodeMeter {
    window: Duration,
    max_gap: Duration,
    points: VecDeque<Point>,
    last: Option<DecodeRate>,
}

impl DecodeMeter {
    /// A meter taking rates over `window` of busy time. Scrapes more than `max_gap` apart
    /// (failed scrapes in between) start the history over, so a rate never spans an outage.
    pub fn new(window: Duration, max_gap: Duration) -> DecodeMeter {
        DecodeMeter { window, max_gap, points: VecDeque::new(), last: None }
    }

    /// The last figures measured.
    pub fn last(&self) -> Option<DecodeRate> {
        self.last
    }

    /// Takes in a good scrape made at `at`, with the `running` requests it showed, and returns
    /// the current figures.
    pub fn observe(&mut self, at: Instant, counters: &DecodeCounters, running: Option<f64>) -> Option<DecodeRate> {
        let window = if finish_only(counters) { self.window.max(FINISH_WINDOW) } else { self.window };
        let step = match self.points.back() {
            Some(prev)
                if at.saturating_duration_since(prev.at) <= self.max_gap
                    && finish_only(&prev.raw) == finish_only(counters) =>
            {
                Some(prev.then(at, counters, running))
            }
            _ => None,
        };
        let next = match step {
            // Nothing happened since the last scrape: it folds into the last point, and the
            // figures (and the time they were measured) stay.
            Some((next, false)) => {
                if let Some(back) = self.points.back_mut() {
                    *back = next;
                }
                return self.last;
            }
            Some((next, true)) => next,
            None => {
                self.points.clear();
                Point::first(at, counters, running)
            }
        };
        self.points.push_back(next);
        // Keep, as the window's start, the newest point at least a window of busy time back.
        while self.points.len() >= 2 && next.busy.saturating_sub(self.points[1].busy) >= window {
            self.points.pop_front();
        }
        let first = self.points[0];
        let span = next.busy.saturating_sub(first.busy);
        if span < window || span.is_zero() {
            return self.last;
        }
        let samples = next.running_n - first.running_n;
        let delta = WindowDelta {
            span,
            tokens: counters.generated_tokens.map(|_| next.tokens - first.tokens),
            counted_at_finish: counters.counted_at_finish,
            tokens_per_s: counters.tokens_per_s,
            token_time_sum: counters.token_time_count.map(|_| next.token_time_sum - first.token_time_sum),
            token_time_count: counters.token_time_count.map(|_| next.token_time_count - first.token_time_count),
            running_mean: (samples > 0).then(|| (next.running_sum - first.running_sum) / samples as f64),
            running_now: running,
        };
        self.last = decide(&delta, self.last, at);
        self.last
    }
}

/// Whether the rate can only come from a counter that moves when requests end (no gauge of
/// the server's own), and so needs the longer window.
fn finish_only(c: &DecodeCounters) -> bool {
    c.counted_at_finish && c.tokens_per_s.is_none()
}

/// Seconds as a duration, rounded to the nanosecond; `None` when it does not fit.
fn seconds(s: f64) -> Option<Duration> {
    let ns = (s * 1e9).round();
    (ns >= 0.0 && ns < u64::MAX as f64).then(|| Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn counter_steps_are_never_negative() {
        let cases = [
            ((Some(10.0), Some(15.0)), 5.0),
            ((Some(10.0), Some(10.0)), 0.0),
            ((Some(1000.0), Some(3.0)), 0.0), // reset: a restarted server counts from 0
            ((None, Some(3.0)), 0.0),         // first sight of a counter: a baseline
            ((Some(3.0), None), 0.0),         // missing from a page
            ((None, None), 0.0),
        ];
        for ((prev, cur), step) in cases {
            assert_eq!(counter_step(prev, cur), step, "{prev:?} -> {cur:?}");
        }
        let hist = [
            (((Some(1.0), Some(10.0)), (Some(1.5), Some(20.0))), (0.5, 10.0)),
            (((Some(1.0), Some(10.0)), (Some(0.1), Some(2.0))), (0.0, 0.0)),
            (((Some(1.0), Some(10.0)), (Some(1.5), Some(5.0))), (0.0, 0.0)), // count went down
            (((None, None), (Some(1.0), Some(10.0))), (0.0, 0.0)),
        ];
        for ((prev, cur), step) in hist {
            assert_eq!(histogram_step(prev, cur), step, "{prev:?} -> {cur:?}");
        }
    }

    #[test]
    fn means_and_per_stream_times() {
        assert_eq!(histogram_mean(0.5, 10.0), Some(MS(50)));
        assert_eq!(histogram_mean(0.0, 28.0), None, "observations of zero say nothing");
        assert_eq!(histogram_mean(0.5, 0.0), None);
        assert_eq!(histogram_mean(f64::NAN, 3.0), None);
        assert_eq!(per_stream_time(20.0, 1000.0), Some(MS(20)));
        assert_eq!(per_stream_time(0.0, 1000.0), None);
        assert_eq!(per_stream_time(4.0, 0.0), None);
        assert_eq!(per_stream_time(1e300, 1e-300), None, "too long for a duration");
    }

    #[test]
    fn decide_table() {
        let t = Instant::now();
        let before = t - Duration::from_secs(60);
        let last = Some(DecodeRate {
            tokens_per_s: Some(500.0),
            token_time: Some(MS(40)),
            token_time_source: Some(TokenTimeSource::Counter),
            at: before,
        });
        let w = |tokens: Option<f64>, running: f64| WindowDelta {
            span: MS(250),
            tokens,
            running_mean: Some(running),
            running_now: Some(running),
            ..WindowDelta::default()
        };
        let rate = |tps: Option<f64>, tt: Option<Duration>, src: Option<TokenTimeSource>| {
            Some(DecodeRate { tokens_per_s: tps, token_time: tt, token_time_source: src, at: t })
        };
        use TokenTimeSource::{Counter, Histogram};
        let cases: Vec<(&str, WindowDelta, Option<DecodeRate>, Option<DecodeRate>)> = vec![
            (
                "counter: 250 tokens in 250 ms over 10 streams",
                w(Some(250.0), 10.0),
                None,
                rate(Some(1000.0), Some(MS(10)), Some(Counter)),
            ),
            ("idle before any figure", w(Some(0.0), 0.0), None, None),
            ("idle keeps the last speed and its time", w(Some(0.0), 0.0), last, last),
            ("idle, no running figure at all", WindowDelta { running_now: None, ..w(Some(0.0), 0.0) }, last, last),
            ("stall: running, live counter still", w(Some(0.0), 4.0), last, rate(Some(0.0), None, None)),
            ("no token counter, nothing moved", w(None, 4.0), last, last),
            (
                "histogram wins when its count moved",
                WindowDelta { token_time_sum: Some(0.6), token_time_count: Some(20.0), ..w(Some(250.0), 10.0) },
                last,
                rate(Some(1000.0), Some(MS(30)), Some(Histogram)),
            ),
            (
                "histogram still: the counter's figure",
                WindowDelta { token_time_sum: Some(0.0), token_time_count: Some(0.0), ..w(Some(250.0), 10.0) },
                last,
                rate(Some(1000.0), Some(MS(10)), Some(Counter)),
            ),
            (
                "histogram only, no token counter",
                WindowDelta { token_time_sum: Some(0.5), token_time_count: Some(10.0), ..w(None, 3.0) },
                None,
                rate(None, Some(MS(50)), Some(Histogram)),
            ),
            (
                "finish-only counter standing still while requests run says nothing",
                WindowDelta { counted_at_finish: true, ..w(Some(0.0), 6.0) },
                last,
                last,
            ),
            (
                "finish-only counter that moved",
                WindowDelta { counted_at_finish: true, span: Duration::from_secs(10), ..w(Some(4000.0), 8.0) },
                last,
                rate(Some(400.0), Some(MS(20)), Some(Counter)),
            ),
            (
                "the server's own gauge speaks while the finish-only counter stands still",
                WindowDelta { counted_at_finish: true, tokens_per_s: Some(800.0), ..w(Some(0.0), 8.0) },
                last,
                rate(Some(800.0), Some(MS(10)), Some(Counter)),
            ),
            (
                "a gauge with nothing running is an old figure: idle",
                WindowDelta { counted_at_finish: true, tokens_per_s: Some(800.0), ..w(Some(0.0), 0.0) },
                last,
                last,
            ),
            (
                "requests that ended in the window still give a rate",
                WindowDelta { running_now: Some(0.0), running_mean: Some(2.0), ..w(Some(100.0), 0.0) },
                None,
                rate(Some(400.0), Some(MS(5)), Some(Counter)),
            ),
        ];
        for (what, delta, last, expected) in cases {
            assert_eq!(decide(&delta, last, t), expected, "{what}");
        }
    }

    fn vllm(tokens: f64) -> DecodeCounters {
        DecodeCounters { generated_tokens: Some(tokens), ..DecodeCounters::default() }
    }

    /// Feeds a scrape every 10 ms; each step gives the counters and running count.
    fn run(meter: &mut DecodeMeter, t0: Instant, from_ms: u64, steps: &[(DecodeCounters, f64)]) -> Option<DecodeRate> {
        let mut out = None;
        for (i, (c, running)) in steps.iter().enumerate() {
            out = meter.observe(t0 + MS(from_ms + 10 * i as u64), c, Some(*running));
        }
        out
    }

    #[test]
    fn the_meter_waits_for_a_window_then_follows_the_counter() {
        let t0 = Instant::now();
        let mut m = DecodeMeter::new(WINDOW, Duration::from_secs(1));
        assert_eq!(m.observe(t0, &vllm(1000.0), Some(8.0)), None, "first scrape: no rate");
        // 4 tokens per 10 ms = 400 tokens/s; 8 streams: 20 ms per token each.
        let steps: Vec<_> = (1..=24).map(|i| (vllm(1000.0 + 4.0 * i as f64), 8.0)).collect();
        assert_eq!(run(&mut m, t0, 10, &steps), None, "240 ms of history is short of the window");
        let r = m.observe(t0 + MS(250), &vllm(1100.0), Some(8.0)).expect("a full window");
        assert_eq!(r.tokens_per_s, Some(400.0));
        assert_eq!(r.token_time, Some(MS(20)));
        assert_eq!(r.at, t0 + MS(250));
        // The window slides: twice as fast from here on shows within one window.
        let faster: Vec<_> = (1..=25).map(|i| (vllm(1100.0 + 8.0 * i as f64), 8.0)).collect();
        let r = run(&mut m, t0, 260, &faster).unwrap();
        assert_eq!(r.tokens_per_s, Some(800.0));
        assert_eq!(r.token_time, Some(MS(10)));
        assert!(m.points.len() <= 27, "the history holds about one window: {}", m.points.len());
    }

    #[test]
    fn the_meter_survives_resets_idle_and_gaps() {
        let t0 = Instant::now();
        let mut m = DecodeMeter::new(WINDOW, Duration::from_secs(1));
        let steps: Vec<_> = (0..=25).map(|i| (vllm(5000.0 + 10.0 * i as f64), 10.0)).collect();
        let r = run(&mut m, t0, 0, &steps).unwrap();
        assert_eq!((r.tokens_per_s, r.token_time), (Some(1000.0), Some(MS(10))));

        // The server restarts: the counter starts over from 0, and goes on at the same speed.
        // The step across the reset counts as nothing, never as a negative rate.
        let after: Vec<_> = (0..=25).map(|i| (vllm(10.0 * i as f64), 10.0)).collect();
        let r = run(&mut m, t0, 260, &after).unwrap();
        let tps = r.tokens_per_s.unwrap();
        assert!((900.0..=1000.0).contains(&tps), "{tps}");

        // Idle: nothing runs, nothing is generated; the last figures stay with their time.
        let measured = m.last().unwrap();
        let idle: Vec<_> = (0..100).map(|_| (vllm(250.0), 0.0)).collect();
        assert_eq!(run(&mut m, t0, 520, &idle), Some(measured));

        // A gap longer than max_gap (failed scrapes): the history starts over, the last
        // figures stay until a new window is full, and the rate never spans the outage.
        assert_eq!(m.observe(t0 + Duration::from_secs(5), &vllm(250.0), Some(2.0)), Some(measured));
        let resumed: Vec<_> = (1..=25).map(|i| (vllm(250.0 + i as f64), 2.0)).collect();
        let r = run(&mut m, t0, 5010, &resumed).unwrap();
        assert_eq!((r.tokens_per_s, r.token_time), (Some(100.0), Some(MS(20))));
    }

    #[test]
    fn the_meter_prefers_the_histogram_when_it_moves() {
        let t0 = Instant::now();
        let mut m = DecodeMeter::new(WINDOW, Duration::from_secs(1));
        let c = |i: u64, hist: bool| DecodeCounters {
            generated_tokens: Some(10.0 * i as f64),
            token_time_sum: Some(if hist { 0.025 * i as f64 } else { 0.0 }),
            token_time_count: Some(if hist { i as f64 } else { 0.0 }),
            ..DecodeCounters::default()
        };
        // 1000 tokens/s over 20 streams (20 ms by the counter), but the histogram says 25 ms.
        let steps: Vec<_> = (0..=25).map(|i| (c(i, true), 20.0)).collect();
        let r = run(&mut m, t0, 0, &steps).unwrap();
        assert_eq!(r.token_time_source, Some(TokenTimeSource::Histogram));
        assert_eq!(r.token_time, Some(MS(25)));
        assert_eq!(r.tokens_per_s, Some(1000.0));
        // The same server with a histogram that never moves: the counter's figure.
        let mut m = DecodeMeter::new(WINDOW, Duration::from_secs(1));
        let steps: Vec<_> = (0..=25).map(|i| (c(i, false), 20.0)).collect();
        let r = run(&mut m, t0, 0, &steps).unwrap();
        assert_eq!((r.token_time_source, r.token_time), (Some(TokenTimeSource::Counter), Some(MS(20))));
    }

    #[test]
    fn a_finish_only_counter_is_read_over_a_longer_window() {
        let t0 = Instant::now();
        let mut m = DecodeMeter::new(WINDOW, Duration::from_secs(1));
        let tgi = |tokens: f64| DecodeCounters {
            generated_tokens: Some(tokens),
            counted_at_finish: true,
            ..DecodeCounters::default()
        };
        // A 500-token answer ends 300 ms in: over 250 ms that would read as 2000 tokens/s.
        // Scrapes every 10 ms up to 10 s.
        let mut steps: Vec<_> = (0..30).map(|_| (tgi(0.0), 4.0)).collect();
        steps.extend((30..1000).map(|_| (tgi(500.0), 4.0)));
        assert_eq!(run(&mut m, t0, 0, &steps), None, "no figure before the longer window");
        let r = m.observe(t0 + FINISH_WINDOW, &tgi(4000.0), Some(4.0)).expect("a full window");
        assert_eq!(r.tokens_per_s, Some(400.0));
        assert_eq!(r.token_time, Some(MS(10)));
    }
}
