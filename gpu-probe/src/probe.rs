//! Wiring: the poll loop, the GPU thread and the HTTP server, started by [`Probe::run`].

use crate::admin::{self, Shared};
use crate::decode::DecodeMeter;
use crate::error::Error;
use crate::gpu::{self, GpuConfig, GpuReader, GpuUnavailable, GpuView};
use crate::scrape::{ScrapeError, Scraper};
use crate::servers::{self, ReadError, Reading, ServerChoice, ServerKind};
use crate::snapshot::{GoodReading, Rendered, State};
use arc_swap::ArcSwap;
use http::Uri;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use vane_runtime::CancellationToken;
use vane_runtime::serve::HttpOptions;

/// How long open HTTP connections get to finish when the probe stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything the probe needs to run; [`crate::args::Args`] builds it from flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// The model server's metrics URL (`http://` only).
    pub metrics_url: Uri,
    /// Which server's names to read.
    pub server: ServerChoice,
    /// Time between scrapes.
    pub interval: Duration,
    /// Longest a scrape may take.
    pub scrape_timeout: Duration,
    /// Age after which figures are marked stale.
    pub stale_after: Duration,
    /// The decoding time the decode speed is measured over.
    pub decode_window: Duration,
    /// Where to serve `/load` and the rest.
    pub listen: SocketAddr,
    /// GPU reading.
    pub gpu: GpuConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics_url: Uri::from_static("http://127.0.0.1:8000/metrics"),
            server: ServerChoice::Auto,
            interval: Duration::from_millis(10),
            scrape_timeout: Duration::from_millis(500),
            stale_after: Duration::from_secs(1),
            decode_window: crate::decode::WINDOW,
            listen: SocketAddr::from(([127, 0, 0, 1], 4192)),
            gpu: GpuConfig::default(),
        }
    }
}

/// A probe with its listener bound, ready to run.
#[derive(Debug)]
pub struct Probe {
    config: Config,
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Probe {
    /// Checks the config and binds the listener (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Probe, Error> {
        validate(&config)?;
        let listener =
            vane_runtime::serve::bind(config.listen).map_err(|e| Error::Bind { addr: e.addr, source: e.source })?;
        let shared = Arc::new(Shared::new(Rendered::render(&State::default(), config.stale_after)));
        Ok(Probe { config, listener, shared })
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Bind { addr: self.config.listen, source })
    }

    /// Runs until `shutdown` completes, then drains open connections.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let listen = self.local_addr()?;
        let Probe { config, listener, shared } = self;
        let gpu_view = Arc::new(ArcSwap::from_pointee(GpuView::default()));
        let _gpu_task = start_gpu(&config.gpu, &gpu_view)?;

        let stop = CancellationToken::new();
        let poller = tokio::spawn(poll_loop(config.clone(), shared.clone(), gpu_view, stop.clone()));
        let options = HttpOptions { grace: DRAIN_TIMEOUT, h2_keepalive: None, ..HttpOptions::default() };
        let server = tokio::spawn(vane_runtime::admin::serve(
            listener,
            admin::admin(shared, stop.clone()),
            options,
            stop.clone(),
        ));
        tracing::info!(
            %listen, metrics_url = %config.metrics_url, server = %config.server,
            interval = ?config.interval, "vane-gpu-probe started"
        );
        shutdown.await;
        tracing::info!("shutting down");
        stop.cancel();
        let _ = poller.await;
        let _ = server.await;
        Ok(())
    }
}

fn validate(config: &Config) -> Result<(), Error> {
    let bad = |why: String| Err(Error::Config(why));
    if config.metrics_url.scheme_str() != Some("http") || config.metrics_url.host().is_none() {
        return bad(format!("--metrics-url must be an http:// URL with a host, not `{}`", config.metrics_url));
    }
    if config.interval.is_zero() {
        return bad("--interval must be above zero".into());
    }
    if config.decode_window.is_zero() {
        return bad("--decode-window must be above zero".into());
    }
    if config.scrape_timeout.is_zero() {
        return bad("--scrape-timeout must be above zero".into());
    }
    if config.gpu.enabled && config.gpu.interval.is_zero() {
        return bad("--gpu-interval must be above zero".into());
    }
    Ok(())
}

/// Opens the GPU and starts its thread, or logs once why there is no GPU.
fn start_gpu(cfg: &GpuConfig, view: &Arc<ArcSwap<GpuView>>) -> Result<Option<gpu::GpuTask>, Error> {
    match GpuReader::open(cfg) {
        Ok(reader) => {
            for note in reader.notes() {
                tracing::warn!("GPU: {note}");
            }
            tracing::info!("reading the GPU every {:?}", cfg.interval);
            let task = gpu::spawn(reader, cfg.interval, view.clone()).map_err(Error::GpuThread)?;
            Ok(Some(task))
        }
        Err(why) => {
            match why {
                GpuUnavailable::Disabled | GpuUnavailable::NotBuilt => tracing::info!("{why}"),
                _ => tracing::warn!("{why}"),
            }
            view.store(Arc::new(GpuView { snapshot: None, status: Some(why.to_string()) }));
            Ok(None)
        }
    }
}

