//! The engine model: a vLLM-style continuous-batching scheduler as a pure state machine.
//!
//! [`Engine::step`] plans and runs one engine iteration and says how long it took on the
//! simulated GPU; it does no I/O and reads no clock, so admission, KV accounting and timing
//! are unit-tested directly. The driver (`crate::driver`) sleeps for the returned duration and
//! then hands the tokens to the waiting streams.
//!
//! One iteration, in the order vLLM's V1 scheduler uses:
//!
//! 1. **Running sequences first**, oldest first. A decoding sequence takes one token of the
//!    step's token budget (`max_batched_tokens`); a sequence still in prefill takes the rest
//!    of its prompt, or as much as the budget leaves (chunked prefill). A sequence that will
//!    sample a token this step needs KV room for it; when the cache is full the newest running
//!    sequence is **preempted**: its blocks are freed and it goes back to the front of the
//!    waiting queue, to be recomputed (prompt and tokens so far) when it is readmitted.
//! 2. **Admission**, only in a step without preemption: the head of the FIFO waiting queue
//!    joins while the batch has room (`max_batch`), the budget has tokens left and the KV cache
//!    has free blocks for its whole context. A head that does not fit blocks the queue (no
//!    overtaking, as in vLLM's first-come-first-served policy).
//! 3. **Timing**: `speed × (step_base_us + step_per_seq_us × sequences in the step +
//!    prefill_us_per_token × prefill tokens in the step)`.
//! 4. **Results**: every decoding sequence gains one token; a sequence whose prefill finishes
//!    samples its first token; a sequence with `max_tokens` tokens finishes and frees its KV.
//!
//! KV is held in blocks of `block_size` tokens: a sequence holds
//! `ceil((prompt + generated) / block_size)` blocks, so usage moves in block steps as in vLLM.
//!
//! ```
//! use vane_sim::engine::{Engine, EngineConfig, SeqSpec};
//!
//! let mut engine = Engine::new(EngineConfig::default()).unwrap();
//! engine.submit(SeqSpec { id: 1, prompt_tokens: 1000, max_tokens: 2 }).unwrap();
//! let mut emitted = Vec::new();
//! let step = engine.step(&mut emitted).unwrap();
//! assert_eq!(step.prefill_tokens, 1000); // the prefill step samples the first token
//! assert_eq!(emitted[0].generated, 1);
//! ```

use std::collections::VecDeque;
use std::time::Duration;

#[cfg(test)]
mod tests;

/// A sequence's id, chosen by the caller.
pub type SeqId = u64;

/// The engine's parameters. The defaults are documented in the crate README.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Most sequences in one batch (vLLM `--max-num-seqs`).
    pub max_batch: usize,
    /// KV-cache size in tokens.
    pub kv_tokens: u32,
    /// Tokens per KV block (vLLM `--block-size`).
    pub block_size: u32,
    /// Token budget of one step, decode and prefill together (vLLM
    /// `--max-num-batched-tokens`); longer prompts are prefilled in chunks.
    pub max_batched_tokens: u32,
    /// Prefill cost per prompt token, in microseconds.
    pub prefill_us_per_token: f64,
    /// Fixed cost of one step, in microseconds.
    pub step_base_us: f64,
    /// Added cost per sequence in the step, in microseconds.
    pub step_per_seq_us: f64,
    /// Multiplies every step's duration: 2.0 is a GPU twice as slow.
    pub speed: f64,
}

/// What the caller asks the engine to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpec {
    /// The caller's id for this sequence.
    pub id: SeqId,
    /// Prompt length in tokens (at least 1).
    pub prompt_tokens: u32,
    /// Tokens to generate (at least 1); the sequence finishes after exactly this many.
    pub max_tokens: u32,
}

/// A sequence's progress after a step: it sampled its `generated`-th token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emit {
    /// The sequence.
    pub id: SeqId,
    /// Tokens generated so far, including this one.
    pub generated: u32,
    /// Whether this was the last token; the sequence has left the engine.
    pub finished: bool,
}

/// One iteration's plan and cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Simulated GPU time of the step.
    pub duration: Duration,
    /// Sequences that ran in the step (decode and prefill).
    pub seqs: usize,
    /// Prompt tokens prefilled in the step.
    pub prefill_tokens: u32,
    /// Sequences preempted while planning the step.
    pub preempted: usize,
}

/// The engine's queues at a point in time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Sequences in the waiting queue (never admitted, or preempted).
    pub waiting: usize,
    /// Sequences in the running batch, prefilling or decoding.
    pub running: usize,
    /// KV blocks in use.
    pub used_blocks: u32,
    /// KV blocks in all.
    pub total_blocks: u32,
}

