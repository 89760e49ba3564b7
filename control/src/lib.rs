//! Vane's control service: watches Kubernetes and streams routing tables to proxies.
//!
//! ```text
//!  API server ──watch──▶ watch tasks ──Change──▶ Store (indexes → tables) ──watch::Sender<Snapshot>──▶ subscribers ──NDJSON/h2c──▶ proxies
//!  (Services, EndpointSlices, HTTPRoutes)            (pure, incremental)                          (one task each)
//! ```
//!
//! - [`api`]: the typed subset of Gateway API `HTTPRoute`.
//! - [`index`]: watch → plain-data indexes with `apply`/`delete`/`reset`.
//! - [`tables`]: the pure function from the indexes to the proxy's `ServiceConfig`/`BackendConfig`,
//!   validated with the proxy's own `Table::from_config`.
//! - [`state`]: the store that applies changes in batches and publishes [`state::Snapshot`]s.
//! - [`watch`]: the kube-runtime watchers and the store task.
//! - [`server`]: the discovery stream and the admin endpoints.
//! - [`identity`]: the identity service (`POST /v1/certificate`, discovery over mTLS, what each
//!   proxy may see), on when [`Settings::identity`] is given.
//! - [`inject`]: the sidecar-injection admission webhook (`vane-control inject`).
//! - [`args`]: flags and wiring; `main.rs` only calls [`args::Args::parse_and_run`].
//!
//! Replicas share nothing: each builds the same tables from the API server, and a proxy that
//! reconnects, to the same replica or another, starts over with a full snapshot.
#![warn(missing_docs)]

pub mod api;
pub mod args;
pub mod identity;
pub mod index;
pub mod inject;
pub mod metrics;
pub mod server;
pub mod state;
pub mod tables;
pub mod watch;

#[cfg(test)]
mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;
use vane_runtime::CancellationToken;

/// Settings of a running control service.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Discovery listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Table settings (cluster domain).
    pub tables: tables::TableSettings,
    /// Heartbeat interval on discovery streams.
    pub heartbeat: Duration,
    /// The identity service: with it the discovery listener speaks TLS 1.3 and also signs
    /// workload certificates, and endpoints of injected Pods get their identities (the table
    /// settings' trust domain is then this one's).
    pub identity: Option<identity::IdentitySettings>,
}

/// Why the control service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] vane_runtime::serve::BindError),
    /// A bound listener has no address.
    #[error("bound listener has no address: {0}")]
    Address(#[source] std::io::Error),
    /// The identity service cannot start.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

/// A started control service.
#[derive(Debug)]
pub struct Running {
    /// Where the discovery stream is served.
    pub listen: SocketAddr,
    /// Where the admin endpoints are served.
    pub admin: SocketAddr,
    /// The published tables.
    pub snapshots: tokio_watch::Receiver<Arc<state::Snapshot>>,
    servers: Vec<JoinHandle<()>>,
    /// The watches and the store: stopped once the servers are done.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Resolves when both servers have stopped (after the shutdown signal and the drain); then
    /// stops the Kubernetes watches and the store, so an embedded control service leaves nothing
    /// running.
    pub async fn wait(self) {
        for s in self.servers {
            let _ = s.await;
        }
        for b in self.background {
            b.abort();
            let _ = b.await;
        }
    }
}

/// Starts the watches, the store and both servers on the current tokio runtime.
/// `shutdown` stops both servers (and ends every discovery stream) when cancelled.
pub async fn start(client: kube::Client, settings: Settings, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut tables = settings.tables.clone();
    let identity = match &settings.identity {
        Some(id) => {
            tables.trust_domain = Some(id.trust_domain.clone());
            let authority = Arc::new(arc_swap::ArcSwap::from_pointee(id.issuer.authority(&id.trust_domain)?));
            let cert = identity::ServingCert::new(authority.clone(), id.own_id()?, id.lifetime)?;
            Some((id, authority, cert))
        }
        None => None,
    };
    let discovery_listener = vane_runtime::serve::bind(settings.listen)?;
    let admin_listener = vane_runtime::serve::bind(settings.admin)?;
    let listen = discovery_listener.local_addr().map_err(Error::Address)?;
    let admin = admin_listener.local_addr().map_err(Error::Address)?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let registry = Arc::new(registry);

    let (snap_tx, snap_rx) = tokio_watch::channel(Arc::new(state::Snapshot::default()));
    let (change_tx, change_rx) = mpsc::channel(watch::CHANGE_QUEUE);
    let watch_pods = tables.trust_domain.is_some();
    let store = state::Store::new(tables);
    let mut background = watch::spawn_watches(&client, change_tx, &metrics, watch_pods);
    background.push(tokio::spawn(watch::run_store(store, change_rx, snap_tx, metrics.clone())));

    let disco =
        server::discovery::Discovery::new(snap_rx.clone(), metrics.clone(), settings.heartbeat, shutdown.clone());
    let admin_handler = server::admin::admin(registry, snap_rx.clone());
    let discovery_server = match identity {
        Some((id, authority, cert)) => {
            let certificates =
                identity::service::CertificateService::new(authority, client.clone(), id.lifetime, metrics.clone());
            let secure =
                server::tls::Secure { discovery: disco, certificates, trust_domain: id.trust_domain.as_str().into() };
            tracing::info!(identity = %cert.id(), "identity service on: discovery and certificates over TLS");
            background.push(tokio::spawn(cert.clone().keep_renewed(shutdown.clone())));
            metrics.set_issuer_expiry(&cert.authority());
            if let Some(reload) = id.reload.clone() {
                background.push(tokio::spawn(identity::rotate::keep_issuer_fresh(
                    reload,
                    id.issuer.clone(),
                    id.trust_domain.clone(),
                    cert.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )));
            }
            tokio::spawn(server::tls::serve(discovery_listener, cert, secure, shutdown.clone()))
        }
        None => tokio::spawn(server::serve(discovery_listener, move |req| disco.handle(&req), shutdown.clone())),
    };
    let servers = vec![
        discovery_server,
        tokio::spawn(async move {
            vane_runtime::admin::serve(admin_listener, admin_handler, server::http_options(), shutdown).await;
        }),
    ];
    tracing::info!(%listen, %admin, "serving");
    Ok(Running { listen, admin, snapshots: snap_rx, servers, background })
}