/// Why one poll gave no figures.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("scraping the model server failed: {0}")]
    Scrape(#[from] ScrapeError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl PollError {
    fn reason(&self) -> &'static str {
        match self {
            PollError::Scrape(e) => e.reason(),
            PollError::Read(ReadError::Malformed(_)) => "malformed",
            PollError::Read(_) => "no_load_metrics",
        }
    }
}

async fn poll_once(scraper: &Scraper, choice: ServerChoice) -> Result<Reading, PollError> {
    let page = scraper.fetch().await?;
    // Invalid UTF-8 (in a docstring, say) must not cost the whole page.
    let text = String::from_utf8_lossy(&page);
    Ok(servers::read_page(&text, choice)?)
}

async fn poll_loop(config: Config, shared: Arc<Shared>, gpu_view: Arc<ArcSwap<GpuView>>, stop: CancellationToken) {
    let scraper = Scraper::new(config.metrics_url.clone(), config.scrape_timeout);
    let mut ticker = tokio::time::interval(config.interval);
    // A slow scrape delays the next one rather than causing a burst to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = State::default();
    let mut streak = ErrorStreak::default();
    let mut kind: Option<ServerKind> = None;
    let decode_meter = || DecodeMeter::new(config.decode_window, decode_gap(config.interval));
    let mut decode = decode_meter();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = poll_once(&scraper, config.server) => r,
        };
        shared.metrics.observe_scrape(started.elapsed());
        match outcome {
            Ok(reading) => {
                streak.succeeded();
                if kind != Some(reading.kind) {
                    tracing::info!(server = %reading.kind, "reading {} load metrics", reading.kind);
                    kind = Some(reading.kind);
                    // Another server's counters say nothing about this one's speed.
                    decode = decode_meter();
                }
                shared.metrics.set_figures(&reading.figures);
                state.decode = decode.observe(started, &reading.decode, reading.figures.running);
                shared.metrics.set_decode(state.decode.as_ref());
                // The page shows the server as it was when asked, so the figures date from
                // the start of the scrape.
                state.last_good = Some(GoodReading {
                    kind: reading.kind,
                    figures: reading.figures,
                    at: started,
                    at_wall: started_wall,
                });
                state.last_error = None;
                if !shared.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!("first good scrape; ready");
                }
            }
            Err(e) => {
                shared.metrics.count_error(e.reason());
                streak.failed(&e);
                state.last_error = Some(e.to_string());
            }
        }
        // The GPU thread publishes a new view per reading; take it over when it changed.
        let gpu = gpu_view.load_full();
        if !Arc::ptr_eq(&gpu, &state.gpu) {
            if let Some(snap) = &gpu.snapshot {
                shared.metrics.set_gpu(snap);
            }
            state.gpu = gpu;
        }
        shared.publish(Rendered::render(&state, config.stale_after));
    }
}

/// How far apart two good scrapes may be before the decode history starts over: a few missed
/// scrapes are fine, an outage is not.
fn decode_gap(interval: Duration) -> Duration {
    interval.saturating_mul(4).max(Duration::from_secs(1))
}

/// Logs the first failure of a run of failures, a change of reason, and the recovery, so that
/// a model server that is down for minutes costs a few log lines rather than 100 a second.
#[derive(Debug, Default)]
struct ErrorStreak {
    failures: u64,
    reason: Option<&'static str>,
}

impl ErrorStreak {
    fn failed(&mut self, e: &PollError) {
        if self.failures == 0 {
            tracing::warn!(error = %e, "scrape failed; serving the last figures until they go stale");
        } else if self.reason != Some(e.reason()) {
            tracing::warn!(error = %e, "scrape still failing");
        }
        self.failures += 1;
        self.reason = Some(e.reason());
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failed_scrapes = self.failures, "scrapes succeed again");
        }
        self.failures = 0;
        self.reason = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_configs_that_cannot_work() {
        for (url, needle) in [("https://127.0.0.1/metrics", "http://"), ("/metrics", "http://")] {
            let config = Config { metrics_url: Uri::from_static(url), ..Config::default() };
            let err = Probe::bind(config).await.unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let config = Config { interval: Duration::ZERO, ..Config::default() };
        assert!(Probe::bind(config).await.unwrap_err().to_string().contains("--interval"));
    }
}
