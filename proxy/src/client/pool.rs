//! Connections to one endpoint: a stack of idle HTTP/1.1 connections, or one shared HTTP/2
//! connection that every request multiplexes over.
//!
//! Internal: this replaces a general-purpose pooled client. The proxy already knows the endpoint
//! (the balancer chose it), so the pool needs no map lookup by authority; it lives in the
//! endpoint's state, survives config reloads with it, and hands an HTTP/1.1 connection back only
//! when the response body has been read to its end (see [`PooledConn`]).

use super::SendError;
use crate::body::ReqBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vane_route::config::Protocol;

/// Idle HTTP/1.1 connections kept per endpoint at most; more are closed when they come back.
/// Sized for the 64-1024 concurrent requests a sidecar sees towards one model server.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

struct Idle {
    tx: http1::SendRequest<ReqBody>,
    since: Instant,
}

/// The connections of one endpoint.
#[derive(Default)]
pub struct ConnPool {
    h1: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("idle_h1", &lock(&self.h1).len()).finish()
    }
}

use super::connect::{open_h1, open_h2};
use crate::lock;

/// An HTTP/1.1 connection lent to one request; it goes back to its pool when the response body
/// has been read to the end (a body abandoned half-way leaves the connection unusable: dropped).
pub struct PooledConn {
    tx: Option<http1::SendRequest<ReqBody>>,
    pool: Arc<ConnPool>,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PooledConn")
    }
}

impl PooledConn {
    /// The response body ended cleanly: the connection may serve another request.
    pub fn release(mut self, idle_timeout: Duration) {
        if let Some(tx) = self.tx.take()
            && !tx.is_closed()
        {
            self.pool.put(tx, idle_timeout);
        }
    }
}

impl ConnPool {
    fn put(&self, tx: http1::SendRequest<ReqBody>, idle_timeout: Duration) {
        let now = Instant::now();
        let mut idle = lock(&self.h1);
        idle.retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < idle_timeout);
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { tx, since: now });
        }
    }

    fn take_idle(&self, idle_timeout: Duration) -> Option<http1::SendRequest<ReqBody>> {
        let now = Instant::now();
        let mut idle = lock(&self.h1);
        while let Some(c) = idle.pop() {
            if !c.tx.is_closed() && now.duration_since(c.since) < idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    /// Forgets the shared HTTP/2 connection, so that the next request opens a new one (requests
    /// on it finish; hyper closes it when the last handle is gone).
    pub fn close_h2(&self) {
        lock(&self.h2).take();
    }

    /// Number of idle HTTP/1.1 connections (for tests and metrics).
    pub fn idle(&self) -> usize {
        lock(&self.h1).len()
    }
}

/// An answer's head, the HTTP/1.1 connection that carries its body (to give back when it ends),
/// and when the request was handed to the connection: a new connection's setup is not the
/// endpoint's answering time.
pub type Sent = (Response<Incoming>, Option<PooledConn>, Instant);

/// Sends one request to `addr` over a pooled or new connection (over mTLS and HTTP/2 when
/// `mesh` is given).
///
/// HTTP/1.1: a request that an idle pooled connection could not take (closed by the server
/// meanwhile) is sent again on a new connection, since it was never written.
///
/// Internal: opening a connection (a TLS or HTTP/2 handshake, kilobytes of state) is boxed, so
/// that this future, which every request's own boxed future holds, stays small: held inline,
/// it was copied whole at every request (a fifth of the proxy's instructions per request).
pub async fn send(
    pool: &Arc<ConnPool>,
    addr: SocketAddr,
    protocol: Protocol,
    mesh: Option<&super::Mesh>,
    mut req: Request<ReqBody>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<Sent, SendError> {
    let protocol = if mesh.is_some() { Protocol::Http2 } else { protocol };
    match protocol {
        Protocol::Http1 => loop {
            let (mut tx, reused) = match pool.take_idle(idle_timeout) {
                Some(tx) => (tx, true),
                None => (Box::pin(open_h1(addr, connect_timeout)).await?, false),
            };
            if reused && tx.ready().await.is_err() {
                continue;
            }
            let sent_at = Instant::now();
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((resp, Some(PooledConn { tx: Some(tx), pool: Arc::clone(pool) }), sent_at));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::Upstream(e.into_error())),
                },
            }
        },
        Protocol::Http2 => loop {
            let shared = lock(&pool.h2).as_ref().filter(|tx| !tx.is_closed()).cloned();
            let (mut tx, reused) = match shared {
                Some(tx) => (tx, true),
                None => {
                    let tx = match mesh {
                        Some(m) => Box::pin(super::mesh::open_h2_mesh(addr, connect_timeout, m)).await?,
                        None => Box::pin(open_h2(addr, connect_timeout)).await?,
                    };
                    *lock(&pool.h2) = Some(tx.clone());
                    (tx, false)
                }
            };
            if let Err(e) = tx.ready().await {
                // The shared connection went away (GOAWAY, reset) before this request was sent.
                lock(&pool.h2).take_if(|t| t.is_closed());
                if reused {
                    continue;
                }
                return Err(SendError::Handshake(e));
            }
            let sent_at = Instant::now();
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, None, sent_at)),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::Upstream(e.into_error())),
                },
            }
        },
    }
}
