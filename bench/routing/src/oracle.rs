//! The oracle's estimate: when would a request finish on a replica whose true state is known?
//!
//! The state is what the simulator's `GET /state` tells (every running and waiting sequence's
//! prompt, tokens generated and `max_tokens`, and the step parameters); [`estimate_us`] is a pure
//! function of it and of the request's prompt and `max_tokens`, following the simulator's own
//! step formula `speed × (step_base + step_per_seq × sequences + prefill_per_token × prefill
//! tokens)`:
//!
//! 1. **Slots.** The batch holds `max_batch` sequences, fewer when the KV cache cannot hold that
//!    many contexts of the mean size here (prompt + `max_tokens` of every sequence and this one).
//! 2. **Time to a free slot.** A running sequence frees its slot after its remaining tokens, one
//!    per step; every waiting sequence, in queue order, takes the slot that frees first and holds
//!    it for its own remaining tokens. The request takes the first slot free after that. While it
//!    waits the batch is full, so each of those steps costs the full batch's step time, plus the
//!    prefill of every sequence admitted before it (and of running sequences not yet prefilled).
//! 3. **Its own run.** One step prefills its prompt and samples its first token, then
//!    `max_tokens - 1` decode steps; the batch it runs in holds itself plus the sequences still
//!    running then, averaged over its decode (those that end meanwhile leave it).
//! 4. **Traffic still to come** ([`Arrivals`]): at this replica's recent arrival rate, requests
//!    keep joining while it runs. Each one's prefill is a step the running sequences wait for, so
//!    a share `rate × prefill time` of the replica's time is not decoding, and each joins the
//!    batch for the part of this request's decode it overlaps. Both make its steps longer; since
//!    the overlap grows with its own duration, the duration is found by a few rounds of fixed-point
//!    iteration. With no arrivals this step changes nothing: a replica nobody sends to is judged
//!    by what it holds.
//!
//! At a steady load, steps 1–3 alone underestimate a busy replica by about half (on the default
//! fleet at 80 %, its measured end-to-end times were 2.4 times the estimate at the median): a third
//! to a half of a busy replica's time goes to the prefills of requests that arrive later.

use serde_json::Value;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What is expected to arrive at a replica while the request runs: the rate at which requests
/// went there lately and the mean size of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Arrivals {
    /// Requests per second.
    pub rate: f64,
    /// Mean prompt tokens.
    pub prompt: f64,
    /// Mean output tokens.
    pub output: f64,
}

/// One sequence on a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    /// Prompt tokens.
    pub prompt: u32,
    /// Tokens generated so far.
    pub generated: u32,
    /// Tokens it will generate in all.
    pub max_tokens: u32,
}

/// A replica's state and step parameters, as `/state` reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The running batch.
    pub running: Vec<Seq>,
    /// The waiting queue, head first.
    pub waiting: Vec<Seq>,
    /// Speed factor in force (3.0: three times slower).
    pub speed: f64,
    /// Fixed cost of a step, µs.
    pub step_base_us: f64,
    /// Added cost per sequence in a step, µs.
    pub step_per_seq_us: f64,
    /// Prefill cost per prompt token, µs.
    pub prefill_us_per_token: f64,
    /// Most sequences in the batch.
    pub max_batch: usize,
    /// KV cache in tokens (blocks × block size).
    pub kv_tokens: u64,
    /// The queue length at which the replica refuses requests (429), if it has one.
    pub max_waiting: Option<usize>,
}

