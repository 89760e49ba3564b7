//! The access log: one JSON line per sampled request, to stderr or a file, written by a task of
//! its own from a bounded queue (a full queue drops the line and counts it in
//! `vane_access_log_dropped_total`; requests never wait on the disk).

use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use vane_route::table::LogTarget;

/// Lines waiting to be written: enough for a burst of a few thousand requests a second while
/// the disk stalls for a moment, a few hundred KB at most.
const QUEUE: usize = 4096;

/// The writer's handle.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Opens the target and starts the writer (on the current tokio runtime).
    pub async fn start(to: &LogTarget, dropped: Counter) -> std::io::Result<AccessLog> {
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match to {
            LogTarget::Stderr => Box::new(tokio::io::stderr()),
            LogTarget::File(path) => {
                Box::new(tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?)
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(out, rx, dropped.clone()));
        Ok(AccessLog { tx, dropped })
    }

    /// Queues a line (without its newline).
    pub fn line(&self, mut line: String) {
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

async fn write(
    mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut rx: mpsc::Receiver<String>,
    dropped: Counter,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(line) = rx.recv().await {
        buf.extend_from_slice(line.as_bytes());
        // Whatever else is already queued goes in the same write.
        while buf.len() < 64 << 10 {
            match rx.try_recv() {
                Ok(l) => buf.extend_from_slice(l.as_bytes()),
                Err(_) => break,
            }
        }
        if out.write_all(&buf).await.is_err() || out.flush().await.is_err() {
            dropped.inc();
        }
        buf.clear();
    }
}