/// One sequence as `/state` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqView {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens generated so far (kept across a preemption).
    pub generated: u32,
    /// Tokens it will generate in all.
    pub max_tokens: u32,
}

/// The engine's sequences at a point in time: the running batch in admission order (oldest
/// first) and the waiting queue in the order it will be admitted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The running batch, oldest first.
    pub running: Vec<SeqView>,
    /// The waiting queue, head first.
    pub waiting: Vec<SeqView>,
}

/// Why a sequence was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Zero prompt or output tokens.
    #[error("a sequence needs at least one prompt token and one output token")]
    Empty,
    /// The sequence could not fit in the KV cache even alone.
    #[error("{needed} tokens do not fit in a KV cache of {capacity} tokens")]
    TooLong {
        /// Prompt plus output tokens.
        needed: u64,
        /// The cache's size in tokens (whole blocks).
        capacity: u64,
    },
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The engine state: a FIFO waiting queue and a running batch over a block-counted KV cache.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    total_blocks: u32,
    used_blocks: u32,
    waiting: VecDeque<Seq>,
    /// In admission order: index 0 is the oldest.
    running: Vec<Seq>,
    preemptions: u64,
}

#[derive(Clone, Copy, Debug)]
struct Seq {
    spec: SeqSpec,
    generated: u32,
    /// Context tokens still to prefill before the next token can be sampled; 0 when decoding.
    prefill_left: u32,
    /// KV blocks held.
    blocks: u32,
    /// Tokens scheduled in the step being planned.
    scheduled: u32,
}

// === impl EngineConfig ===

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            kv_tokens: 65_536,
            block_size: 16,
            max_batched_tokens: 8192,
            prefill_us_per_token: 40.0,
            step_base_us: 3500.0,
            step_per_seq_us: 80.0,
            speed: 1.0,
        }
    }
}

impl EngineConfig {
    /// Checks that the parameters describe an engine that can run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_batch == 0 {
            return bad("max batch must be at least 1".into());
        }
        if self.block_size == 0 {
            return bad("block size must be at least 1".into());
        }
        if self.kv_tokens < self.block_size {
            return bad(format!("KV cache of {} tokens holds no block of {}", self.kv_tokens, self.block_size));
        }
        if (self.max_batched_tokens as usize) < self.max_batch {
            return bad(format!(
                "max batched tokens ({}) must be at least the max batch ({}), so a full batch \
                 of decoding sequences fits in one step",
                self.max_batched_tokens, self.max_batch
            ));
        }
        for (name, v) in [
            ("prefill us per token", self.prefill_us_per_token),
            ("step base us", self.step_base_us),
            ("step per-seq us", self.step_per_seq_us),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a finite number >= 0, not {v}"));
            }
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return bad(format!("speed must be a finite number > 0, not {}", self.speed));
        }
        Ok(())
    }

    /// Simulated duration of a step with `seqs` sequences and `prefill_tokens` prompt tokens.
    pub fn step_duration(&self, seqs: usize, prefill_tokens: u32) -> Duration {
        let us = self.step_base_us
            + self.step_per_seq_us * seqs as f64
            + self.prefill_us_per_token * f64::from(prefill_tokens);
        Duration::from_secs_f64(us * self.speed / 1e6)
    }
}

