//! Fetching the model server's metrics page over a kept-alive connection.
//!
//! At a 10 ms interval a new TCP connection per poll would cost more than the page itself, so
//! the client is hyper-util's pooled client, holding one idle connection to the server.

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The largest page the probe reads. A vLLM page with a few models is 50–200 KiB; anything
/// far bigger is not a metrics page.
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No connection, or the connection broke (the message carries the whole cause chain,
    /// e.g. `client error (Connect): tcp connect error: Connection refused`).
    #[error("request failed: {0}")]
    Connect(String),
    /// No complete answer within the scrape timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer other than 200.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The body broke off or was too large.
    #[error("reading the page failed: {0}")]
    Body(String),
}

impl ScrapeError {
    /// A short, fixed reason for the error counter's label.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Status(_) => "status",
            ScrapeError::Body(_) => "body",
        }
    }
}

/// A client for one metrics URL.
#[derive(Debug, Clone)]
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
    timeout: Duration,
}

impl Scraper {
    /// A scraper for `uri` (plain `http://`; the model server is on localhost).
    pub fn new(uri: Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            // One poll at a time, so one connection is all the pool ever needs.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Scraper { client, uri, timeout }
    }

    /// Fetches the page once.
    pub async fn fetch(&self) -> Result<Bytes, ScrapeError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::Timeout(self.timeout)),
        }
    }

    async fn fetch_inner(&self) -> Result<Bytes, ScrapeError> {
        let req = Request::get(self.uri.clone())
            // Ask for the classic text format: every server speaks it, and Python's
            // prometheus_client would otherwise negotiate OpenMetrics or gzip.
            .header(header::ACCEPT, "text/plain; version=0.0.4")
            .header(header::USER_AGENT, concat!("vane-gpu-probe/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| ScrapeError::Body(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| ScrapeError::Connect(chain(&e)))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(ScrapeError::Status(status));
        }
        let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES);
        let collected = body.collect().await.map_err(|e| ScrapeError::Body(e.to_string()))?;
        Ok(collected.to_bytes())
    }
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
