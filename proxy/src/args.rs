//! Command line, startup and shutdown.
//!
//! Addresses and threads come from flags, then environment (`VANE_*`), then the config file,
//! then the defaults (outbound `127.0.0.1:4140`, inbound `0.0.0.0:4143`, admin `127.0.0.1:4191`,
//! one thread). Exit codes: 0 after a clean drain, 1 on a runtime failure, 64 on bad usage,
//! 78 when the config is invalid, 130 when a second signal cuts the drain short.

use crate::admin::Admin;
use crate::config::{Source, Store};
use crate::metrics::Metrics;
use crate::server::{ConnSettings, serve};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use vane_route::Table;

/// Exit code for an invalid config (sysexits EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// `vane-proxy`: Vane's sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "vane-proxy", version, about, long_about = None)]
pub struct Args {
    /// What to do; without a command the proxy runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (YAML); without it the embedded default (examples/demo.yaml) is used.
    #[arg(long, short, env = "VANE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Outbound listener address.
    #[arg(long, env = "VANE_OUTBOUND", global = true)]
    pub outbound: Option<SocketAddr>,
    /// Inbound listener address.
    #[arg(long, env = "VANE_INBOUND", global = true)]
    pub inbound: Option<SocketAddr>,
    /// Admin listener address.
    #[arg(long, env = "VANE_ADMIN", global = true)]
    pub admin: Option<SocketAddr>,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, env = "VANE_THREADS", global = true)]
    pub threads: Option<usize>,
    /// How often the config file is checked for changes (it is also reloaded on SIGHUP).
    #[arg(long, env = "VANE_RELOAD_INTERVAL", default_value = "1s", value_parser = vane_route::duration::parse, global = true)]
    pub reload_interval: Duration,
    /// The control service's discovery address (`ip:port`, h2c); without it the config file alone
    /// says what to route.
    #[arg(long, env = "VANE_CONTROL", global = true)]
    pub control: Option<SocketAddr>,
    /// Services to take from the control service: `*` or a comma-separated list of names.
    #[arg(long, env = "VANE_CONTROL_SERVICES", default_value = "*", global = true)]
    pub control_services: String,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `vane_proxy=debug`.
    #[arg(long, env = "VANE_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file without serving; exits non-zero on error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Start three demo model servers and the proxy in front of them (embedded default config),
    /// send a burst of requests to show the canary split, then keep serving until Ctrl-C.
    Demo {
        /// Requests in the burst.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Exit after the burst instead of serving on.
        #[arg(long)]
        exit: bool,
    },
}

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
    pub control: Option<crate::control::ControlOptions>,
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
    admin_state: Arc<Admin>,
    stop: watch::Sender<bool>,
    admin_stop: watch::Sender<bool>,
    alive: mpsc::Receiver<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the listeners and starts serving `table`.
