//! The discovery stream (see `vane_route::discovery` for the protocol).
//!
//! Each subscriber is a task that holds a `watch` receiver on the published [`Snapshot`]s and a
//! small view of what it already sent (`Arc`s, compared by pointer). When the tables change it
//! sends only what changed among its subscribed services and their backends. Messages are
//! assembled from JSON fragments serialized once per entry, and the assembled bytes are shared
//! through a [`MessageCache`]: subscribers with the same subscription that are at the same
//! version get the same bytes, so 1000 proxies watching one service cost one encoding per change.
//!
//! A subscriber that reads slowly fills its small channel; its task then waits, and when it
//! resumes it diffs against the newest snapshot, so a slow proxy gets fewer, larger updates
//! instead of an ever-growing queue.
//!
//! With the identity service on, each subscriber is served as its [`Viewer`] (its identity's
//! namespace): Services it may not see (`vane.io/visible-to`) are left out of its view, as if
//! they did not exist, and the cache keys include the viewer. Its namespace's inbound policy
//! (the `vane.io/default-inbound-policy` annotation and the namespace's AuthorizationPolicies, see
//! [`crate::index::namespaces`]) is pushed as `authz` in its snapshot, and in an update when it
//! changes (`{}`, the default, once taken back).

use super::{Body, text};
use crate::identity::visibility::{self, Viewer};
use crate::index::namespaces::PolicyEntry;
use crate::metrics::Metrics;
use crate::state::{BackendEntry, ServiceBody, ServiceEntry, Snapshot};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vane_route::discovery::{self, Subscription};
use vane_runtime::CancellationToken;

/// Messages buffered per subscriber before its task waits for the connection.
const SUBSCRIBER_BUFFER: usize = 4;

/// Cached message sets kept before the oldest are dropped.
const CACHE_ENTRIES: usize = 512;

/// A message ready to write, and when the oldest watch event in it was received.
type Outgoing = (Bytes, Option<Instant>);

/// The discovery request handler.
#[derive(Clone, Debug)]
pub struct Discovery {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cache: Arc<MessageCache>,
    metrics: Metrics,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl Discovery {
    /// A handler over the published tables.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        metrics: Metrics,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Discovery {
        Discovery { snapshots, cache: Arc::new(MessageCache::default()), metrics, heartbeat, shutdown }
    }

    /// Answers one request: `GET /v1/discovery?services=...` starts a stream of everything
    /// subscribed to (no identity: every Service is visible).
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        self.handle_as(req, Viewer::Anyone)
    }

    /// Like [`Discovery::handle`], for a subscriber who sees only what `viewer` may.
    pub fn handle_as<B>(&self, req: &Request<B>, viewer: Viewer) -> Response<Body> {
        if req.uri().path() != discovery::PATH {
            return text(StatusCode::NOT_FOUND, format!("not found; try GET {}?services=*\n", discovery::PATH));
        }
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let sub = match Subscription::from_query(req.uri().query()) {
            Ok(s) => s,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let (tx, mut rx) = mpsc::channel::<Outgoing>(SUBSCRIBER_BUFFER);
        tokio::spawn(subscriber(
            sub,
            viewer,
            self.snapshots.clone(),
            self.cache.clone(),
            self.metrics.clone(),
            self.heartbeat,
            self.shutdown.clone(),
            tx,
        ));
        let metrics = self.metrics.clone();
        let frames = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|next| {
                next.map(|(bytes, received)| {
                    if let Some(t) = received {
                        metrics.push_latency.observe(t.elapsed().as_secs_f64());
                    }
                    Ok::<_, Infallible>(Frame::data(bytes))
                })
            })
        });
        let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(discovery::CONTENT_TYPE));
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        resp
    }
}

struct SubscriberGuard(Metrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.dec();
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    sub: Subscription,
    viewer: Viewer,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    cache: Arc<MessageCache>,
    metrics: Metrics,
    heartbeat: Duration,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Outgoing>,
) {
    metrics.subscribers.inc();
    let _guard = SubscriberGuard(metrics.clone());
    let key: Arc<str> = sub.to_query().into();
    // Never send a partial snapshot: wait until every watch has listed.
    tokio::select! {
        r = snapshots.wait_for(|s| s.ready) => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
        _ = tx.closed() => return,
    }
    let mut view = View { viewer, ..View::default() };
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping_line = Bytes::from_static(b"{\"type\":\"ping\"}\n");
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let first = view.version.is_none();
        for (bytes, kind) in cache.messages(&key, &sub, &mut view, &snap).iter() {
            let received = if first { None } else { snap.received };
            tokio::select! {
                r = tx.send((bytes.clone(), received)) => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            metrics.push(kind);
            ping.reset();
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = snapshots.changed() => {
                    if r.is_err() { return }
                    break;
                }
                _ = ping.tick() => {
                    tokio::select! {
                        r = tx.send((ping_line.clone(), None)) => if r.is_err() { return },
                        _ = shutdown.cancelled() => return,
                    }
                    metrics.push("ping");
                }
                _ = tx.closed() => return,
            }
        }
    }
}

/// What a subscriber has sent so far, and as whom.
#[derive(Debug, Default)]
struct View {
    viewer: Viewer,
    version: Option<u64>,
    services: HashMap<String, Arc<ServiceBody>>,
    backends: HashMap<String, Arc<BackendEntry>>,
    authz: Option<Arc<PolicyEntry>>,
}

