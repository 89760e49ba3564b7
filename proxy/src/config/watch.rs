//! Watching the config file: reloaded when it changes and on SIGHUP.

use super::source::Source;
use super::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Watches a config file: reloads when its modification time or size changes, and on SIGHUP.
///
/// Made before the listeners bind, so that the file's state it compares against and the SIGHUP
/// handler both exist before the proxy can report ready: a change or a signal that comes after
/// `/ready` says 200 is never lost, and a SIGHUP never falls to the default action (exit).
#[derive(Debug)]
pub struct Watcher {
    source: Source,
    seen: Option<(SystemTime, u64)>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Watcher {
    /// Records the file's state and installs the SIGHUP handler; needs a running tokio runtime.
    pub fn new(source: Source) -> Watcher {
        let seen = match &source {
            Source::File(p) => stamp(p),
            Source::Embedded => None,
        };
        #[cfg(unix)]
        let hup = match &source {
            Source::File(_) => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            Source::Embedded => None,
        };
        Watcher {
            source,
            seen,
            #[cfg(unix)]
            hup,
        }
    }

    /// Checks every `interval` (the first check one interval from now) and on each SIGHUP.
    pub async fn run(mut self, store: Arc<Store>, interval: Duration) {
        let Source::File(path) = self.source.clone() else { return };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_fired = async {
                match self.hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fired = std::future::pending::<Option<()>>();
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = hup_fired => true,
            };
            let now = stamp(&path);
            if forced || now != self.seen {
                self.seen = now;
                let _ = store.reload(&self.source);
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}
