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
    /// The control service's address (`host:port` or `ip:port`; a name is resolved at start,
    /// again until it resolves): its discovery stream, and with VANE_IDENTITY_ROOTS and
    /// VANE_IDENTITY_TOKEN its identity service, on the same port. The stream is h2c without an
    /// identity, TLS 1.3 with this proxy's certificate with one. Without it the config file
    /// alone says what to route.
    #[arg(long, env = "VANE_CONTROL", value_parser = host_port, global = true)]
    pub control: Option<String>,
    /// Services to take from the control service: `*` or a comma-separated list of names.
    #[arg(long, env = "VANE_CONTROL_SERVICES", default_value = "*", global = true)]
    pub control_services: String,
    /// Transparent mode: a connection the capture rules (`vane-proxy init`) redirect to a
    /// listener is served by its original destination (a known service as HTTP, anything else
    /// as opaque TCP); `VANE_TRANSPARENT=1`.
    #[arg(long, env = "VANE_TRANSPARENT", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false", global = true)]
    pub transparent: bool,
    /// Without a config file: the local model server inbound requests go to (`inbound.forward_to`).
    #[arg(long, env = "VANE_INBOUND_FORWARD_TO", global = true)]
    pub inbound_forward_to: Option<SocketAddr>,
    /// Without a config file: the load probe's `/load` URL (`inbound.load_from`).
    #[arg(long, env = "VANE_LOAD_FROM", global = true)]
    pub load_from: Option<String>,
    /// Identity-service mode, set by the injector: when this, VANE_IDENTITY_TOKEN and
    /// VANE_CONTROL are set, the proxy makes a key in memory and asks the control service for a
    /// certificate of `spiffe://<VANE_IDENTITY_TRUST_DOMAIN>/ns/<VANE_POD_NAMESPACE>/sa/<VANE_SERVICE_ACCOUNT>`,
    /// renewed before expiry (this overrides a config file's `proxy.identity`). This file holds
    /// the PEM trust anchors: the control service's chain and every meshed peer's lead to one.
    #[arg(long, env = "VANE_IDENTITY_ROOTS", global = true)]
    pub identity_roots: Option<String>,
    /// Identity-service mode: the projected ServiceAccount token file (audience
    /// `vane-identity`) that proves this pod's identity; read again for each request.
    #[arg(long, env = "VANE_IDENTITY_TOKEN", global = true)]
    pub identity_token: Option<String>,
    /// Identity-service mode: this pod's namespace.
    #[arg(long, env = "VANE_POD_NAMESPACE", global = true)]
    pub pod_namespace: Option<String>,
    /// Identity-service mode: this pod's ServiceAccount.
    #[arg(long, env = "VANE_SERVICE_ACCOUNT", global = true)]
    pub service_account: Option<String>,
    /// Identity-service mode: the trust domain of SPIFFE IDs.
    #[arg(long, env = "VANE_IDENTITY_TRUST_DOMAIN", default_value = "cluster.local", global = true)]
    pub identity_trust_domain: String,
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

/// Resolves addresses, threads and the identity: flag/env, then file, then default.
pub fn options(args: &Args, table: &Table) -> Result<(Options, usize), super::identity_args::IdentityArgsError> {
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
        control: args.control.clone().map(|addr| super::start::ControlTarget {
            addr,
            subscription: vane_route::discovery::Subscription::from_query(Some(&format!(
                "services={}",
                args.control_services
            )))
            .unwrap_or(vane_route::discovery::Subscription::All),
        }),
        transparent: args.transparent,
        identity: super::identity_args::identity(&args.identity_env(), table.source.proxy.identity.as_ref())?,
    };
    Ok((opts, args.threads.or(s.threads).unwrap_or(1).clamp(1, 64)))
}

impl Args {
    /// What the flags and environment say about the identity.
    pub fn identity_env(&self) -> super::identity_args::IdentityEnv {
        super::identity_args::IdentityEnv {
            identity_roots: self.identity_roots.clone(),
            identity_token: self.identity_token.clone(),
            control: self.control.clone(),
            pod_namespace: self.pod_namespace.clone(),
            service_account: self.service_account.clone(),
            identity_trust_domain: self.identity_trust_domain.clone(),
        }
    }
}

/// A `host:port` (a DNS name, an IPv4 address or a bracketed IPv6 one, and a port).
fn host_port(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not host:port (e.g. vane-control.vane-system.svc:4180 or 10.0.0.1:4180)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// The config to run without a config file: the embedded default, with the inbound section the
/// environment gives (`VANE_INBOUND_FORWARD_TO`, `VANE_LOAD_FROM`), as the injector sets it.
pub fn with_inbound_overrides(args: &Args, mut config: vane_route::Config) -> vane_route::Config {
    if args.inbound_forward_to.is_none() && args.load_from.is_none() {
        return config;
    }
    let inbound = config.inbound.get_or_insert_with(|| vane_route::config::InboundConfig {
        forward_to: String::new(),
        protocol: Default::default(),
        load_from: None,
        load_interval: vane_route::duration::HumanDuration(Duration::from_millis(10)),
    });
    if let Some(to) = args.inbound_forward_to {
        inbound.forward_to = to.to_string();
    }
    if let Some(url) = &args.load_from {
        inbound.load_from = Some(url.clone());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_addresses_may_be_names() {
        for ok in ["vane-control.vane-system.svc:4180", "10.0.0.1:4180", "[::1]:4180", "localhost:1"] {
            assert_eq!(host_port(ok).as_deref(), Ok(ok));
        }
        for bad in ["vane-control", ":4180", "a b:1", "host:0", "host:http", "[zz]:1", "::1:4180"] {
            assert!(host_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_identity_flags_reach_the_identity_resolution() {
        let args = Args::parse_from([
            "vane-proxy",
            "--control=c:1",
            "--identity-roots=/r",
            "--identity-token=/t",
            "--pod-namespace=apps",
            "--service-account=chat",
        ]);
        let env = args.identity_env();
        assert_eq!(
            (env.identity_roots.as_deref(), env.identity_token.as_deref(), env.control.as_deref()),
            (Some("/r"), Some("/t"), Some("c:1"))
        );
        assert_eq!((env.pod_namespace.as_deref(), env.service_account.as_deref()), (Some("apps"), Some("chat")));
        assert_eq!(env.identity_trust_domain, "cluster.local");
        let (opts, _) = options(&args, &Table::from_config(vane_route::Config::default()).unwrap()).unwrap();
        let id = opts.identity.and_then(|i| i.control).map(|c| c.identity);
        assert_eq!(id.as_deref(), Some("spiffe://cluster.local/ns/apps/sa/chat"));
    }

    #[test]
    fn the_environment_gives_the_inbound_section() {
        let args = Args::parse_from([
            "vane-proxy",
            "--inbound-forward-to",
            "127.0.0.1:8000",
            "--load-from",
            "http://127.0.0.1:4192/load",
        ]);
        let c = with_inbound_overrides(&args, vane_route::Config::default());
        let ib = c.inbound.unwrap();
        assert_eq!(
            (ib.forward_to.as_str(), ib.load_from.as_deref()),
            ("127.0.0.1:8000", Some("http://127.0.0.1:4192/load"))
        );
        let none = Args::parse_from(["vane-proxy"]);
        assert_eq!(with_inbound_overrides(&none, vane_route::Config::default()).inbound, None);
        assert!(!none.transparent);
        assert!(Args::parse_from(["vane-proxy", "--transparent"]).transparent);
    }
}