impl State {
    /// Reads the simulator's `/state` document.
    pub fn from_json(v: &Value) -> Option<State> {
        let seqs = |key: &str| -> Option<Vec<Seq>> {
            v.get(key)?
                .as_array()?
                .iter()
                .map(|s| {
                    let n = |i: usize| s.get(i).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok());
                    Some(Seq { prompt: n(0)?, generated: n(1)?, max_tokens: n(2)? })
                })
                .collect()
        };
        let f = |key: &str| v.get(key).and_then(Value::as_f64);
        let u = |key: &str| v.get(key).and_then(Value::as_u64);
        Some(State {
            running: seqs("running_seqs")?,
            waiting: seqs("waiting_seqs")?,
            speed: f("speed")?,
            step_base_us: f("step_base_us")?,
            step_per_seq_us: f("step_per_seq_us")?,
            prefill_us_per_token: f("prefill_us_per_token")?,
            max_batch: usize::try_from(u("max_batch")?).ok()?,
            kv_tokens: u("kv_blocks_total")? * u("block_size")?,
            max_waiting: u("max_waiting").and_then(|n| usize::try_from(n).ok()),
        })
    }

    fn step_us(&self, seqs: f64, prefill_tokens: f64) -> f64 {
        self.speed * (self.step_base_us + self.step_per_seq_us * seqs + self.prefill_us_per_token * prefill_tokens)
    }
}