// === impl Engine ===

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            total_blocks: config.kv_tokens / config.block_size,
            config,
            used_blocks: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions: 0,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes the speed factor from the next step on (a replica that warms up); a value that
    /// is not a finite number > 0 is ignored.
    pub fn set_speed(&mut self, speed: f64) {
        if speed.is_finite() && speed > 0.0 {
            self.config.speed = speed;
        }
    }

    /// Every sequence's size and progress, running and waiting.
    pub fn snapshot(&self) -> Snapshot {
        let view = |s: &Seq| SeqView {
            prompt_tokens: s.spec.prompt_tokens,
            generated: s.generated,
            max_tokens: s.spec.max_tokens,
        };
        Snapshot { running: self.running.iter().map(view).collect(), waiting: self.waiting.iter().map(view).collect() }
    }

    /// Largest prompt + output the cache can hold for one sequence.
    pub fn capacity_tokens(&self) -> u64 {
        u64::from(self.total_blocks) * u64::from(self.config.block_size)
    }

    /// Queues a sequence at the back of the waiting queue. The caller keeps ids unique.
    pub fn submit(&mut self, spec: SeqSpec) -> Result<(), SubmitError> {
        if spec.prompt_tokens == 0 || spec.max_tokens == 0 {
            return Err(SubmitError::Empty);
        }
        let needed = u64::from(spec.prompt_tokens) + u64::from(spec.max_tokens);
        if needed > self.capacity_tokens() {
            return Err(SubmitError::TooLong { needed, capacity: self.capacity_tokens() });
        }
        self.waiting.push_back(Seq { spec, generated: 0, prefill_left: 0, blocks: 0, scheduled: 0 });
        Ok(())
    }

    /// Removes a sequence wherever it is and frees its KV; false if it is not here.
    pub fn abort(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.spec.id == id) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.spec.id == id) {
            let seq = self.running.remove(i);
            self.used_blocks -= seq.blocks;
            return true;
        }
        false
    }

    /// The queues now.
    pub fn load(&self) -> Load {
        Load {
            waiting: self.waiting.len(),
            running: self.running.len(),
            used_blocks: self.used_blocks,
            total_blocks: self.total_blocks,
        }
    }

    /// Preemptions since the start.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// Whether the engine holds no sequence at all.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Runs one iteration: plans it, applies its results and appends the sampled tokens to
    /// `emitted` (which it does not clear). `None` when there is nothing to run.
    pub fn step(&mut self, emitted: &mut Vec<Emit>) -> Option<Step> {
        let mut budget = self.config.max_batched_tokens;
        let mut seqs = 0;
        let mut prefill_tokens = 0;
        let mut preempted = 0;

        // 1. Running sequences, oldest first.
        let mut i = 0;
        while i < self.running.len() {
            let seq = self.running[i];
            let tokens = if seq.prefill_left == 0 { 1 } else { seq.prefill_left.min(budget) };
            if tokens == 0 || tokens > budget {
                i += 1;
                continue;
            }
            let samples = seq.prefill_left == 0 || tokens == seq.prefill_left;
            if samples {
                let need = self.blocks_for(seq.context() + 1) - seq.blocks;
                while self.free_blocks() < need {
                    // Internal: the newest sequence is last; it has not been scheduled yet
                    // in this step, unless it is `seq` itself.
                    let victim = self.running.len() - 1;
                    self.preempt(victim);
                    preempted += 1;
                    if victim == i {
                        break;
                    }
                }
                if i >= self.running.len() {
                    break;
                }
                self.used_blocks += need;
                self.running[i].blocks += need;
            }
            let seq = &mut self.running[i];
            seq.scheduled = tokens;
            budget -= tokens;
            seqs += 1;
            if seq.prefill_left > 0 {
                prefill_tokens += tokens;
            }
            i += 1;
        }

        // 2. Admission, FIFO, not in a step that preempted.
        while preempted == 0 && self.running.len() < self.config.max_batch && budget > 0 {
            let Some(head) = self.waiting.front() else {
                break;
            };
            let context = head.context();
            let tokens = context.min(budget);
            let samples = tokens == context;
            let need = self.blocks_for(context + u32::from(samples));
            if need > self.free_blocks() {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            self.used_blocks += need;
            seq.blocks = need;
            seq.prefill_left = context;
            seq.scheduled = tokens;
            budget -= tokens;
            seqs += 1;
            prefill_tokens += tokens;
            self.running.push(seq);
        }

        if seqs == 0 {
            return None;
        }

        // 3. Results.
        let used_blocks = &mut self.used_blocks;
        self.running.retain_mut(|seq| {
            let tokens = std::mem::take(&mut seq.scheduled);
            if tokens == 0 {
                return true;
            }
            if seq.prefill_left > 0 {
                seq.prefill_left -= tokens;
                if seq.prefill_left > 0 {
                    return true;
                }
            }
            seq.generated += 1;
            let finished = seq.generated >= seq.spec.max_tokens;
            emitted.push(Emit { id: seq.spec.id, generated: seq.generated, finished });
            if finished {
                *used_blocks -= seq.blocks;
            }
            !finished
        });

        Some(Step { duration: self.config.step_duration(seqs, prefill_tokens), seqs, prefill_tokens, preempted })
    }

    fn free_blocks(&self) -> u32 {
        self.total_blocks - self.used_blocks
    }

    fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.config.block_size)
    }

    /// Sends running sequence `i` back to the front of the waiting queue, freeing its KV; its
    /// tokens so far are kept and recomputed on readmission.
    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.used_blocks -= seq.blocks;
        seq.blocks = 0;
        seq.prefill_left = 0;
        seq.scheduled = 0;
        self.waiting.push_front(seq);
        self.preemptions += 1;
    }
}

// === impl Seq ===

impl Seq {
    /// Tokens whose KV the sequence needs: prompt plus tokens generated so far.
    fn context(&self) -> u32 {
        self.spec.prompt_tokens + self.generated
    }
}
