//! Kubernetes watches → [`Change`]s → the [`Store`] → published [`Snapshot`]s.
//!
//! One task per kind (Services, EndpointSlices, HTTPRoutes, and Pods, Namespaces and Vane's
//! AuthorizationPolicies with the identity service on) runs a kube-runtime `watcher` with the default backoff (800 ms doubling to
//! 30 s, with jitter). The watcher re-lists by itself after a `410 Gone` or a broken stream; its
//! `Init`, `InitApply`…, `InitDone` sequence is buffered here and handed to the index as one
//! `reset`. Objects are reduced to plain data in these tasks, so the store task only merges.

use crate::api::{AuthorizationPolicy, HttpRoute};
use crate::index::{IndexEvent, NamespacePolicy, ObjectKey, PodInfo, PolicyRule, RouteInfo, ServiceInfo, SliceInfo};
use crate::metrics::Metrics;
use crate::state::{Change, ChangeEvent, Kind, Snapshot, Store};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Changes waiting for the store task. A whole relist is one message, so this bounds the
/// number of single-object events in flight; when full, the watch tasks wait (and the API
/// server's stream with them), which is the backpressure we want.
pub const CHANGE_QUEUE: usize = 1024;

/// At most this many changes are merged into one publication, so that a relist storm still
/// publishes regularly.
pub const MAX_BATCH: usize = 4096;

/// Starts one watch task per kind, feeding `tx`; returns their handles (to stop them). Pods,
/// Namespaces and AuthorizationPolicies are watched only when `identity` is set (the identity
/// service is on): only injected Pods are kept, and only Namespaces with an inbound policy.
pub fn spawn_watches(
    client: &Client,
    tx: mpsc::Sender<Change>,
    metrics: &Metrics,
    identity: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let services = tokio::spawn(watch_kind(
        Api::<Service>::all(client.clone()),
        Kind::Service,
        ServiceInfo::from_resource,
        ChangeEvent::Service,
        tx.clone(),
        metrics.clone(),
    ));
    let slices = tokio::spawn(watch_kind(
        Api::<EndpointSlice>::all(client.clone()),
        Kind::EndpointSlice,
        SliceInfo::from_resource,
        ChangeEvent::EndpointSlice,
        tx.clone(),
        metrics.clone(),
    ));
    let routes = tokio::spawn(watch_kind(
        Api::<HttpRoute>::all(client.clone()),
        Kind::HttpRoute,
        RouteInfo::from_resource,
        ChangeEvent::HttpRoute,
        tx.clone(),
        metrics.clone(),
    ));
    let mut tasks = vec![services, slices, routes];
    if identity {
        tasks.push(tokio::spawn(watch_kind(
            Api::<Pod>::all(client.clone()),
            Kind::Pod,
            PodInfo::from_resource,
            ChangeEvent::Pod,
            tx.clone(),
            metrics.clone(),
        )));
        tasks.push(tokio::spawn(watch_kind(
            Api::<Namespace>::all(client.clone()),
            Kind::Namespace,
            NamespacePolicy::from_resource,
            ChangeEvent::Namespace,
            tx.clone(),
            metrics.clone(),
        )));
        tasks.push(tokio::spawn(watch_kind(
            Api::<AuthorizationPolicy>::all(client.clone()),
            Kind::AuthorizationPolicy,
            PolicyRule::from_resource,
            ChangeEvent::AuthorizationPolicy,
            tx,
            metrics.clone(),
        )));
    }
    tasks
}

