//! Flags (and their environment variables) and the wiring of the binary.

use crate::inject::{InjectSettings, cert, run as inject_run, tls::CertFiles};
use crate::tables::TableSettings;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};
use vane_runtime::CancellationToken;
use vane_runtime::signal::Signals;

/// Vane's control service: watches Services, EndpointSlices and HTTPRoutes and streams routing
/// tables to proxies. The Kubernetes client comes from `KUBECONFIG`/`~/.kube/config` or the
/// in-cluster service account.
#[derive(Debug, Parser)]
#[command(name = "vane-control", version)]
pub struct Args {
    /// Without a command, the control service runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Discovery listener (HTTP/1.1 and h2c): `GET /v1/discovery?services=...`.
    #[arg(long, env = "VANE_CONTROL_LISTEN", default_value = "0.0.0.0:8086")]
    pub listen: SocketAddr,
    /// Admin listener: `/live`, `/ready`, `/metrics`, `/status`.
    #[arg(long, env = "VANE_CONTROL_ADMIN", default_value = "0.0.0.0:9990")]
    pub admin: SocketAddr,
    /// The cluster's DNS domain (service names are `<name>.<namespace>.svc.<domain>`).
    #[arg(long, env = "VANE_CONTROL_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Log filter, e.g. `info` or `vane_control=debug,kube=info`.
    #[arg(long, env = "VANE_CONTROL_LOG", default_value = "info")]
    pub log: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the sidecar-injection webhook (a Deployment of its own; see manifests/injector).
    Inject(InjectArgs),
    /// Print a Secret with a new CA and the webhook's serving certificate, and its caBundle.
    WebhookCert(CertArgs),
}

/// `vane-control inject`: flags of the injection webhook.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// HTTPS listener the API server calls (`POST /inject`).
    #[arg(long, env = "VANE_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Admin listener: `/live`, `/ready`, `/metrics`.
    #[arg(long, env = "VANE_INJECTOR_ADMIN", default_value = "0.0.0.0:9991")]
    pub admin: SocketAddr,
    /// PEM certificate chain (reloaded when the file changes).
    #[arg(long, env = "VANE_INJECTOR_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key.
    #[arg(long, env = "VANE_INJECTOR_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Image of the proxy and of the capture init step.
    #[arg(long, env = "VANE_INJECTOR_PROXY_IMAGE", default_value_t = InjectSettings::default().proxy_image)]
    pub proxy_image: String,
    /// Image of the load probe.
    #[arg(long, env = "VANE_INJECTOR_PROBE_IMAGE", default_value_t = InjectSettings::default().probe_image)]
    pub probe_image: String,
    /// `imagePullPolicy` of the injected containers (default: the cluster's).
    #[arg(long, env = "VANE_INJECTOR_PULL_POLICY")]
    pub pull_policy: Option<String>,
    /// The control service's discovery address (`ip:port`, as `vane-proxy --control` takes it),
    /// given to every proxy as `VANE_CONTROL`.
    #[arg(long, env = "VANE_INJECTOR_CONTROL")]
    pub control: Option<String>,
    /// The trust domain proxies give their identities in (with `--control`).
    #[arg(long, env = "VANE_INJECTOR_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The proxy's default log filter (a pod's `vane.io/log-level` wins).
    #[arg(long, env = "VANE_INJECTOR_PROXY_LOG", default_value = "info")]
    pub proxy_log: String,
    /// The injector's own log filter.
    #[arg(long, env = "VANE_INJECTOR_LOG", default_value = "info")]
    pub log: String,
}

/// `vane-control webhook-cert`: where the webhook is served, and for how long the certificates hold.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// The webhook's Service.
    #[arg(long, default_value = "vane-injector")]
    pub service: String,
    /// Its namespace (also the Secret's).
    #[arg(long, default_value = "vane-system")]
    pub namespace: String,
    /// The Secret's name.
    #[arg(long, default_value = "vane-injector-tls")]
    pub secret: String,
    /// Days the CA and the certificate are valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

fn init_log(log: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log).with_context(|| format!("invalid --log filter {log:?}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

impl Args {
    /// Parses the command line, then runs until SIGTERM or SIGINT.
    pub async fn parse_and_run() -> anyhow::Result<()> {
        Args::parse().run().await
    }

    /// Runs until SIGTERM or SIGINT; a second signal exits at once.
    pub async fn run(self) -> anyhow::Result<()> {
        let Args { command, listen, admin, cluster_domain, log } = self;
        match command {
            Some(Command::Inject(args)) => return args.run().await,
            Some(Command::WebhookCert(args)) => return args.run(),
            None => {}
        }
        init_log(&log)?;
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        let signals = Signals::new().context("cannot install signal handlers")?;
        let shutdown = CancellationToken::new();
        let settings = crate::Settings {
            listen,
            admin,
            tables: TableSettings { cluster_domain, trust_domain: None },
            heartbeat: vane_route::discovery::HEARTBEAT,
        };
        let running = crate::start(client, settings, shutdown.clone()).await?;
        until_signal(signals, &shutdown, "closing discovery streams", running.wait()).await;
        Ok(())
    }
}

impl InjectArgs {
    /// Serves the webhook until SIGTERM or SIGINT; a second signal exits at once.
    pub async fn run(self) -> anyhow::Result<()> {
        let InjectArgs {
            listen,
            admin,
            tls_cert,
            tls_key,
            proxy_image,
            probe_image,
            pull_policy,
            control,
            trust_domain,
            proxy_log,
            log,
        } = self;
        init_log(&log)?;
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        let signals = Signals::new().context("cannot install signal handlers")?;
        let shutdown = CancellationToken::new();
        let settings = InjectSettings {
            proxy_image,
            probe_image,
            pull_policy,
            control,
            trust_domain,
            log_level: proxy_log,
            ..Default::default()
        };
        let config =
            inject_run::InjectorConfig { listen, admin, files: CertFiles { cert: tls_cert, key: tls_key }, settings };
        let running = inject_run::start(client, config, shutdown.clone()).await?;
        until_signal(signals, &shutdown, "closing the webhook", running.wait()).await;
        Ok(())
    }
}

/// Serves until SIGTERM or SIGINT, then cancels `shutdown` and waits for `stopped` (the servers'
/// drain) for at most the drain grace and a second; a second signal exits at once.
async fn until_signal(
    mut signals: Signals,
    shutdown: &CancellationToken,
    what: &str,
    stopped: impl std::future::Future<Output = ()>,
) {
    let signal = signals.recv().await;
    info!("{signal}: shutting down: {what}");
    shutdown.cancel();
    tokio::select! {
        _ = stopped => {}
        _ = signals.recv() => warn!("second signal: exiting now"),
        _ = tokio::time::sleep(crate::server::SHUTDOWN_GRACE + Duration::from_secs(1)) => {}
    }
}

impl CertArgs {
    /// Prints the Secret (with the caBundle in its first line) on stdout.
    pub fn run(self) -> anyhow::Result<()> {
        let names = cert::service_names(&self.service, &self.namespace, &self.cluster_domain);
        let certs = cert::generate(&names, self.days).context("cannot make the certificates")?;
        print!("{}", cert::secret_yaml(&self.secret, &self.namespace, &certs));
        Ok(())
    }
}
