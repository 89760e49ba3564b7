//! The engine loop: one task that owns the [`Engine`], steps it on a timer and hands each
//! sampled token to its request.
//!
//! Handlers talk to the loop through an [`EngineHandle`]: `submit` queues a sequence and
//! returns a [`Ticket`] whose [`Progress`] the loop advances; dropping the ticket before the
//! last token (a client that went away) aborts the sequence and frees its KV, as vLLM does.
//!
//! Per request the loop keeps one atomic counter and one `Notify`, not a queue of tokens: a
//! slow reader costs no memory, and thousands of streams cost a few hundred bytes each.
//!
//! Timing: steps are chained on absolute deadlines (`next = previous deadline + step`), so
//! the timer's millisecond granularity rounds individual steps but not their sum; a loop
//! that falls more than [`LATE_RESET`] behind starts over from now instead of bursting.
//!
//! With a [`Slow`] start the loop runs its first steps at another speed (see [`speed_at`]),
//! and after every step it publishes the engine's sequences for `/state`.

use crate::engine::{Emit, Engine, SeqId, SeqSpec, SubmitError};
use crate::metrics::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How far behind its deadline the loop may fall before it stops catching up.
pub const LATE_RESET: Duration = Duration::from_millis(5);

/// A replica that starts slow (cold caches, JIT compilation): for `duration` after the start it
/// runs at `speed` instead of the configured speed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slow {
    /// How long the slow phase lasts from the simulator's start.
    pub duration: Duration,
    /// The speed factor meanwhile (3.0: three times slower).
    pub speed: f64,
}

/// The speed factor `elapsed` after the start: `slow.speed` during a slow start, else `speed`.
pub fn speed_at(elapsed: Duration, speed: f64, slow: Option<Slow>) -> f64 {
    match slow {
        Some(s) if elapsed < s.duration => s.speed,
        _ => speed,
    }
}

/// A request's view of its sequence.
#[derive(Debug)]
pub struct Progress {
    generated: AtomicU32,
    /// Set by the loop when it refused or dropped the sequence.
    failed: AtomicBool,
    notify: Notify,
}

/// A submitted sequence; dropping it before the end aborts the sequence.
#[derive(Debug)]
pub struct Ticket {
    id: SeqId,
    max_tokens: u32,
    progress: Arc<Progress>,
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Where handlers send work.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

/// The sequence ended without its tokens: the engine refused it or stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the engine dropped the request")]
pub struct Dropped;

#[derive(Debug)]
enum Cmd {
    Submit { spec: SeqSpec, progress: Option<Arc<Progress>>, arrived: Instant },
    Cancel(SeqId),
}

struct Slot {
    progress: Option<Arc<Progress>>,
    arrived: Instant,
    prompt_tokens: u32,
}

// === impl Progress ===

impl Progress {
    fn new() -> Self {
        Self { generated: AtomicU32::new(0), failed: AtomicBool::new(false), notify: Notify::new() }
    }

    fn advance(&self, generated: u32) {
        self.generated.store(generated, Ordering::Release);
        self.notify.notify_one();
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

// === impl Ticket ===

impl Ticket {
    /// Tokens generated so far.
    pub fn generated(&self) -> u32 {
        self.progress.generated.load(Ordering::Acquire)
    }

    /// Waits until more than `seen` tokens exist and returns how many do.
    pub async fn wait_past(&self, seen: u32) -> Result<u32, Dropped> {
        loop {
            let g = self.generated();
            if g > seen {
                return Ok(g);
            }
            if self.progress.failed.load(Ordering::Acquire) {
                return Err(Dropped);
            }
            // Internal: `notify_one` leaves a permit when nobody waits, so a token that
            // lands between the check and this await still wakes us.
            self.progress.notify.notified().await;
        }
    }

    /// Waits for the last token.
    pub async fn finish(&self) -> Result<(), Dropped> {
        let mut seen = self.generated();
        while seen < self.max_tokens {
            seen = self.wait_past(seen).await?;
        }
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.generated() < self.max_tokens {
            let _ = self.tx.send(Cmd::Cancel(self.id));
        }
    }
}

// === impl EngineHandle ===

impl EngineHandle {
    /// The state the loop publishes.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues a request's sequence.
    pub fn submit(&self, prompt_tokens: u32, max_tokens: u32) -> Result<Ticket, Dropped> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Progress::new());
        let spec = SeqSpec { id, prompt_tokens, max_tokens };
        self.shared.add_pending(spec);
        let cmd = Cmd::Submit { spec, progress: Some(progress.clone()), arrived: Instant::now() };
        if self.tx.send(cmd).is_err() {
            self.shared.take_pending(id);
            return Err(Dropped);
        }
        Ok(Ticket { id, max_tokens, progress, tx: self.tx.clone() })
    }