async fn watch_kind<K, T>(
    api: Api<K>,
    kind: Kind,
    convert: fn(&K) -> Option<T>,
    wrap: fn(IndexEvent<T>) -> ChangeEvent,
    tx: mpsc::Sender<Change>,
    metrics: Metrics,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    T: Debug + Notes,
{
    let label = kind.as_str();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    let mut relist: Option<Vec<T>> = None;
    let mut synced = false;
    let mut missing_logged = false;
    while let Some(event) = stream.next().await {
        let received = Instant::now();
        let change = match event {
            Ok(watcher::Event::Init) => {
                metrics.watch_event(label, "init");
                relist = Some(Vec::new());
                None
            }
            Ok(watcher::Event::InitApply(obj)) => {
                metrics.watch_event(label, "init_apply");
                if let Some(t) = convert(&obj) {
                    t.log_notes();
                    relist.get_or_insert_with(Vec::new).push(t);
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                metrics.watch_event(label, "init_done");
                let objs = relist.take().unwrap_or_default();
                info!(kind = label, objects = objs.len(), "listed");
                synced = true;
                missing_logged = false;
                Some(IndexEvent::Reset(objs))
            }
            Ok(watcher::Event::Apply(obj)) => {
                metrics.watch_event(label, "apply");
                match convert(&obj) {
                    Some(t) => {
                        t.log_notes();
                        Some(IndexEvent::Apply(t))
                    }
                    None => Some(IndexEvent::Delete(ObjectKey::of(obj.meta()))),
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                metrics.watch_event(label, "delete");
                Some(IndexEvent::Delete(ObjectKey::of(obj.meta())))
            }
            Err(error) => {
                metrics.watch_event(label, "error");
                if is_not_found(&error) && matches!(kind, Kind::HttpRoute | Kind::AuthorizationPolicy) {
                    // The CRD is not installed: run without these objects rather than never
                    // becoming ready. The watcher keeps retrying with backoff.
                    if !missing_logged {
                        warn!(
                            kind = label,
                            "resource not served by the API server (its CRD not installed?); continuing without it"
                        );
                        missing_logged = true;
                    }
                    if !synced {
                        synced = true;
                        Some(IndexEvent::Reset(Vec::new()))
                    } else {
                        None
                    }
                } else {
                    warn!(kind = label, %error, "watch failed; retrying with backoff");
                    None
                }
            }
        };
        if let Some(event) = change {
            let change = Change { received, event: wrap(event) };
            if tx.send(change).await.is_err() {
                return; // the store is gone: shutting down
            }
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

/// Objects whose conversion found parts Vane ignores log them when they arrive.
pub trait Notes {
    /// Logs what is ignored, if anything.
    fn log_notes(&self) {}
}

impl Notes for ServiceInfo {}
impl Notes for SliceInfo {}
impl Notes for PodInfo {}
impl Notes for NamespacePolicy {}
impl Notes for PolicyRule {
    fn log_notes(&self) {
        for i in &self.dropped {
            warn!(policy = %self.key, "spec.allow[{i}] names no principal, or more than one kind at once; it admits nobody");
        }
    }
}
impl Notes for RouteInfo {
    fn log_notes(&self) {
        for note in &self.notes {
            info!(route = %self.key, "{note}");
        }
    }
}

/// Runs the store: merges changes in batches, publishes snapshots, updates metrics.
pub async fn run_store(
    mut store: Store,
    mut rx: mpsc::Receiver<Change>,
    tx: tokio_watch::Sender<Arc<Snapshot>>,
    metrics: Metrics,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let n = batch.len();
        let result = store.apply_batch(batch.drain(..));
        for (key, error) in &result.new_errors {
            warn!(service = %key, %error, "HTTPRoute refused; the service uses its default route");
            metrics.route_rejections.inc();
        }
        if let Some(snapshot) = result.published {
            let counts = store.counts();
            metrics.services.set(counts.services as i64);
            metrics.endpoints.set(counts.endpoints as i64);
            metrics.invalid_routes.set(counts.invalid_routes as i64);
            metrics.table_version.set(snapshot.version as i64);
            debug!(changes = n, version = snapshot.version, "published");
            let (was_ready, same) = {
                let old = tx.borrow();
                (old.ready, old.ready && old.version == snapshot.version && old.status == snapshot.status)
            };
            if !was_ready {
                info!(services = counts.services, endpoints = counts.endpoints, "all watches synced; ready");
            }
            // Recomputed but equal (an HTTPRoute touched without effect, say): do not wake
            // every subscriber for nothing.
            if !same {
                tx.send_replace(snapshot);
            }
        }
    }
}
