//! The pod's latest load figures, and the stream of them that callers subscribe to.

use crate::body::RespBody;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use vane_route::orca::{self, LoadReport};

/// The path on the inbound listener where callers subscribe to the pod's load.
pub const LOAD_STREAM_PATH: &str = "/.vane/load-stream";

/// The latest figures and when they were read (process clock, nanoseconds).
#[derive(Debug)]
pub struct LocalLoad {
    current: ArcSwapOption<(LoadReport, u64)>,
    /// Bumped on every new reading, for the load streams.
    updates: tokio::sync::watch::Sender<u64>,
}

impl Default for LocalLoad {
    fn default() -> Self {
        LocalLoad { current: ArcSwapOption::empty(), updates: tokio::sync::watch::channel(0).0 }
    }
}

impl LocalLoad {
    /// The figures, if fresher than `max_age`, with their age filled in.
    pub fn get(&self, max_age: Duration) -> Option<LoadReport> {
        let cur = self.current.load();
        let (report, read_at) = cur.as_deref()?;
        let age = crate::now_ns().saturating_sub(*read_at);
        (age <= max_age.as_nanos() as u64).then(|| LoadReport { age: Some(Duration::from_nanos(age)), ..*report })
    }

    /// Stores new figures that were already `age` old.
    pub fn set(&self, report: Option<LoadReport>, age: Duration) {
        let read_at = crate::now_ns().saturating_sub(age.as_nanos() as u64);
        let had = self.current.load().is_some();
        let has = report.is_some();
        self.current.store(report.map(|r| Arc::new((r, read_at))));
        if has || had {
            self.updates.send_modify(|n| *n += 1);
        }
    }

    /// A stream of ORCA TEXT lines, one per new reading, while the receiver is read.
    pub fn stream(self: &Arc<Self>, staleness: Duration) -> RespBody {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
        let mut updates = self.updates.subscribe();
        let load = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Some(r) = load.get(staleness) {
                    let mut line = orca::format(&r);
                    line.push('\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        RespBody::Channel(rx)
    }
}

/// Lines buffered per load-stream subscriber; a slow reader skips readings rather than queueing.
const STREAM_BUFFER: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_figures_are_not_attached() {
        let l = LocalLoad::default();
        assert!(l.get(Duration::from_secs(1)).is_none());
        let r = LoadReport { queue_depth: Some(2.0), ..Default::default() };
        l.set(Some(r), Duration::from_millis(5));
        let got = l.get(Duration::from_secs(1)).unwrap();
        assert_eq!(got.queue_depth, Some(2.0));
        assert!(got.age.unwrap() >= Duration::from_millis(5));
        l.set(Some(r), Duration::from_secs(5));
        assert!(l.get(Duration::from_secs(1)).is_none());
    }
}
