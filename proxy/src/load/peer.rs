//! Following a peer's load stream (out-of-band ORCA): each reading of an endpoint's pod, as its
//! Vane inbound proxy makes it, fed to the balancer.

use super::local::LOAD_STREAM_PATH;
use crate::balance::Endpoint;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;
use vane_route::orca;
use vane_runtime::backoff::{Backoff, Jitter};
use vane_runtime::ndjson;

/// The longest line a load stream may send.
const MAX_LINE: usize = 64 * 1024;

/// Follows an endpoint's load stream (its Vane inbound proxy's [`LOAD_STREAM_PATH`]) for as long
/// as the endpoint is in the config, feeding each report to the balancer. Reconnects with backoff
/// (100 ms doubling to 5 s); an endpoint that is not a Vane proxy (404) is retried every 5 s.
pub async fn follow(ep: Weak<Endpoint>) {
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(Jitter::Half).start();
    loop {
        let Some(addr) = ep.upgrade().map(|e| e.addr) else { return };
        match follow_once(&ep, addr).await {
            Ok(true) => return,
            Ok(false) => retry.reset(),
            Err(e) => tracing::debug!(endpoint = %addr, "load stream: {e}"),
        }
        retry.wait().await;
    }
}

/// One connection; `Ok(true)` when the endpoint is gone from the config.
async fn follow_once(ep: &Weak<Endpoint>, addr: SocketAddr) -> anyhow::Result<bool> {
    let mut tx = crate::client::open_h1(addr, Duration::from_secs(2)).await?;
    let req = Request::get(LOAD_STREAM_PATH).header(http::header::HOST, addr.to_string()).body(Empty::<Bytes>::new())?;
    let resp = tx.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    let mut lines = ndjson::lines(resp.into_body(), MAX_LINE);
    // A live stream sends a line per reading (every few ms); a long silence means it is stuck.
    while let Some(line) = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await? {
        let line = line?;
        let Some(endpoint) = ep.upgrade() else { return Ok(true) };
        if let Some(report) = orca::parse(line.as_bytes()) {
            endpoint.report(report, crate::now_ns());
        }
    }
    Ok(false)
}
