//! The active configuration: one immutable [`Snapshot`] behind an `ArcSwap`.
//!
//! A request calls [`Store::load`] once and uses that snapshot to the end, so a reload never
//! mixes two configs within one request. Reloads build and validate the whole new snapshot off
//! the request path and swap it in with one `store`; an invalid file is rejected, logged and
//! counted, and the last good snapshot stays.

use crate::endpoint::{Endpoint, Policy};
use crate::metrics::{Direction, Metrics, RouteStats};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use vane_route::config::Protocol;
use vane_route::discovery::{Applied, DiscoveryState, Message};
use vane_route::table::Settings;
use vane_route::{Config, ConfigError, Table};

/// Metric handles of one route: `(backend index, stats)` for each backend of its split.
pub type BackendStats = Vec<(usize, Arc<RouteStats>)>;

/// A backend with live endpoint state.
#[derive(Debug)]
pub struct BackendRuntime {
    /// Backend name.
    pub name: Arc<str>,
    /// Endpoints, in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How endpoints are chosen.
    pub policy: Policy,
    /// Round-robin position.
    pub rr: AtomicUsize,
}

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated routing table.
    pub table: Table,
    /// Runtime backends, index-aligned with `table.backends`.
    pub backends: Vec<BackendRuntime>,
    /// The inbound target.
    pub inbound: Option<BackendRuntime>,
    /// Increases with each applied config.
    pub version: u64,
    /// Metric handles: `[service][route]` → `(backend index, stats)` for each backend of the split.
    pub route_stats: Vec<Vec<BackendStats>>,
    /// Metric handles for the inbound target.
    pub inbound_stats: Arc<RouteStats>,
    /// Age of the reported load used at each balancing decision.
    pub load_age: prometheus_client::metrics::histogram::Histogram,
}

impl Snapshot {
    /// Builds a snapshot, reusing endpoint state and clients from `prev` where they still apply.
    pub fn build(table: Table, prev: Option<&Snapshot>, version: u64, metrics: &Metrics) -> Snapshot {
        let mut known: HashMap<(SocketAddr, Protocol), Arc<Endpoint>> = HashMap::new();
        if let Some(p) = prev {
            for b in p.backends.iter().chain(p.inbound.iter()) {
                for e in &b.endpoints {
                    known.insert((e.addr, e.protocol), Arc::clone(e));
                }
            }
        }
        let s = &table.settings;
        let mut endpoint = |addr: SocketAddr, proto: Protocol| {
            Arc::clone(
                known.entry((addr, proto)).or_insert_with(|| Arc::new(Endpoint::new(addr, proto, s.default_rtt))),
            )
        };
        let backends: Vec<BackendRuntime> = table
            .backends
            .iter()
            .map(|b| BackendRuntime {
                name: Arc::clone(&b.name),
                endpoints: b.endpoints.iter().map(|a| endpoint(*a, b.protocol)).collect(),
                policy: Policy { algorithm: b.algorithm, weights: b.cost },
                rr: AtomicUsize::new(0),
            })
            .collect();
        let inbound = table.inbound.as_ref().map(|ib| BackendRuntime {
            name: "inbound".into(),
            endpoints: vec![endpoint(ib.forward_to, ib.protocol)],
            policy: Policy { algorithm: s.algorithm, weights: s.cost },
            rr: AtomicUsize::new(0),
        });
        for (b, rt) in table.backends.iter().zip(backends.iter()) {
            if b.load_stream {
                let rt: &BackendRuntime = rt;
                rt.endpoints.iter().for_each(Endpoint::follow_load_stream);
            }
        }
        let route_stats = table
            .services
            .iter()
            .map(|svc| {
                svc.routes
                    .iter()
                    .map(|r| {
                        r.split
                            .entries()
                            .map(|(b, _)| {
                                (
                                    b,
                                    metrics.route_stats(
                                        Direction::Outbound,
                                        &svc.name,
                                        &r.name,
                                        &table.backends[b].name,
                                    ),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let inbound_name: Arc<str> = "inbound".into();
        let inbound_stats = metrics.route_stats(Direction::Inbound, &inbound_name, &"-".into(), &inbound_name);
        Snapshot { table, backends, inbound, version, route_stats, inbound_stats, load_age: metrics.load_age.clone() }
    }

    /// Metric handles for a routed request.
    pub fn stats(&self, service: usize, route: usize, backend: usize) -> Option<&Arc<RouteStats>> {
        self.route_stats.get(service)?.get(route)?.iter().find(|(b, _)| *b == backend).map(|(_, s)| s)
    }
}

/// Where the config comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A YAML file, watched for changes.
    File(PathBuf),
    /// The embedded default (`examples/demo.yaml`).
    Embedded,
}

/// The embedded default config.
pub const EMBEDDED: &str = include_str!("../../examples/demo.yaml");

impl Source {
    /// Reads the config text.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Source::File(p) => std::fs::read_to_string(p),
            Source::Embedded => Ok(EMBEDDED.to_string()),
        }
    }

    /// Reads and validates.
    pub fn load(&self) -> Result<Table, LoadError> {
        Ok(Table::from_config(self.read_config()?)?)
    }

    /// Reads and parses, without validating.
    pub fn read_config(&self) -> Result<Config, LoadError> {
        let text = self.read().map_err(|e| LoadError::Read(self.to_string(), e))?;
        Config::from_yaml(&text).map_err(|e| LoadError::Invalid(ConfigError::Parse(e)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => write!(f, "<embedded default>"),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// The config is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

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
}

#[derive(Debug)]
struct Inputs {
    /// The last good config from the file (or the embedded default).
    base: Config,
    /// What the control service sent and was applied, when one is configured.
    discovered: Option<DiscoveryState>,
}

use crate::lock;

impl Store {
    /// A store holding a first snapshot built from `table` (whose source config is the base).
    pub fn new(table: Table, metrics: Arc<Metrics>) -> Store {
        let base = table.source.clone();
        let first = Snapshot::build(table, None, 1, &metrics);
        Store {
            current: ArcSwap::from_pointee(first),
            versions: AtomicU64::new(1),
            metrics,
            inputs: Mutex::new(Inputs { base, discovered: None }),
            discovery_live: AtomicBool::new(true),
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

    /// The snapshot for one request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from a validated table and swaps it in whole.
    pub fn apply(&self, table: Table) -> u64 {
        let prev = self.current.load();
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Snapshot::build(table, Some(&prev), version, &self.metrics);
        warn_if_restart_needed(&prev.table.settings, &next.table.settings);
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
            let table = Table::from_config(merged)?;
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

fn warn_if_restart_needed(old: &Settings, new: &Settings) {
    if (old.outbound, old.inbound, old.admin, old.threads, old.max_header_bytes)
        != (new.outbound, new.inbound, new.admin, new.threads, new.max_header_bytes)
    {
        tracing::warn!("listener addresses, threads and max_header_bytes take effect at the next restart");
    }
}

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