/// What changed for one subscriber between its view and a snapshot.
#[derive(Debug, Default)]
struct Delta {
    services: Vec<Arc<ServiceBody>>,
    backends: Vec<Arc<BackendEntry>>,
    removed: Vec<String>,
    /// The inbound policy's JSON, when it changed.
    authz: Option<Bytes>,
}

/// Brings `view` to `snap` and returns what changed. Pure pointer work: nothing is serialized.
fn diff(view: &mut View, sub: &Subscription, snap: &Snapshot) -> Delta {
    let wanted: Vec<&Arc<ServiceEntry>> = match sub {
        Subscription::All => snap.services.values().collect(),
        Subscription::Names(names) => names.iter().filter_map(|n| snap.services.get(n)).collect(),
    };
    let wanted: Vec<&Arc<ServiceEntry>> = wanted
        .into_iter()
        .filter(|e| visibility::visible(&view.viewer, &e.key.namespace, e.visible_to.as_ref()))
        .collect();
    let mut delta = Delta::default();
    let mut services = HashMap::with_capacity(wanted.len());
    let mut backends: BTreeMap<&str, &Arc<BackendEntry>> = BTreeMap::new();
    for entry in wanted {
        let name = &entry.body.config.name;
        if !view.services.get(name).is_some_and(|old| Arc::ptr_eq(old, &entry.body)) {
            delta.services.push(entry.body.clone());
        }
        for b in &entry.backends {
            backends.insert(&b.config.name, b);
        }
        services.insert(name.clone(), entry.body.clone());
    }
    for name in view.services.keys() {
        if !services.contains_key(name) {
            delta.removed.push(name.clone());
        }
    }
    delta.removed.sort();
    let mut new_backends = HashMap::with_capacity(backends.len());
    for (name, b) in backends {
        if !view.backends.get(name).is_some_and(|old| Arc::ptr_eq(old, b)) {
            delta.backends.push(b.clone());
        }
        new_backends.insert(name.to_string(), b.clone());
    }
    let authz = match &view.viewer {
        Viewer::Anyone => None,
        Viewer::Namespace(ns) => snap.policies.get(&**ns).cloned(),
    };
    let same = match (&view.authz, &authz) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    if !same {
        // Taken back: the default policy, since an update without `authz` changes nothing.
        delta.authz = Some(authz.as_ref().map_or(Bytes::from_static(b"{}"), |p| p.json.clone()));
    }
    view.authz = authz;
    view.services = services;
    view.backends = new_backends;
    view.version = Some(snap.version);
    delta
}

fn encode(kind: &str, version: u64, delta: &Delta) -> Bytes {
    let size = 64
        + delta.authz.as_ref().map_or(0, |a| a.len() + 10)
        + delta.services.iter().map(|s| s.json.len() + 1).sum::<usize>()
        + delta.backends.iter().map(|b| b.json.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(format!("{{\"type\":\"{kind}\",\"version\":{version},\"services\":[").as_bytes());
    for (i, s) in delta.services.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&s.json);
    }
    out.put_slice(b"],\"backends\":[");
    for (i, b) in delta.backends.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&b.json);
    }
    out.put_u8(b']');
    if let Some(authz) = &delta.authz {
        out.put_slice(b",\"authz\":");
        out.put_slice(authz);
    }
    out.put_slice(b"}\n");
    out.freeze()
}

/// The messages that bring a subscriber from one version to another.
type Messages = Arc<Vec<(Bytes, &'static str)>>;

/// (subscription, viewer, from version, to version).
type CacheKey = (Arc<str>, Viewer, Option<u64>, u64);

/// Assembled messages by (subscription, viewer, from version, to version). A subscriber's view
/// after a message is a function of its subscription, its viewer and the version, so equal keys
/// mean equal bytes.
#[derive(Debug, Default)]
pub struct MessageCache {
    entries: Mutex<HashMap<CacheKey, Messages>>,
}

impl MessageCache {
    fn messages(&self, key: &Arc<str>, sub: &Subscription, view: &mut View, snap: &Snapshot) -> Messages {
        let from = view.version;
        if from == Some(snap.version) {
            return Messages::default();
        }
        let delta = diff(view, sub, snap);
        let cache_key = (key.clone(), view.viewer.clone(), from, snap.version);
        if let Some(hit) = self.lock().get(&cache_key) {
            return hit.clone();
        }
        let mut out = Vec::new();
        if from.is_none() {
            out.push((encode("snapshot", snap.version, &delta), "snapshot"));
        } else {
            if !delta.services.is_empty() || !delta.backends.is_empty() || delta.authz.is_some() {
                out.push((encode("update", snap.version, &delta), "update"));
            }
            if !delta.removed.is_empty() {
                let msg = discovery::Message::Remove { version: snap.version, services: delta.removed };
                out.push((Bytes::from(msg.to_line()), "remove"));
            }
        }
        let out = Arc::new(out);
        let mut entries = self.lock();
        if entries.len() >= CACHE_ENTRIES {
            // Keep the newest half (by target version); lagging subscribers just re-encode.
            let mut versions: Vec<u64> = entries.keys().map(|k| k.3).collect();
            versions.sort_unstable();
            let cut = versions[versions.len() / 2];
            entries.retain(|k, _| k.3 > cut);
        }
        entries.insert(cache_key, out.clone());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Messages>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
