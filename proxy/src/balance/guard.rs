//! A request in flight on an endpoint: counted until its response body ends, timed at its first
//! body byte and its end, and holding the HTTP/1.1 connection that carries the body.

use super::backend::Typical;
use super::endpoint::Endpoint;
use crate::body::Completion;
use crate::client::PooledConn;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keeps a request counted in flight on its endpoint until dropped, and holds the HTTP/1.1
/// connection that carries its response.
#[derive(Debug)]
pub struct InFlightGuard {
    ep: Arc<Endpoint>,
    /// The backend's typical figures, which this answer's figures join (`None` for a backend of
    /// one endpoint: nobody reads them there, and a backend that grows learns them from then on).
    typical: Option<Arc<Typical>>,
    started_ns: u64,
    /// The time to first byte, once seen.
    first: Option<Duration>,
    conn: Option<PooledConn>,
    idle_timeout: Duration,
    /// When the request was sent and the EWMA decay, until the first response byte is seen.
    rtt_from: Option<(Instant, Duration)>,
    /// When the first body byte came and the EWMA decay, until the body ends.
    body_from: Option<(Instant, Duration)>,
}

impl InFlightGuard {
    /// Counts a request in flight on `ep` (of a backend with `typical` figures) until the guard drops.
    pub fn start(ep: &Arc<Endpoint>, typical: Option<&Arc<Typical>>) -> InFlightGuard {
        let started_ns = crate::now_ns();
        ep.begin(started_ns);
        InFlightGuard {
            ep: Arc::clone(ep),
            typical: typical.cloned(),
            started_ns,
            first: None,
            conn: None,
            idle_timeout: Duration::ZERO,
            rtt_from: None,
            body_from: None,
        }
    }

    /// Attaches the connection to give back when the response ends cleanly, and (unless the
    /// answer was a refusal) when the request was sent, to time the first response byte.
    pub fn hold(
        &mut self,
        conn: Option<PooledConn>,
        idle_timeout: Duration,
        rtt_from: Option<(std::time::Instant, Duration)>,
    ) {
        self.conn = conn;
        self.idle_timeout = idle_timeout;
        self.rtt_from = rtt_from;
    }

    /// The first byte of the response body arrived: its latency is the endpoint's RTT sample.
    ///
    /// Internal: a streaming model server sends its headers at once and its first token after
    /// queueing and prefill, so the first *body* byte is what shows how loaded it is.
    pub fn first_byte(&mut self) {
        if let Some((sent, decay)) = self.rtt_from.take() {
            let now = Instant::now();
            let rtt = now.saturating_duration_since(sent);
            self.ep.observe(Some(rtt), None, decay);
            self.first = Some(rtt);
            self.body_from = Some((now, decay));
        }
    }

    /// The response body ended cleanly: its streaming time is sampled (with the first-byte time
    /// too when the body came in one piece) and the connection goes back to the pool. A body
    /// that breaks off is not sampled.
    pub fn finish(mut self) {
        if let Some((sent, decay)) = self.rtt_from.take() {
            // The first byte and the end at once: the body took no time.
            let rtt = sent.elapsed();
            self.ep.observe(Some(rtt), Some(Duration::ZERO), decay);
            if let Some(t) = &self.typical {
                t.observe(Some(rtt), Some(Duration::ZERO), decay);
            }
        } else if let Some((first, decay)) = self.body_from.take() {
            let body = first.elapsed().min(super::MAX_BODY_SAMPLE);
            self.ep.observe(None, Some(body), decay);
            if let Some(t) = &self.typical {
                t.observe(self.first, Some(body), decay);
            }
        }
        if let Some(c) = self.conn.take() {
            c.release(self.idle_timeout);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.ep.end(self.started_ns);
    }
}

impl Completion for InFlightGuard {
    fn first_byte(&mut self) {
        InFlightGuard::first_byte(self);
    }
    fn finish(self: Box<Self>) {
        InFlightGuard::finish(*self);
    }
}
