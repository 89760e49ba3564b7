//! Startup and drain: binding the listeners, starting the background tasks (config watcher,
//! load probe, control service), and shutting down gracefully.

use crate::admin::AdminState;
use crate::config::{Source, Store};
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::server::{ConnSettings, Side, Transparent, serve};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vane_route::Table;
use vane_runtime::serve::HttpOptions;
use vane_runtime::{CancellationToken, TaskTracker};

/// Everything `start` needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the config comes from (and is reloaded from).
    pub source: Source,
    /// Outbound listener.
    pub outbound: SocketAddr,
    /// Inbound listener.
    pub inbound: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Config file poll interval.
    pub reload_interval: Duration,
    /// The control service, when one is used.
    pub control: Option<ControlTarget>,
    /// Transparent mode: connections the capture rules redirect to the listeners are served by
    /// their original destination.
    pub transparent: bool,
    /// Where this proxy's certificate comes from (`None`: no identity, plaintext): the
    /// environment's identity-service mode, else the file's `proxy.identity`
    /// ([`super::args::options`] resolves it). Read at start.
    pub identity: Option<vane_route::config::IdentityConfig>,
}

/// The control service as the command line names it.
#[derive(Clone, Debug)]
pub struct ControlTarget {
    /// `host:port` or `ip:port`.
    pub addr: String,
    /// The services this proxy routes to.
    pub subscription: vane_route::discovery::Subscription,
}

/// Resolves `addr` (a name or an address), trying again with backoff until it resolves: at a
/// pod's start the cluster's DNS may not answer yet.
async fn resolve(addr: &str) -> SocketAddr {
    let mut retry = vane_runtime::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).start();
    loop {
        match tokio::net::lookup_host(addr).await.map(|mut a| a.next()) {
            Ok(Some(a)) => return a,
            Ok(None) => tracing::warn!(control = addr, "the control service's name has no address; retrying"),
            Err(e) => tracing::warn!(control = addr, "cannot resolve the control service: {e}; retrying"),
        }
        tokio::time::sleep(retry.next_delay()).await;
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    /// Bound outbound address.
    pub outbound: SocketAddr,
    /// Bound inbound address.
    pub inbound: SocketAddr,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// The config store.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// This proxy's workload identity (disabled without `proxy.identity`).
    pub identity: Arc<Identity>,
    admin_state: Arc<AdminState>,
    stop: CancellationToken,
    admin_stop: CancellationToken,
    connections: TaskTracker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    observer: Arc<crate::trace::Observer>,
}

