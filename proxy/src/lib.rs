//! The Vane sidecar proxy.
//!
//! One folder per concern, composed in [`stack`] (the path of a request, outermost first):
//!
//! ```text
//! server   accept within a connection limit, h1 / h2c detection, header-read and idle timeouts
//! metrics  counts, latency, in-flight (reads the route's Tag from the response)
//! trace    spans (W3C traceparent, OTLP), model metrics (tokens, TTFT, TPOT, GPU-seconds), access log
//! load     inbound only: the pod's load (ORCA) on every response; the probe and peer followers
//! error    every error becomes its documented status and vane-proxy-error
//! route    authority -> service -> route -> weighted backend (or the inbound target);
//!          below it trace's model layer: the request's model and its backend's busy clock
//! authz    inbound only: the caller's identity for the app, and who may call (403 otherwise)
//! coalesce outbound only, opt-in per route: identical requests in flight share one answer
//! retry    outbound only: another endpoint when nothing was sent (tower's Retry)
//! balance  endpoint state, the pick (vane-route's selection policies), learning from answers
//! client   connect (where TLS plugs in), per-endpoint pools, the head the endpoint receives
//! ```
//!
//! Beside the request path: [`body`] (request and response bodies), [`config`] (the active
//! [`config::Snapshot`] behind an `ArcSwap`, loaded once per request and swapped whole on reload),
//! [`control`] (the control service's discovery stream), [`identity`] (this proxy's certificate,
//! from files or the identity service), [`admin`] (`/live`, `/ready`, `/metrics`, `/config`,
//! `/identity`) and [`app`] (command line, startup, drain). The decisions themselves
//! (route match, weighted pick, endpoint cost and selection, ejection) are pure functions in the
//! `vane-route` crate.
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod body;
pub mod capture;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod control;
pub mod error;
pub mod hedge;
pub mod identity;
pub mod load;
pub mod metrics;
pub mod retry;
pub mod route;
pub mod server;
pub mod shed;
pub mod stack;
pub mod trace;

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
