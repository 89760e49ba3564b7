//! Following a peer's load stream (out-of-band ORCA): each reading of an endpoint's pod, as its
//! Vane inbound proxy makes it, fed to the balancer.

use super::LOAD_STREAM_PATH;
use crate::balance::Endpoint;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;
use vane_route::orca;

/// Follows an endpoint's load stream (its Vane inbound proxy's [`LOAD_STREAM_PATH`]) for as long
/// as the endpoint is in the config, feeding each report to the balancer. Reconnects with backoff
/// (100 ms doubling to 5 s); an endpoint that is not a Vane proxy (404) is retried every 5 s.
pub async fn follow(ep: Weak<Endpoint>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(addr) = ep.upgrade().map(|e| e.addr) else { return };
        match follow_once(&ep, addr).await {
            Ok(true) => return,
            Ok(false) => backoff = Duration::from_millis(100),
            Err(e) => tracing::debug!(endpoint = %addr, "load stream: {e}"),
        }
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection; `Ok(true)` when the endpoint is gone from the config.
async fn follow_once(ep: &Weak<Endpoint>, addr: SocketAddr) -> anyhow::Result<bool> {
    let mut tx = crate::client::open_h1(addr, Duration::from_secs(2)).await?;
    let req = Request::get(LOAD_STREAM_PATH).header(http::header::HOST, addr.to_string()).body(Empty::<Bytes>::new())?;
    let resp = tx.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    // A live stream sends a line per reading (every few ms); a long silence means it is stuck.
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await? {
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        let Some(endpoint) = ep.upgrade() else { return Ok(true) };
        let now = crate::now_ns();
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            if let Some(report) = orca::parse(&buf[..i]) {
                endpoint.report(report, now);
            }
            buf.drain(..=i);
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "load stream line too long");
    }
    Ok(false)
}