/// Binds the listeners and starts serving `table`.
pub async fn start(opts: Options, table: Table) -> anyhow::Result<Running> {
    let conn = ConnSettings::from_settings(&table.settings);
    let watcher = crate::config::Watcher::new(opts.source.clone());
    let metrics = Arc::new(Metrics::new());
    // Before any listener: files that cannot be used fail the start here.
    let started = crate::identity::source::start(opts.identity.as_ref(), &metrics)?;
    let identity = started.identity;
    let store = Arc::new(Store::with_identity(table, Arc::clone(&metrics), Arc::clone(&identity)));
    let control_status = opts.control.as_ref().map(|_| Arc::new(crate::control::ControlStatus::default()));
    let admin_state = Arc::new(AdminState {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        draining: false.into(),
        control: control_status.clone(),
        identity: Arc::clone(&identity),
    });
    let bind = |addr: SocketAddr, what: &'static str| {
        vane_runtime::serve::bind(addr).with_context(|| format!("cannot listen on {addr} ({what})"))
    };
    let out_l = bind(opts.outbound, "outbound")?;
    let in_l = bind(opts.inbound, "inbound")?;
    let admin_l = bind(opts.admin, "admin")?;
    let (outbound, inbound, admin) = (out_l.local_addr()?, in_l.local_addr()?, admin_l.local_addr()?);
    let (stop, connections) = (CancellationToken::new(), TaskTracker::new());
    let mut tasks: Vec<_> = started.task.into_iter().collect();
    let transparent = |side: Side, tcp: &'static str| match opts.transparent {
        false => Transparent::Off,
        true => Transparent::On {
            side,
            destinations: Arc::new(super::destinations::StoreDestinations(Arc::clone(&store))),
            tcp: metrics.listener(tcp),
        },
    };
    let observer = Arc::new(crate::trace::Observer::start(&store.load().table.observe, Arc::clone(&metrics)).await?);
    let out_svc = crate::stack::outbound(Arc::clone(&store), Arc::clone(&metrics), Arc::clone(&observer));
    let stats = metrics.listener("outbound");
    let mode = transparent(Side::Outbound, "outbound-tcp");
    tasks.push(tokio::spawn(serve(out_l, out_svc, conn, stats, mode, None, stop.clone(), connections.clone())));
    let local_load = Arc::new(crate::load::LocalLoad::default());
    tasks.push(tokio::spawn(crate::load::probe::poll(Arc::clone(&store), Arc::clone(&local_load))));
    let in_svc = crate::stack::inbound(Arc::clone(&store), Arc::clone(&metrics), local_load, Arc::clone(&observer));
    let stats = metrics.listener("inbound");
    let mode = transparent(Side::Inbound, "inbound-tcp");
    let tls = identity.enabled().then(|| Arc::clone(&identity));
    tasks.push(tokio::spawn(serve(in_l, in_svc, conn, stats, mode, tls, stop.clone(), connections.clone())));
    // The admin listener is not drained: it keeps answering (`/ready` with 503) until exit.
    let admin_stop = CancellationToken::new();
    let admin_server =
        vane_runtime::admin::serve(admin_l, admin_state.admin(), HttpOptions::default(), admin_stop.clone());
    tasks.push(tokio::spawn(async move {
        admin_server.await;
    }));
    if let (Some(c), Some(st)) = (opts.control.clone(), control_status) {
        store.expect_discovery();
        let (store, metrics) = (Arc::clone(&store), Arc::clone(&metrics));
        let tls =
            started.control_server.map(|server| crate::control::ControlTls { identity: Arc::clone(&identity), server });
        tasks.push(tokio::spawn(async move {
            let (addr, subscription) = (resolve(&c.addr).await, c.subscription);
            let opts = crate::control::ControlOptions { addr, subscription, tls };
            crate::control::run(store, metrics, opts, st).await
        }));
    }
    let reload = tokio::spawn(watcher.run(Arc::clone(&store), opts.reload_interval));
    tracing::info!(%outbound, %inbound, %admin, source = %opts.source, transparent = opts.transparent, "vane-proxy serving");
    let mut running = Running {
        outbound,
        inbound,
        admin,
        store,
        metrics,
        identity,
        admin_state,
        stop,
        admin_stop,
        connections,
        tasks,
        observer,
    };
    running.tasks.push(reload);
    Ok(running)
}

/// The longest a drain waits for the last spans to reach the collector.
const SPAN_FLUSH: Duration = Duration::from_secs(3);

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `grace`, then returns.
    /// Returns whether every connection finished in time.
    pub async fn drain(self, grace: Duration) -> bool {
        self.admin_state.draining.store(true, Ordering::Relaxed);
        self.stop.cancel();
        self.connections.close();
        let done = tokio::time::timeout(grace, self.connections.wait()).await.is_ok();
        // The last requests' spans go before the exporter is stopped with the other tasks.
        if !self.observer.flush(SPAN_FLUSH).await {
            tracing::warn!("spans still queued at exit were not all sent within {SPAN_FLUSH:?}");
        }
        self.admin_stop.cancel();
        for t in self.tasks {
            t.abort();
        }
        done
    }

    /// The drain grace period of the active config.
    pub fn drain_grace(&self) -> Duration {
        crate::config::Process::of(&self.store.load().table).drain_grace
    }
}