/// Microseconds until a request of `prompt` tokens and `max_tokens` output tokens sent now
/// would have its last token on a replica in state `s` with `arrivals` still to come (see the
/// module's description); infinite when the replica would refuse it (its queue is at
/// `max_waiting`).
pub fn estimate_us(s: &State, prompt: u32, max_tokens: u32, arrivals: Arrivals) -> f64 {
    if s.max_waiting.is_some_and(|n| s.waiting.len() >= n) {
        return f64::INFINITY;
    }
    let max_tokens = max_tokens.max(1);
    let remaining = |q: &Seq| u64::from(q.max_tokens.saturating_sub(q.generated).max(1));

    // 1. Slots: the batch limit, or as many mean-sized contexts as the KV cache holds.
    let n = s.running.len() + s.waiting.len() + 1;
    let ctx: u64 =
        s.running.iter().chain(&s.waiting).map(|q| u64::from(q.prompt) + u64::from(q.max_tokens)).sum::<u64>()
            + u64::from(prompt)
            + u64::from(max_tokens);
    let mean_ctx = (ctx as f64 / n as f64).max(1.0);
    let kv_slots = ((s.kv_tokens as f64 / mean_ctx).floor() as usize).max(1);
    let slots = s.max_batch.min(kv_slots).max(s.running.len()).max(1);

    // 2. Time to a free slot, in steps; prefill admitted before it.
    let mut free: BinaryHeap<Reverse<u64>> = s.running.iter().map(|q| Reverse(remaining(q))).collect();
    free.extend(std::iter::repeat_n(Reverse(0), slots.saturating_sub(s.running.len())));
    let mut prefill: f64 = s.running.iter().filter(|q| q.generated == 0).map(|q| f64::from(q.prompt)).sum();
    for q in &s.waiting {
        let Reverse(t) = free.pop().unwrap_or(Reverse(0));
        free.push(Reverse(t + remaining(q)));
        // A preempted sequence recomputes its prompt and the tokens it had.
        prefill += f64::from(q.prompt) + f64::from(q.generated);
    }
    let Reverse(admitted) = free.pop().unwrap_or(Reverse(0));

    // 4. The share of the replica's time that later arrivals' prefills take.
    let rate = arrivals.rate.max(0.0);
    let prefill_share = (rate * arrivals.prompt * s.prefill_us_per_token * s.speed / 1e6).clamp(0.0, 0.9);
    let stretch = 1.0 / (1.0 - prefill_share);
    let wait_us =
        (admitted as f64 * s.step_us(slots as f64, 0.0) + s.speed * s.prefill_us_per_token * prefill) * stretch;

    // 3. Its own run, in a batch of itself and those still running, averaged over its decode,
    // plus the arrivals that overlap it.
    let m = u64::from(max_tokens);
    let others: u64 = free.iter().map(|Reverse(t)| t.saturating_sub(admitted).min(m)).sum();
    let held = 1.0 + others as f64 / m as f64;
    // An arrival at a uniform point of this request's decode runs beside it for the rest of it or
    // for its own output, whichever ends first: on average x - x²/2 of the decode, x = output / m.
    let x = (arrivals.output / m as f64).min(1.0);
    let overlap = x - x * x / 2.0;
    let run = |batch: f64| (s.step_us(batch, f64::from(prompt)) + (m - 1) as f64 * s.step_us(batch, 0.0)) * stretch;
    let mut own = run(held);
    for _ in 0..4 {
        let batch = (held + rate * (wait_us + own) / 1e6 * overlap).min(slots as f64);
        own = run(batch);
    }
    wait_us + own
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idle(speed: f64) -> State {
        State {
            running: vec![],
            waiting: vec![],
            speed,
            step_base_us: 3500.0,
            step_per_seq_us: 80.0,
            prefill_us_per_token: 40.0,
            max_batch: 64,
            kv_tokens: 65_536,
            max_waiting: None,
        }
    }

    const NONE: Arrivals = Arrivals { rate: 0.0, prompt: 0.0, output: 0.0 };

    fn seq(prompt: u32, generated: u32, max_tokens: u32) -> Seq {
        Seq { prompt, generated, max_tokens }
    }

    #[test]
    fn a_lone_request_is_its_prefill_then_its_decode_steps() {
        // 1000-token prompt: 3.5 + 0.08 + 40 ms; then 9 steps of 3.58 ms.
        let e = estimate_us(&idle(1.0), 1000, 10, NONE);
        assert!((e - (43_580.0 + 9.0 * 3580.0)).abs() < 1e-6, "{e}");
        assert!((estimate_us(&idle(3.0), 1000, 10, NONE) - 3.0 * e).abs() < 1e-6);
        assert!((estimate_us(&idle(1.0), 1, 1, NONE) - 3620.0).abs() < 1e-6);
    }

    #[test]
    fn it_decodes_in_the_batch_it_joins_until_the_others_leave() {
        let mut s = idle(1.0);
        // Three running that end after 5, 10 and 100 steps; a 10-token answer shares 5 steps
        // with the first, 10 with the second, 10 with the third: mean batch 1 + 25/10 = 3.5.
        s.running = vec![seq(10, 5, 10), seq(10, 10, 20), seq(10, 1, 101)];
        let step = |n: f64, p: f64| 3500.0 + 80.0 * n + 40.0 * p;
        let e = estimate_us(&s, 100, 10, NONE);
        assert!((e - (step(3.5, 100.0) + 9.0 * step(3.5, 0.0))).abs() < 1e-6, "{e}");
    }

    #[test]
    fn a_full_batch_waits_for_the_first_slot_and_the_queue_ahead() {
        let mut s = idle(1.0);
        s.max_batch = 2;
        s.running = vec![seq(10, 90, 100), seq(10, 70, 100)];
        let step = |n: f64, p: f64| 3500.0 + 80.0 * n + 40.0 * p;
        // Slots free after 10 and 30 steps; it is admitted at 10 and then runs with the other.
        let e = estimate_us(&s, 50, 20, NONE);
        let want = 10.0 * step(2.0, 0.0) + step(2.0, 50.0) + 19.0 * step(2.0, 0.0);
        assert!((e - want).abs() < 1e-6, "{e} vs {want}");
        // One waiting ahead (40 tokens, a 100-token prompt) takes the slot free at 10 and holds
        // it to 50; this request gets the one free at 30 (after that prompt's prefill) and runs
        // beside it for all its 20 steps.
        s.waiting = vec![seq(100, 0, 40)];
        let e2 = estimate_us(&s, 50, 20, NONE);
        let want2 = 30.0 * step(2.0, 0.0) + 40.0 * 100.0 + step(2.0, 50.0) + 19.0 * step(2.0, 0.0);
        assert!((e2 - want2).abs() < 1e-6, "{e2} vs {want2}");
        assert!(e2 > e);
        // A replica that would refuse it is never the soonest.
        s.max_waiting = Some(1);
        assert_eq!(estimate_us(&s, 50, 20, NONE), f64::INFINITY);
    }

    #[test]
    fn the_kv_cache_limits_the_batch() {
        let mut s = idle(1.0);
        // Room for two contexts of 1000 tokens: the third request waits for a slot.
        s.kv_tokens = 2000;
        s.running = vec![seq(500, 400, 500), seq(500, 0, 500)];
        let free = estimate_us(&idle(1.0), 500, 500, NONE);
        let full = estimate_us(&s, 500, 500, NONE);
        assert!(full > free + 100.0 * 3500.0, "{full} vs {free}");
    }

    #[test]
    fn a_slow_idle_replica_loses_to_a_busy_fast_one_until_its_queue_is_long() {
        let slow = idle(3.0);
        let mut fast = idle(1.0);
        fast.running = (0..40).map(|i| seq(400, i * 3, 150)).collect();
        assert!(estimate_us(&fast, 400, 150, NONE) < estimate_us(&slow, 400, 150, NONE));
        fast.running = (0..64).map(|i| seq(400, i * 2, 150)).collect();
        fast.waiting = (0..64).map(|_| seq(400, 0, 150)).collect();
        assert!(estimate_us(&fast, 400, 150, NONE) > estimate_us(&slow, 400, 150, NONE));
    }

    #[test]
    fn arrivals_to_come_stretch_the_steps_and_fill_the_batch() {
        let s = idle(1.0);
        let step = |n: f64, p: f64| 3500.0 + 80.0 * n + 40.0 * p;
        // Prefill only: 20 requests/s of 500-token prompts take 40 % of the time (0.02 s each).
        let prefill_only = Arrivals { rate: 20.0, prompt: 500.0, output: 0.0 };
        let e = estimate_us(&s, 100, 10, prefill_only);
        assert!((e - (step(1.0, 100.0) + 9.0 * step(1.0, 0.0)) / 0.6).abs() < 1e-6, "{e}");
        // With outputs as long as its own, half of what arrives during it runs beside it on average.
        let busy = Arrivals { rate: 20.0, prompt: 500.0, output: 150.0 };
        let e = estimate_us(&s, 500, 150, busy);
        let batch = 1.0 + 20.0 * e / 1e6 * 0.5;
        let want = (step(batch, 500.0) + 149.0 * step(batch, 0.0)) / 0.6;
        assert!((e - want).abs() / want < 0.01, "{e} vs {want}: the iteration settles");
        assert!(batch > 10.0 && batch < 64.0, "{batch}");
        // A replica nobody sends to is judged by what it holds.
        assert_eq!(estimate_us(&idle(3.0), 500, 150, NONE), estimate_us(&idle(3.0), 500, 150, Arrivals::default()));
    }

    #[test]
    fn reads_the_simulators_state_document() {
        let v = json!({"waiting": 1, "running": 1, "waiting_seqs": [[50, 0, 20]], "running_seqs": [[100, 3, 10]],
                       "speed": 3.0, "step_base_us": 3500.0, "step_per_seq_us": 80.0, "prefill_us_per_token": 40.0,
                       "max_batch": 8, "max_batched_tokens": 8192, "block_size": 16, "kv_blocks_total": 4096,
                       "kv_blocks_free": 4000, "max_waiting": 4, "reports_frozen": false});
        let s = State::from_json(&v).unwrap();
        assert_eq!(s.running, vec![seq(100, 3, 10)]);
        assert_eq!(s.waiting, vec![seq(50, 0, 20)]);
        assert_eq!((s.speed, s.max_batch, s.kv_tokens, s.max_waiting), (3.0, 8, 65_536, Some(4)));
        assert!(State::from_json(&json!({"running_seqs": []})).is_none());
    }
}
