//! Flags (and their environment variables) and the wiring of the binary.

use crate::tables::TableSettings;
use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
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

impl Args {
    /// Parses the command line, then runs until SIGTERM or SIGINT.
    pub async fn parse_and_run() -> anyhow::Result<()> {
        Args::parse().run().await
    }

    /// Runs until SIGTERM or SIGINT; a second signal exits at once.
    pub async fn run(self) -> anyhow::Result<()> {
        let Args { listen, admin, cluster_domain, log } = self;
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_new(&log)
                    .with_context(|| format!("invalid --log filter {log:?}"))?,
            )
            .with_writer(std::io::stderr)
            .init();
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        let mut signals = Signals::new().context("cannot install signal handlers")?;
        let shutdown = CancellationToken::new();
        let settings = crate::Settings {
            listen,
            admin,
            tables: TableSettings { cluster_domain },
            heartbeat: vane_route::discovery::HEARTBEAT,
        };
        let running = crate::start(client, settings, shutdown.clone()).await?;
        let signal = signals.recv().await;
        info!("{signal}: shutting down: closing discovery streams");
        shutdown.cancel();
        tokio::select! {
            _ = running.wait() => {}
            _ = signals.recv() => warn!("second signal: exiting now"),
            _ = tokio::time::sleep(crate::server::SHUTDOWN_GRACE + Duration::from_secs(1)) => {}
        }
        Ok(())
    }
}
