//! The Vane sidecar proxy.
//!
//! A request travels through one tower stack, composed in [`stack`]:
//!
//! ```text
//! listener (h1 / h2c detection, server.rs)
//!   -> metrics   (counts, latency, in-flight; metrics.rs)
//!   -> route     (authority -> service -> route -> weighted backend; route.rs)
//!   -> forward   (power of two choices over peak-EWMA x in-flight, ejection, pooled client; forward.rs)
//! ```
//!
//! Configuration is one immutable [`config::Snapshot`] behind an `ArcSwap`, loaded once per request
//! and swapped whole on reload. The decisions themselves (route match, weighted pick, endpoint cost,
//! ejection) are pure functions in the `vane-route` crate.
#![warn(missing_docs)]

pub mod admin;
pub mod args;
pub mod body;
pub mod config;
pub mod control;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod forward;
pub mod load;
pub mod metrics;
pub mod pool;
pub mod route;
pub mod server;
pub mod stack;

/// Monotonic nanoseconds: the clock the pure balancer code runs on. It starts one day in, so
/// that "read `age` ago" can be written as a subtraction even right after start.
pub fn now_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    const ONE_DAY_NS: u64 = 86_400 * 1_000_000_000;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + ONE_DAY_NS
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain counters and
/// snapshots, replaced whole): a poisoned lock is used as is rather than spreading the panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
