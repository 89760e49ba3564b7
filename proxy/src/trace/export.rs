//! Span export: finished spans go into a bounded queue (never waited on: a full queue drops the
//! span and counts it in `vane_trace_spans_dropped_total`), and one task sends them to the OTLP
//! collector in batches of at most `max_batch`, or whatever is there after `flush`. At
//! shutdown, [`Exporter::flush`] sends what is queued before the process exits.

use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where spans go.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Msg>,
    dropped: Counter,
}

/// What goes to the export task: a span, or a request to send everything queued before it.
#[derive(Debug)]
enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {why}")]
pub struct ExportError {
    endpoint: String,
    why: String,
}

/// The export task's counters.
#[derive(Clone, Debug)]
pub struct Counters {
    /// Spans handed to the exporter.
    pub exported: Counter,
    /// Spans dropped at a full queue.
    pub dropped: Counter,
    /// Failed export calls.
    pub errors: Counter,
}

impl Exporter {
    /// Starts the export task (on the current tokio runtime) for `cfg`'s collector.
    pub fn start(cfg: &vane_route::table::Tracing, counters: Counters) -> Result<Exporter, ExportError> {
        use opentelemetry_otlp::WithExportConfig;
        let err = |why: String| ExportError { endpoint: cfg.otlp.clone(), why };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder_empty().with_service_name(cfg.service_name.clone()).build();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(cfg.max_queue);
        tokio::spawn(run(exporter, rx, cfg.max_batch, cfg.flush, counters.clone()));
        Ok(Exporter { tx, dropped: counters.dropped })
    }

    /// Queues a finished span, or drops it if the queue is full.
    pub fn send(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    /// Sends every span queued so far, waiting at most `within` (for room in a full queue, and
    /// for the collector). Returns whether they were all handed over in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let flushed = async { self.tx.send(Msg::Flush(done)).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(within, flushed).await.unwrap_or(false)
    }
}

/// Longest wait for one export call (the collector's answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    flush: Duration,
    counters: Counters,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // Wait for a first span, then give the batch `flush` to fill.
        let flushed = match rx.recv().await {
            None => break,
            Some(Msg::Flush(done)) => Some(done),
            Some(Msg::Span(first)) => {
                batch.push(*first);
                let deadline = tokio::time::Instant::now() + flush;
                let mut flushed = None;
                while batch.len() < max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(Msg::Span(s))) => batch.push(*s),
                        Ok(Some(Msg::Flush(done))) => {
                            flushed = Some(done);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                flushed
            }
        };
        if !batch.is_empty() {
            send(&exporter, &mut batch, &counters).await;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
    let _ = exporter.shutdown();
}

/// Exports `batch` (emptying it) and counts the outcome.
async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>, counters: &Counters) {
    let n = batch.len() as u64;
    match exporter.export(std::mem::take(batch)).await {
        Ok(()) => {
            counters.exported.inc_by(n);
        }
        Err(e) => {
            counters.errors.inc();
            tracing::debug!("span export failed: {e}");
        }
    }
}
