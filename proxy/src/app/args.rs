//! The command line: flags, environment and subcommands, and how they combine with the config
//! file's `proxy:` section.

use super::start::Options;
use crate::config::{Process, Source};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vane_route::Table;

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
    /// Install the transparent-capture rules in this network namespace (iptables nat table),
    /// print them and exit; what the injected `vane-init` container runs.
    Init(super::init::InitArgs),
}

/// Resolves addresses and threads: flag/env, then file, then default.
pub fn options(args: &Args, table: &Table) -> (Options, usize) {
    let s = Process::of(table);
    let source = match &args.config {
        Some(p) => Source::File(p.clone()),
        None => Source::Embedded,
    };
    let opts = Options {
        source,
        outbound: args.outbound.or(s.outbound).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4140))),
        inbound: args.inbound.or(s.inbound).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 4143))),
        admin: args.admin.or(s.admin).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4191))),
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
