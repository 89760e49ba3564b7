//! Per-endpoint state the balancer reads: peak-EWMA latency, requests in flight, health.
//!
//! The state outlives config reloads: a new snapshot reuses the `Arc<Endpoint>` of every address
//! it still has, so a reload neither forgets latency nor un-ejects a dead endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vane_route::balance::{self, LoadInputs, PeakEwma};
use vane_route::config::Protocol;
use vane_route::health::{EjectionPolicy, Health, Outcome};
use vane_route::table::Settings;

/// One endpoint (an `ip:port` of a backend).
#[derive(Debug)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Protocol spoken to it.
    pub protocol: Protocol,
    /// URI authority for requests to it (built once).
    pub authority: http::uri::Authority,
    /// Its connections.
    pub pool: Arc<crate::pool::ConnPool>,
    in_flight: AtomicU32,
    stats: Mutex<Stats>,
}

#[derive(Debug)]
struct Stats {
    rtt: PeakEwma,
    health: Health,
}

impl Endpoint {
    /// A fresh endpoint with the configured default RTT.
    pub fn new(addr: SocketAddr, protocol: Protocol, default_rtt: Duration) -> Endpoint {
        let authority = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            addr,
            protocol,
            authority,
            pool: Arc::default(),
            in_flight: AtomicU32::new(0),
            stats: Mutex::new(Stats {
                rtt: PeakEwma::new(default_rtt, crate::now_ns()),
                health: Health::default(),
            }),
        }
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic while holding this lock cannot leave the plain-data stats inconsistent.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests in flight from this proxy.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            ep: Arc::clone(self),
            conn: None,
            idle_timeout: Duration::ZERO,
        }
    }

    /// Whether the endpoint is not ejected at `now_ns`.
    pub fn available(&self, now_ns: u64) -> bool {
        self.stats().health.available(now_ns)
    }

    /// The balancer's cost at `now_ns`.
    pub fn cost(&self, now_ns: u64, settings: &Settings) -> f64 {
        let rtt_ns = self.stats().rtt.get(now_ns, settings.ewma_decay);
        let load = LoadInputs {
            rtt_ns,
            in_flight: self.in_flight(),
            ..Default::default()
        };
        balance::cost(&load, &settings.cost)
    }

    /// Current latency estimate in seconds (for metrics).
    pub fn rtt_seconds(&self, now_ns: u64, decay: Duration) -> f64 {
        self.stats().rtt.get(now_ns, decay) / 1e9
    }

    /// Whether the endpoint is ejected at `now_ns` (for metrics).
    pub fn ejected(&self, now_ns: u64) -> bool {
        !self.available(now_ns)
    }

    /// Records a latency sample (time to response headers).
    pub fn observe_rtt(&self, rtt: Duration, decay: Duration) {
        let now = crate::now_ns();
        self.stats().rtt.observe(rtt, now, decay);
    }

    /// Records an outcome; logs an ejection.
    pub fn record(&self, outcome: Outcome, policy: &EjectionPolicy) {
        let now = crate::now_ns();
        if let Some(d) = self.stats().health.record(outcome, now, policy) {
            tracing::warn!(endpoint = %self.addr, ?outcome, "endpoint ejected for {d:?}");
        }
    }
}

/// Keeps a request counted in flight on its endpoint until dropped, and holds the HTTP/1.1
/// connection that carries its response.
#[derive(Debug)]
pub struct InFlightGuard {
    ep: Arc<Endpoint>,
    conn: Option<crate::pool::PooledConn>,
    idle_timeout: Duration,
}

impl InFlightGuard {
    /// Attaches the connection to give back when the response ends cleanly.
    pub fn hold(&mut self, conn: Option<crate::pool::PooledConn>, idle_timeout: Duration) {
        self.conn = conn;
        self.idle_timeout = idle_timeout;
    }

    /// The response body ended cleanly: the connection goes back to the pool.
    pub fn finish(mut self) {
        if let Some(c) = self.conn.take() {
            c.release(self.idle_timeout);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint with power of two choices over the available ones not in `tried`
/// (a bit set of endpoint indexes). `None` when none is available.
pub fn pick(
    endpoints: &[Arc<Endpoint>],
    tried: u64,
    settings: &Settings,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let now = crate::now_ns();
    // Fast path: no retry yet and every endpoint available (the common case): no allocation.
    let eligible = |i: usize, e: &Endpoint| (i >= 64 || tried & (1 << i) == 0) && e.available(now);
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let all = tried == 0 && endpoints.iter().all(|e| e.available(now));
    if all {
        return balance::p2c(n, rng.u64(..), rng.u64(..), |i| {
            endpoints[i].cost(now, settings)
        });
    }
    let candidates: Vec<usize> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, e)| eligible(*i, e))
        .map(|(i, _)| i)
        .collect();
    let k = balance::p2c(candidates.len(), rng.u64(..), rng.u64(..), |i| {
        endpoints[candidates[i]].cost(now, settings)
    })?;
    Some(candidates[k])
}
