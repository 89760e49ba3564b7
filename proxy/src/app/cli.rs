//! The command line.
//!
//! Addresses and threads come from flags, then environment (`VANE_*`), then the config file,
//! then the defaults (outbound `127.0.0.1:4140`, inbound `0.0.0.0:4143`, admin `127.0.0.1:4191`,
//! one thread). Exit codes: 0 after a clean drain, 1 on a runtime failure, 64 on bad usage,
//! 78 when the config is invalid, 130 when a second signal cuts the drain short.

use super::args::{Args, Command, options};
use super::signals::serve_until_signal;
use super::start::start;
use crate::config::Source;
use clap::Parser;

/// Exit code for an invalid config (sysexits EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// Exit code for flags or environment that cannot be used together (sysexits EX_USAGE).
pub const EX_USAGE: i32 = 64;

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
        Some(Command::Init(init)) => super::init::run(init),
        Some(Command::Demo { requests, exit }) => {
            let Ok(rt) = runtime(2) else { return 1 };
            match rt.block_on(super::demo::run(&args, *requests, *exit)) {
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
            let table = match load(&args, &source) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vane-proxy: {source}: {e}");
                    return EX_CONFIG;
                }
            };
            let (opts, threads) = match options(&args, &table) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("vane-proxy: {e}");
                    return EX_USAGE;
                }
            };
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

/// The table to start with: the file's; without a file, the embedded default with the inbound
/// section the environment gives. With a file, the file's own `inbound:` is used (a reload reads
/// the file alone, so a setting from the environment would not survive it).
fn load(args: &Args, source: &Source) -> Result<vane_route::Table, crate::config::LoadError> {
    match source {
        Source::Embedded => {
            let config = super::args::with_inbound_overrides(args, source.read_config()?);
            Ok(crate::config::compile(config)?)
        }
        Source::File(_) => {
            if args.inbound_forward_to.is_some() || args.load_from.is_some() {
                tracing::warn!(
                    "VANE_INBOUND_FORWARD_TO / VANE_LOAD_FROM are ignored with a config file: its inbound section is used"
                );
            }
            source.load()
        }
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
