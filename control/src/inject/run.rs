//! A running injector: the HTTPS webhook, its admin endpoints, the certificate reloader and
//! the watch on Namespaces whose labels opt whole namespaces in.

use super::server::{self, Injector, InjectorMetrics, NamespaceLabels};
use super::settings::InjectSettings;
use super::tls::{self, CertFiles, ReloadingCert, TlsError};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use vane_runtime::CancellationToken;
use vane_runtime::admin::{Admin, MetricsPage, Readiness};

/// Settings of a running injector.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    /// The HTTPS listener the API server calls.
    pub listen: SocketAddr,
    /// The admin listener (`/live`, `/ready`, `/metrics`), plain HTTP.
    pub admin: SocketAddr,
    /// The serving certificate and key.
    pub files: CertFiles,
    /// What is injected.
    pub settings: InjectSettings,
}

/// Why the injector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] vane_runtime::serve::BindError),
    /// A bound listener has no address.
    #[error("bound listener has no address: {0}")]
    Address(#[source] std::io::Error),
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A started injector.
#[derive(Debug)]
pub struct RunningInjector {
    /// Where the webhook is served (HTTPS).
    pub listen: SocketAddr,
    /// Where the admin endpoints are served.
    pub admin: SocketAddr,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningInjector {
    /// Resolves when both servers have stopped (after shutdown and the drain), then stops the
    /// Namespace watch and the certificate reloader.
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

/// Starts the injector on the current runtime: `/ready` is 503 until the Namespace watch has
/// listed, so that the Service sends reviews only to replicas that know every namespace.
pub async fn start(
    client: kube::Client,
    config: InjectorConfig,
    shutdown: CancellationToken,
) -> Result<RunningInjector, StartError> {
    let InjectorConfig { listen, admin, files, settings } = config;
    let cert = ReloadingCert::load(files)?;
    let tls_config = Arc::new(cert.server_config()?);
    let webhook_listener = vane_runtime::serve::bind(listen)?;
    let admin_listener = vane_runtime::serve::bind(admin)?;
    let listen = webhook_listener.local_addr().map_err(StartError::Address)?;
    let admin = admin_listener.local_addr().map_err(StartError::Address)?;

    let (store, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let synced = Arc::new(AtomicBool::new(false));
    // Metadata only: labels are all the injector reads of a Namespace.
    let api = kube::Api::<PartialObjectMeta<Namespace>>::all(client);
    let watch = tokio::spawn(async move {
        let stream =
            reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff().applied_objects();
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "namespace watch failed; retrying");
            }
        }
    });
    let ready_flag = synced.clone();
    let ready_store = store.clone();
    let ready_wait = tokio::spawn(async move {
        if ready_store.wait_until_ready().await.is_ok() {
            ready_flag.store(true, Ordering::Relaxed);
            tracing::info!("namespaces listed");
        }
    });

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = InjectorMetrics::new(&mut registry);
    let injector = Injector::new(settings, namespace_labels(store), metrics);
    let admin_handler = admin_endpoints(Arc::new(registry), synced);

    let options = crate::server::http_options();
    let reload = tokio::spawn(cert.watch(tls::RELOAD_EVERY, shutdown.clone()));
    let servers = vec![
        tokio::spawn(server::serve(webhook_listener, tls_config, injector, options, shutdown.clone())),
        tokio::spawn(async move {
            vane_runtime::admin::serve(admin_listener, admin_handler, options, shutdown).await;
        }),
    ];
    tracing::info!(%listen, %admin, "injector serving");
    Ok(RunningInjector { listen, admin, servers, background: vec![watch, ready_wait, reload] })
}

/// Labels from the Namespace store; `None` for a namespace it has not seen.
pub fn namespace_labels(store: Store<PartialObjectMeta<Namespace>>) -> NamespaceLabels {
    Arc::new(move |name: &str| {
        store.get(&ObjectRef::new(name)).map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    })
}

fn admin_endpoints(registry: Arc<prometheus_client::registry::Registry>, synced: Arc<AtomicBool>) -> Admin {
    Admin::new()
        .ready(move || match synced.load(Ordering::Relaxed) {
            true => Readiness::Ready("ready\n".into()),
            false => Readiness::NotReady("not ready: namespaces not listed yet\n".into()),
        })
        .metrics(move |_| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).map_err(|e| e.to_string())?;
            Ok(MetricsPage::openmetrics(out))
        })
        .hint("try /live /ready /metrics")
}
