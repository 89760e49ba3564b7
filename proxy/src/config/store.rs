//! The one place the active snapshot lives, and how it is replaced.

use super::process::Process;
use super::snapshot::Snapshot;
use super::source::{LoadError, Source};
use crate::lock;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use vane_route::discovery::{Applied, DiscoveryState, Message};
use vane_route::{Config, ConfigError, Table};

/// Why a message from the control service was not applied.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryUpdateError {
    /// The message does not fit the stream (e.g. an update before the snapshot).
    #[error(transparent)]
    Protocol(#[from] vane_route::discovery::DiscoveryError),
    /// The resulting config is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The one place the active snapshot lives.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    versions: AtomicU64,
    metrics: Arc<Metrics>,
    /// What the active config is built from. Held across build-and-swap, so that a file reload
    /// and a control service update never build from each other's stale inputs.
    inputs: Mutex<Inputs>,
    /// Set once a control service's snapshot is live (or when none is used).
    discovery_live: AtomicBool,
    /// This proxy's identity: meshed endpoints of every snapshot are called with it.
    identity: Arc<crate::identity::Identity>,
}

#[derive(Debug)]
struct Inputs {
    /// The last good config from the file (or the embedded default).
    base: Config,
    /// What the control service sent and was applied, when one is configured.
    discovered: Option<DiscoveryState>,
}

impl Store {
    /// A store holding a first snapshot built from `table` (whose source config is the base).
    pub fn new(table: Table, metrics: Arc<Metrics>) -> Store {
        Store::with_identity(table, metrics, crate::identity::Identity::disabled())
    }

    /// A store whose meshed endpoints are called with `identity`.
    pub fn with_identity(table: Table, metrics: Arc<Metrics>, identity: Arc<crate::identity::Identity>) -> Store {
        let base = table.source.clone();
        let first = Snapshot::build(table, None, 1, &metrics, &identity);
        Store {
            current: ArcSwap::from_pointee(first),
            versions: AtomicU64::new(1),
            metrics,
            inputs: Mutex::new(Inputs { base, discovered: None }),
            discovery_live: AtomicBool::new(true),
            identity,
        }
    }

    /// Applies one message of the control service's stream. A message whose result does not
    /// validate is refused (and counted); the last good config, and the state it came from, stay.
    pub fn apply_discovery(&self, msg: Message) -> Result<Option<u64>, DiscoveryUpdateError> {
        let mut inputs = lock(&self.inputs);
        let mut next = inputs.discovered.clone().unwrap_or_default();
        if next.apply(msg)? == Applied::Unchanged {
            inputs.discovered = Some(next);
            return Ok(None);
        }
        match Table::from_config(next.to_config(&inputs.base)) {
            Ok(table) => {
                let v = self.apply(table);
                let synced = next.is_synced();
                inputs.discovered = Some(next);
                // Only now, with the routes swapped in, may `/ready` say so.
                if synced {
                    self.discovery_live.store(true, Ordering::Release);
                }
                self.metrics.config_reload_from("control", true, v);
                Ok(Some(v))
            }
            Err(e) => {
                self.metrics.config_reload_from("control", false, self.current.load().version);
                tracing::error!("routing update from the control service rejected, keeping the last good config: {e}");
                Err(e.into())
            }
        }
    }

    /// Whether the control service's first snapshot is live (always true without one).
    pub fn discovery_synced(&self) -> bool {
        self.discovery_live.load(Ordering::Acquire)
    }

    /// Marks that a control service is used: `/ready` waits until its first snapshot is live.
    pub fn expect_discovery(&self) {
        let mut inputs = lock(&self.inputs);
        if inputs.discovered.is_none() {
            inputs.discovered = Some(DiscoveryState::default());
            self.discovery_live.store(false, Ordering::Release);
        }
    }

    /// This proxy's identity.
    pub fn identity(&self) -> &Arc<crate::identity::Identity> {
        &self.identity
    }

    /// The snapshot for one request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from a validated table and swaps it in whole.
    pub fn apply(&self, table: Table) -> u64 {
        let prev = self.current.load();
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Snapshot::build(table, Some(&prev), version, &self.metrics, &self.identity);
        warn_if_restart_needed(&prev.table, &next.table);
        self.current.store(Arc::new(next));
        version
    }

    /// Reloads from `source`: applies a valid config, keeps the current one otherwise.
    pub fn reload(&self, source: &Source) -> Result<u64, LoadError> {
        let metrics = &self.metrics;
        let mut inputs = lock(&self.inputs);
        let loaded = source.read_config().and_then(|base| {
            let merged = match &inputs.discovered {
                Some(d) => d.to_config(&base),
                None => base.clone(),
            };
            // The process settings come from the file alone: checked here, with the routing table.
            let table = super::process::compile(merged)?;
            Ok((base, table))
        });
        match loaded {
            Ok((base, table)) => {
                let v = self.apply(table);
                inputs.base = base;
                metrics.config_reload_from("file", true, v);
                tracing::info!(%source, version = v, "config reloaded");
                Ok(v)
            }
            Err(e) => {
                metrics.config_reload_from("file", false, self.current.load().version);
                tracing::error!(%source, "config rejected, keeping the last good one: {e}");
                Err(e)
            }
        }
    }
}

fn warn_if_restart_needed(old: &Table, new: &Table) {
    let (po, pn) = (Process::of(old), Process::of(new));
    if (po.outbound, po.inbound, po.admin, po.threads, old.settings.max_header_bytes)
        != (pn.outbound, pn.inbound, pn.admin, pn.threads, new.settings.max_header_bytes)
    {
        tracing::warn!("listener addresses, threads and max_header_bytes take effect at the next restart");
    }
}

impl crate::load::LoadConfig for Store {
    fn probe(&self) -> Option<(SocketAddr, String)> {
        self.load().table.inbound.as_ref().and_then(|ib| ib.load_from.clone())
    }

    fn names_probe(&self, addr: SocketAddr, path: &str) -> bool {
        let snap = self.load();
        snap.table.inbound.as_ref().and_then(|ib| ib.load_from.as_ref()).is_some_and(|(a, p)| *a == addr && p == path)
    }

    fn probe_interval(&self) -> Duration {
        let snap = self.load();
        snap.table.inbound.as_ref().map_or(Duration::from_secs(1), |ib| ib.load_interval)
    }

    fn staleness(&self) -> Duration {
        self.load().table.settings.load_staleness
    }
}
