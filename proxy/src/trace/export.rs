//! Span export: finished spans go into a bounded queue (never waited on: a full queue drops the
//! span and counts it in `vane_trace_spans_dropped_total`), and one task sends them to the OTLP
//! collector in batches of at most `max_batch`, or whatever is there after `flush`.

use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Where spans go.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<SpanData>,
    dropped: Counter,
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
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// Longest wait for one export call (the collector's answer).
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    max_batch: usize,
    flush: std::time::Duration,
    counters: Counters,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // Wait for a first span, then give the batch `flush` to fill.
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + flush;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => {
                counters.exported.inc_by(n);
            }
            Err(e) => {
                counters.errors.inc();
                tracing::debug!("span export failed: {e}");
            }
        }
    }
    let _ = exporter.shutdown();
}
