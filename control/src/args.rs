//! Flags (and their environment variables) and the wiring of the binary.

use crate::identity::rotate::Reload;
use crate::identity::{IdentitySettings, IssuerPem, init as identity_init};
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
    /// Discovery listener (HTTP/1.1 and h2c; TLS 1.3 with `--identity-dir`, which adds
    /// `POST /v1/certificate`): `GET /v1/discovery?services=...`.
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
    /// Turns the identity service on: the directory with the issuer (`ca.crt`, `tls.crt`,
    /// `tls.key`, as the `vane-identity-issuer` Secret mounts them).
    #[arg(long, env = "VANE_CONTROL_IDENTITY_DIR")]
    pub identity_dir: Option<PathBuf>,
    /// How often the identity directory is read again; a changed issuer is put into use
    /// without a restart (`10s`, `1m`, ...).
    #[arg(long, env = "VANE_CONTROL_IDENTITY_RELOAD", default_value = "10s", value_parser = reload_interval)]
    pub identity_reload: Duration,
    /// The trust domain of workload identities.
    #[arg(long, env = "VANE_CONTROL_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// How long workload certificates are valid (`24h`, `90m`, ...).
    #[arg(long, env = "VANE_CONTROL_CERTIFICATE_LIFETIME", default_value = "24h", value_parser = lifetime)]
    pub certificate_lifetime: Duration,
    /// The control service's namespace (its own identity's).
    #[arg(long, env = "VANE_CONTROL_NAMESPACE", default_value = "vane-system")]
    pub namespace: String,
    /// The control service's ServiceAccount (its own identity's).
    #[arg(long, env = "VANE_CONTROL_SERVICE_ACCOUNT", default_value = "vane-control")]
    pub service_account: String,
}

fn lifetime(s: &str) -> Result<Duration, String> {
    let d = vane_route::duration::parse(s)?;
    if d < Duration::from_secs(60) {
        return Err(format!("{s}: a certificate must live at least a minute"));
    }
    Ok(d)
}

fn reload_interval(s: &str) -> Result<Duration, String> {
    let d = vane_route::duration::parse(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s}: read the issuer files at most every 100ms"));
    }
    Ok(d)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the sidecar-injection webhook (a Deployment of its own; see manifests/injector).
    Inject(InjectArgs),
    /// Print a Secret with a new CA and the webhook's serving certificate, and its caBundle.
    WebhookCert(CertArgs),
    /// Workload identity: `identity init` makes a trust anchor and an issuer.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

/// `vane-control identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the Secret `vane-identity-issuer` and the ConfigMaps `vane-identity-trust-roots`
    /// (for `kubectl apply -f -`), or write the files with `--out`.
    Init(IdentityInitArgs),
}

/// `vane-control identity init`.
#[derive(Debug, clap::Args)]
pub struct IdentityInitArgs {
    /// The trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The control service's namespace (the Secret's, and the first ConfigMap's).
    #[arg(long, default_value = "vane-system")]
    pub namespace: String,
    /// Days the trust anchor is valid.
    #[arg(long, default_value_t = 3650)]
    pub anchor_days: u32,
    /// Days the issuer is valid.
    #[arg(long, default_value_t = 365)]
    pub issuer_days: u32,
    /// More namespaces that get the trust roots ConfigMap (every meshed namespace needs it).
    #[arg(long, value_delimiter = ',')]
    pub roots_namespaces: Vec<String>,
    /// Write `ca.crt`, `tls.crt` and `tls.key` (0600) into this directory instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
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
        let Args {
            command,
            listen,
            admin,
            cluster_domain,
            log,
            identity_dir,
            identity_reload,
            trust_domain,
            certificate_lifetime,
            namespace,
            service_account,
        } = self;
        match command {
            Some(Command::Inject(args)) => return args.run().await,
            Some(Command::WebhookCert(args)) => return args.run(),
            Some(Command::Identity(IdentityCommand::Init(args))) => return args.run(),
            None => {}
        }
        init_log(&log)?;
        let identity = match identity_dir {
            Some(dir) => Some(IdentitySettings {
                issuer: IssuerPem::read(&dir)?,
                trust_domain,
                lifetime: certificate_lifetime,
                namespace,
                service_account,
                reload: Some(Reload { dir, every: identity_reload }),
            }),
            None => None,
        };
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
            identity,
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

impl IdentityInitArgs {
    /// Prints the Secret and the ConfigMaps on stdout, or writes the files.
    pub fn run(self) -> anyhow::Result<()> {
        let g = vane_identity::ca::generate(&self.trust_domain, self.anchor_days, self.issuer_days)
            .context("cannot make the trust anchor and the issuer")?;
        match &self.out {
            Some(dir) => {
                identity_init::write_files(dir, &g).with_context(|| format!("cannot write {}", dir.display()))?;
                eprintln!("wrote ca.crt, tls.crt and tls.key to {}", dir.display());
            }
            None => {
                print!("{}", identity_init::manifests(&g, &self.trust_domain, &self.namespace, &self.roots_namespaces))
            }
        }
        Ok(())
    }
}
