//! The proxy's side of the control service: one long-lived discovery stream (`vane-control`,
//! protocol in `vane_route::discovery`), each message merged into the config and swapped in
//! through the same single `ArcSwap` as a file reload.
//!
//! When the control service cannot be reached, the proxy keeps serving with the last config it
//! built and reconnects with exponential backoff and jitter (100 ms doubling to 10 s, shared
//! `vane_runtime::backoff`); a stream
//! that stays silent for three heartbeats is treated as dead. Every new connection starts with a
//! full snapshot, so nothing is lost while disconnected.
//!
//! With a workload identity ([`ControlTls`]), the stream goes over TLS 1.3 with this proxy's
//! certificate, and the control service must present its own identity; the first connection
//! waits for the first certificate, and each reconnection uses the certificate current then.
//! Without one, plain h2c.

use crate::config::Store;
use crate::identity::Identity;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vane_identity::SpiffeId;
use vane_route::discovery::{self, Message, Subscription};
use vane_runtime::backoff::{Backoff, Jitter};
use vane_runtime::ndjson;

/// Where the control service is and what to ask it for.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// Its discovery address.
    pub addr: SocketAddr,
    /// The services this proxy routes to.
    pub subscription: Subscription,
    /// TLS with this proxy's certificate (`None`: h2c).
    pub tls: Option<ControlTls>,
}

/// The discovery stream over TLS.
#[derive(Clone, Debug)]
pub struct ControlTls {
    /// This proxy's certificate.
    pub identity: Arc<Identity>,
    /// The identity the control service must present.
    pub server: SpiffeId,
}

/// How long TCP (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The connection state, shown in `/ready`.
#[derive(Debug, Default)]
pub struct ControlStatus {
    state: Mutex<String>,
}

impl ControlStatus {
    fn set(&self, s: String) {
        *crate::lock(&self.state) = s;
    }

    /// A one-line description (`connected to ...` or `disconnected: why`).
    pub fn describe(&self) -> String {
        crate::lock(&self.state).clone()
    }
}

/// Reconnects: 100 ms doubling to 10 s, each wait drawn between half and all of it, so proxies
/// do not reconnect in step.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jitter(Jitter::Half)
}

/// Follows the discovery stream for as long as the process runs.
pub async fn run(store: Arc<Store>, metrics: Arc<Metrics>, opts: ControlOptions, status: Arc<ControlStatus>) {
    let mut retry = backoff().start();
    let mut first = true;
    status.set(format!("connecting to {}", opts.addr));
    loop {
        if !first {
            metrics.control_reconnects.inc();
        }
        first = false;
        let outcome = follow(&store, &metrics, &opts, &status).await;
        metrics.control_connected.set(0);
        let (why, got_snapshot) = match outcome {
            Ok(got) => ("stream ended".to_string(), got),
            Err((e, got)) => (e.to_string(), got),
        };
        if got_snapshot {
            retry.reset();
        }
        let wait = retry.next_delay();
        status.set(format!("disconnected from {}: {why} (serving the last config; retrying)", opts.addr));
        tracing::warn!(control = %opts.addr, "discovery stream lost: {why}; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// One connection: returns whether a snapshot arrived on it.
async fn follow(
    store: &Store,
    metrics: &Metrics,
    opts: &ControlOptions,
    status: &ControlStatus,
) -> Result<bool, (anyhow::Error, bool)> {
    let err = |e: anyhow::Error| (e, false);
    let (mut tx, scheme) = match &opts.tls {
        None => (crate::client::open_h2(opts.addr, CONNECT_TIMEOUT).await.map_err(|e| err(e.into()))?, "http"),
        Some(tls) => {
            if tls.identity.load().is_none() {
                status.set(format!("waiting for this proxy's first certificate before connecting to {}", opts.addr));
            }
            let loaded = tls.identity.loaded().await;
            let config = Arc::clone(&loaded.client);
            let tx = crate::identity::connect::open_h2(opts.addr, config, &tls.server, CONNECT_TIMEOUT)
                .await
                .map_err(|e| err(e.into()))?;
            (tx, "https")
        }
    };
    let uri = format!("{scheme}://{}{}?{}", opts.addr, discovery::PATH, opts.subscription.to_query());
    let req = Request::get(uri).body(Empty::<Bytes>::new()).map_err(|e| err(e.into()))?;
    let resp = tx.send_request(req).await.map_err(|e| err(e.into()))?;
    if !resp.status().is_success() {
        return Err(err(anyhow::anyhow!("control service answered {}", resp.status())));
    }
    metrics.control_connected.set(1);
    match &opts.tls {
        None => status.set(format!("connected to {}", opts.addr)),
        Some(tls) => status.set(format!("connected to {} over TLS ({})", opts.addr, tls.server)),
    }
    let mut lines = ndjson::lines(resp.into_body(), discovery::MAX_LINE_BYTES);
    let mut got_snapshot = false;
    let silence = discovery::HEARTBEAT * 3;
    loop {
        let line = match tokio::time::timeout(silence, lines.next_line()).await {
            Err(_) => return Err((anyhow::anyhow!("no message for {silence:?}"), got_snapshot)),
            Ok(None) => return Ok(got_snapshot),
            Ok(Some(Err(e))) => return Err((e.into(), got_snapshot)),
            Ok(Some(Ok(line))) => line,
        };
        {
            let msg = Message::from_line(line.as_bytes()).map_err(|e| (e.into(), got_snapshot))?;
            let kind = match &msg {
                Message::Snapshot { .. } => "snapshot",
                Message::Update { .. } => "update",
                Message::Remove { .. } => "remove",
                Message::Ping => "ping",
                Message::Unknown => "unknown",
            };
            metrics.control_message(kind);
            got_snapshot |= kind == "snapshot";
            match store.apply_discovery(msg) {
                Ok(Some(v)) => tracing::debug!(version = v, "{kind} from the control service applied"),
                Ok(None) => {}
                // An invalid update is logged and counted by the store; the stream goes on.
                Err(crate::config::DiscoveryUpdateError::Invalid(_)) => {}
                Err(e) => return Err((e.into(), got_snapshot)),
            }
        }
    }
}