pub async fn start(opts: Options, table: Table) -> anyhow::Result<Running> {
    let conn =
        ConnSettings { max_header_bytes: table.settings.max_header_bytes, idle_timeout: table.settings.idle_timeout };
    let watcher = crate::config::Watcher::new(opts.source.clone());
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(table, Arc::clone(&metrics)));
    let control_status = opts.control.as_ref().map(|_| Arc::new(crate::control::ControlStatus::default()));
    let admin_state = Arc::new(Admin {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        draining: false.into(),
        control: control_status.clone(),
    });
    let bind = |addr: SocketAddr, what: &'static str| async move {
        crate::server::listen(addr).with_context(|| format!("cannot listen on {addr} ({what})"))
    };
    let out_l = bind(opts.outbound, "outbound").await?;
    let in_l = bind(opts.inbound, "inbound").await?;
    let admin_l = bind(opts.admin, "admin").await?;
    let (outbound, inbound, admin) = (out_l.local_addr()?, in_l.local_addr()?, admin_l.local_addr()?);
    let (stop, stop_rx) = watch::channel(false);
    let (alive_tx, alive) = mpsc::channel(1);
    let mut tasks = Vec::new();
    let out_svc = crate::stack::outbound(Arc::clone(&store), Arc::clone(&metrics));
    tasks.push(tokio::spawn(serve(out_l, out_svc, conn, stop_rx.clone(), alive_tx.clone())));
    let local_load = Arc::new(crate::load::LocalLoad::default());
    tasks.push(tokio::spawn(crate::load::poll(Arc::clone(&store), Arc::clone(&local_load))));
    let in_svc = crate::stack::inbound(Arc::clone(&store), Arc::clone(&metrics), local_load);
    tasks.push(tokio::spawn(serve(in_l, in_svc, conn, stop_rx, alive_tx)));
    // The admin listener is not drained: it keeps answering (`/ready` with 503) until exit.
    let (admin_stop, admin_rx) = watch::channel(false);
    let (admin_alive, _) = mpsc::channel(1);
    tasks.push(tokio::spawn(serve(admin_l, admin_state.service(), conn, admin_rx, admin_alive)));
    if let (Some(c), Some(st)) = (opts.control.clone(), control_status) {
        store.expect_discovery();
        tasks.push(tokio::spawn(crate::control::run(Arc::clone(&store), Arc::clone(&metrics), c, st)));
    }
    let reload = tokio::spawn(watcher.run(Arc::clone(&store), opts.reload_interval));
    tracing::info!(%outbound, %inbound, %admin, source = %opts.source, "vane-proxy serving");
    let mut running = Running { outbound, inbound, admin, store, metrics, admin_state, stop, admin_stop, alive, tasks };
    running.tasks.push(reload);
    Ok(running)
}

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `grace`, then returns.
    /// Returns whether every connection finished in time.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.admin_state.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        // recv() gives None once the accept loops and every connection have dropped their sender.
        let done = tokio::time::timeout(grace, self.alive.recv()).await.is_ok();
        let _ = self.admin_stop.send(true);
        for t in self.tasks {
            t.abort();
        }
        done
    }

    /// The drain grace period of the active config.
    pub fn drain_grace(&self) -> Duration {
        self.store.load().table.settings.drain_grace
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Resolves addresses and threads: flag/env, then file, then default.
pub fn options(args: &Args, table: &Table) -> (Options, usize) {
    let s = &table.settings;
    let def = |a: &str| a.parse::<SocketAddr>().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let source = match &args.config {
        Some(p) => Source::File(p.clone()),
        None => Source::Embedded,
    };
    let opts = Options {
        source,
        outbound: args.outbound.or(s.outbound).unwrap_or_else(|| def("127.0.0.1:4140")),
        inbound: args.inbound.or(s.inbound).unwrap_or_else(|| def("0.0.0.0:4143")),
        admin: args.admin.or(s.admin).unwrap_or_else(|| def("127.0.0.1:4191")),
        reload_interval: args.reload_interval.max(Duration::from_millis(10)),
        control: args.control.map(|addr| crate::control::ControlOptions {
            addr,
            subscription: vane_route::discovery::Subscription::from_query(Some(&format!(
                "services={}",
                args.control_services
            )))
            .unwrap_or(vane_route::discovery::Subscription::All),
        }),
    };
    (opts, args.threads.or(s.threads).unwrap_or(1).clamp(1, 64))
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

/// Entry point of the binary; returns the exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    init_logging(&args.log);
    match &args.command {
        Some(Command::CheckConfig { file }) => check_config(file),
        Some(Command::Demo { requests, exit }) => {
            let Ok(rt) = runtime(2) else { return 1 };
            match rt.block_on(crate::demo::run(&args, *requests, *exit)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("vane-proxy demo: {e:#}");
                    1
                }
            }
        }
        None => {
            let source = match &args.config {
                Some(p) => Source::File(p.clone()),
                None => Source::Embedded,
            };
            let table = match source.load() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vane-proxy: {source}: {e}");
                    return EX_CONFIG;
                }
            };
            let (opts, threads) = options(&args, &table);
            let rt = match runtime(threads) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vane-proxy: cannot start the runtime: {e}");
                    return 1;
                }
            };
            rt.block_on(async {
                match start(opts, table).await {
                    Ok(running) => serve_until_signal(running).await,
                    Err(e) => {
                        eprintln!("vane-proxy: {e:#}");
                        1
                    }
                }
            })
        }
    }
}

/// Serves until SIGTERM or SIGINT, then drains; a second signal exits at once.
pub async fn serve_until_signal(running: Running) -> i32 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vane-proxy: cannot install signal handlers: {e}");
            return 1;
        }
    };
    signals.next().await;
    let grace = running.drain_grace();
    tracing::info!("shutting down: draining in-flight requests for up to {grace:?} (signal again to exit at once)");
    tokio::select! {
        clean = running.drain(grace) => {
            if clean { tracing::info!("drained"); } else { tracing::warn!("drain grace period over; exiting"); }
            0
        }
        _ = signals.next() => {
            tracing::warn!("second signal: exiting now");
            130
        }
    }
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(file: &std::path::Path) -> i32 {
    match Source::File(file.to_path_buf()).load() {
        Ok(t) => {
            let routes: usize = t.services.iter().map(|s| s.routes.len()).sum();
            let endpoints: usize = t.backends.iter().map(|b| b.endpoints.len()).sum();
            println!(
                "{}: OK ({} services, {} routes, {} backends, {} endpoints)",
                file.display(),
                t.services.len(),
                routes,
                t.backends.len(),
                endpoints
            );
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            EX_CONFIG
        }
    }
}