    /// Queues background sequences that nobody reads (a load burst).
    pub fn submit_background(&self, prompt_tokens: u32, max_tokens: u32) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let spec = SeqSpec { id, prompt_tokens, max_tokens };
        self.shared.add_pending(spec);
        let cmd = Cmd::Submit { spec, progress: None, arrived: Instant::now() };
        if self.tx.send(cmd).is_err() {
            self.shared.take_pending(id);
        }
    }
}

/// Builds the handle and the loop; the caller spawns the loop. `slow` is counted from this call.
pub fn start(
    engine: Engine,
    shared: Arc<Shared>,
    slow: Option<Slow>,
) -> (EngineHandle, impl Future<Output = ()> + Send + 'static) {
    // Internal: unbounded, because a request sends at most two commands (submit, cancel),
    // so the queue never holds more than twice the open requests, and a handler's drop
    // cannot wait for room.
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = EngineHandle { tx, next_id: Arc::new(AtomicU64::new(1)), shared: shared.clone() };
    (handle, run(engine, rx, shared, slow, Instant::now()))
}

async fn run(
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    slow: Option<Slow>,
    started: Instant,
) {
    let mut slots: HashMap<SeqId, Slot> = HashMap::new();
    let mut emitted: Vec<Emit> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let speed = engine.config().speed;
    loop {
        while let Ok(cmd) = rx.try_recv() {
            apply(&mut engine, &mut slots, &shared, cmd);
        }
        emitted.clear();
        if slow.is_some() {
            engine.set_speed(speed_at(started.elapsed(), speed, slow));
        }
        let stepped = engine.step(&mut emitted);
        shared.publish_snapshot(engine.snapshot());
        let Some(step) = stepped else {
            shared.publish(engine.load(), engine.preemptions());
            deadline = None;
            match rx.recv().await {
                Some(cmd) => apply(&mut engine, &mut slots, &shared, cmd),
                None => return,
            }
            continue;
        };
        // Internal: published as soon as the step is planned, so a request taken in from
        // the channel is never invisible: the batch already holds what this step admitted,
        // and sequences finishing in this step have left.
        shared.publish(engine.load(), engine.preemptions());

        let now = Instant::now();
        let start = match deadline {
            Some(d) if now.saturating_duration_since(d) <= LATE_RESET => d,
            _ => now,
        };
        let end = start + step.duration;
        deadline = Some(end);
        if end > now {
            tokio::time::sleep_until(end).await;
        } else {
            // Let the handlers run even when steps are shorter than the timer's tick.
            tokio::task::yield_now().await;
        }

        let now = Instant::now();
        shared.tokens(emitted.len() as u64);
        for e in &emitted {
            deliver(&mut slots, &shared, e, now);
        }
    }
}

fn apply(engine: &mut Engine, slots: &mut HashMap<SeqId, Slot>, shared: &Shared, cmd: Cmd) {
    match cmd {
        Cmd::Submit { spec, progress, arrived } => {
            shared.take_pending(spec.id);
            match engine.submit(spec) {
                Ok(()) => {
                    slots.insert(spec.id, Slot { progress, arrived, prompt_tokens: spec.prompt_tokens });
                }
                Err(SubmitError::Empty | SubmitError::TooLong { .. }) => {
                    if let Some(p) = progress {
                        p.fail();
                    }
                }
            }
        }
        Cmd::Cancel(id) => {
            engine.abort(id);
            slots.remove(&id);
        }
    }
}

fn deliver(slots: &mut HashMap<SeqId, Slot>, shared: &Shared, e: &Emit, now: Instant) {
    let Some(slot) = slots.get(&e.id) else {
        return;
    };
    if e.generated == 1 {
        shared.first_token(slot.prompt_tokens, now - slot.arrived);
    }
    if let Some(p) = &slot.progress {
        p.advance(e.generated);
    }
    if e.finished {
        shared.finished(now - slot.arrived);
        slots.remove(&e.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_start_lasts_its_duration() {
        let slow = Some(Slow { duration: Duration::from_secs(10), speed: 3.0 });
        assert_eq!(speed_at(Duration::ZERO, 1.0, slow), 3.0);
        assert_eq!(speed_at(Duration::from_millis(9_999), 1.0, slow), 3.0);
        assert_eq!(speed_at(Duration::from_secs(10), 1.0, slow), 1.0);
        assert_eq!(speed_at(Duration::from_secs(1), 2.0, None), 2.0);
    }
}
