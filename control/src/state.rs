//! The computed tables and the store that keeps them up to date.
//!
//! [`Store`] owns the [`Indexes`]. The watch tasks send it [`Change`]s; it applies a whole batch,
//! recomputes only the Services marked dirty (and those whose backends are among them), and
//! publishes an immutable [`Snapshot`] through a `tokio::sync::watch` channel that every
//! discovery subscriber holds. Entries that did not change keep their `Arc`, so a subscriber
//! finds what changed by pointer comparison, and each entry is serialized to JSON once, when it
//! is computed, however many subscribers send it.

use crate::index::namespaces::PolicyEntry;
use crate::index::{
    Dirty, Index, IndexEvent, Indexes, NamespacePolicy, ObjectKey, PodInfo, PolicyRule, RouteInfo, ServiceInfo,
    SliceInfo,
};
use crate::tables::{self, ServiceTable, TableSettings};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::time::Instant;
use vane_route::config::{BackendConfig, ServiceConfig};

/// The kinds of watched objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `gateway.networking.k8s.io/v1/HTTPRoute`.
    HttpRoute,
    /// `v1/Pod` (watched with the identity service on only).
    Pod,
    /// `v1/Namespace` (watched with the identity service on only).
    Namespace,
    /// `policy.vane.io/v1alpha1/AuthorizationPolicy` (watched with the identity service on only).
    AuthorizationPolicy,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] =
        [Kind::Service, Kind::EndpointSlice, Kind::HttpRoute, Kind::Pod, Kind::Namespace, Kind::AuthorizationPolicy];

    /// Label value in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::HttpRoute => "HTTPRoute",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }
}

/// One change from a watch task.
#[derive(Debug)]
pub struct Change {
    /// When the watch event that caused it was received (start of the push latency).
    pub received: Instant,
    /// What changed.
    pub event: ChangeEvent,
}

/// A change to one of the indexes.
#[derive(Debug)]
pub enum ChangeEvent {
    /// A Service change.
    Service(IndexEvent<ServiceInfo>),
    /// An EndpointSlice change.
    EndpointSlice(IndexEvent<SliceInfo>),
    /// An HTTPRoute change.
    HttpRoute(IndexEvent<RouteInfo>),
    /// An injected Pod's change.
    Pod(IndexEvent<PodInfo>),
    /// A Namespace's inbound policy changed.
    Namespace(IndexEvent<NamespacePolicy>),
    /// An `AuthorizationPolicy` (a rule of its namespace's inbound policy) changed.
    AuthorizationPolicy(IndexEvent<PolicyRule>),
}

impl ChangeEvent {
    fn kind(&self) -> Kind {
        match self {
            ChangeEvent::Service(_) => Kind::Service,
            ChangeEvent::EndpointSlice(_) => Kind::EndpointSlice,
            ChangeEvent::HttpRoute(_) => Kind::HttpRoute,
            ChangeEvent::Pod(_) => Kind::Pod,
            ChangeEvent::Namespace(_) => Kind::Namespace,
            ChangeEvent::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    fn is_reset(&self) -> bool {
        matches!(
            self,
            ChangeEvent::Service(IndexEvent::Reset(_))
                | ChangeEvent::EndpointSlice(IndexEvent::Reset(_))
                | ChangeEvent::HttpRoute(IndexEvent::Reset(_))
                | ChangeEvent::Pod(IndexEvent::Reset(_))
                | ChangeEvent::Namespace(IndexEvent::Reset(_))
                | ChangeEvent::AuthorizationPolicy(IndexEvent::Reset(_))
        )
    }
}

/// A backend as published: its config and that config's JSON.
#[derive(Debug, PartialEq)]
pub struct BackendEntry {
    /// The backend.
    pub config: BackendConfig,
    /// `serde_json` of `config`.
    pub json: Bytes,
}

/// A service's own configuration as published: the config and its JSON. Kept in its own `Arc`
/// so that an endpoint change (a new backend) does not resend an unchanged service.
#[derive(Debug, PartialEq)]
pub struct ServiceBody {
    /// The service.
    pub config: ServiceConfig,
    /// `serde_json` of `config`.
    pub json: Bytes,
}

/// A service as published.
#[derive(Debug)]
pub struct ServiceEntry {
    /// The Kubernetes Service.
    pub key: ObjectKey,
    /// The service's configuration.
    pub body: Arc<ServiceBody>,
    /// The backends it uses, sorted by name.
    pub backends: Vec<Arc<BackendEntry>>,
    /// The namespaces of `vane.io/visible-to`, when annotated (see
    /// [`crate::identity::visibility`]).
    pub visible_to: Option<BTreeSet<String>>,
}

/// What `/status` shows of a Service whose HTTPRoutes were refused or partly ignored.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceStatus {
    /// Why its HTTPRoutes were refused (it uses its default route meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Parts of its HTTPRoutes that Vane does not apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The published tables.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publication that changed something.
    pub version: u64,
    /// Whether every watch has finished its first list.
    pub ready: bool,
    /// Services by name (`<name>.<namespace>.svc.<domain>`).
    pub services: BTreeMap<String, Arc<ServiceEntry>>,
    /// Services with an error or notes, by `namespace/name`.
    pub status: BTreeMap<String, ServiceStatus>,
    /// Inbound policies pushed to the proxies of a namespace, by namespace name
    /// ([`crate::index::namespaces`]).
    pub policies: BTreeMap<String, Arc<PolicyEntry>>,
    /// When the oldest watch event this publication includes was received.
    pub received: Option<Instant>,
}

/// Counts after a batch, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Services with a table.
    pub services: usize,
    /// Usable endpoint addresses.
    pub endpoints: usize,
    /// Services whose HTTPRoutes were refused.
    pub invalid_routes: usize,
}

/// Owns the indexes and the current tables.
#[derive(Debug)]
pub struct Store {
    settings: TableSettings,
    indexes: Indexes,
    synced: [bool; Kind::ALL.len()],
    dirty: Dirty,
    tables: HashMap<ObjectKey, ServiceTable>,
    entries: HashMap<ObjectKey, Arc<ServiceEntry>>,
    backends: HashMap<String, Arc<BackendEntry>>,
    snapshot: Arc<Snapshot>,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// The new snapshot, when something changed.
    pub published: Option<Arc<Snapshot>>,
    /// HTTPRoutes newly refused: (service, error).
    pub new_errors: Vec<(ObjectKey, String)>,
}

impl Store {
    /// An empty store. Pods, Namespaces and AuthorizationPolicies count as listed from the start unless the settings
    /// name a trust domain (only then are they watched).
    pub fn new(settings: TableSettings) -> Store {
        let pods_listed = settings.trust_domain.is_none();
        Store {
            settings,
            indexes: Indexes::default(),
            synced: [false, false, false, pods_listed, pods_listed, pods_listed],
            dirty: Dirty::new(),
            tables: HashMap::new(),
            entries: HashMap::new(),
            backends: HashMap::new(),
            snapshot: Arc::new(Snapshot::default()),
        }
    }

    /// The indexes.
    pub fn indexes(&self) -> &Indexes {
        &self.indexes
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// Whether every kind has been listed once.
    pub fn is_ready(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Counts for metrics.
    pub fn counts(&self) -> Counts {
        Counts {
            services: self.entries.len(),
            endpoints: self.indexes.endpoints.addresses(),
            invalid_routes: self.tables.values().filter(|t| t.error.is_some()).count(),
        }
    }

    /// Applies a batch of changes; recomputes and publishes when ready and something changed.
    pub fn apply_batch(&mut self, changes: impl IntoIterator<Item = Change>) -> BatchResult {
        let was_ready = self.is_ready();
        let mut oldest: Option<Instant> = None;
        let mut policies = Dirty::new();
        for change in changes {
            oldest = Some(oldest.map_or(change.received, |o| o.min(change.received)));
            if change.event.is_reset() {
                self.synced[change.event.kind() as usize] = true;
            }
            match change.event {
                ChangeEvent::Service(e) => self.indexes.services.handle(e, &mut self.dirty),
                ChangeEvent::EndpointSlice(e) => self.indexes.endpoints.handle(e, &mut self.dirty),
                ChangeEvent::HttpRoute(e) => self.indexes.routes.handle(e, &mut self.dirty),
                ChangeEvent::Pod(e) => {
                    // Pod keys in, the Services whose slices point at those Pods out.
                    let mut pods = Dirty::new();
                    self.indexes.pods.handle(e, &mut pods);
                    for pod in &pods {
                        self.dirty.extend(self.indexes.endpoints.services_of_pod(pod).cloned());
                    }
                }
                // Namespace keys in: no table depends on them, only the published policies.
                ChangeEvent::Namespace(e) => self.indexes.namespaces.handle(e, &mut policies),
                ChangeEvent::AuthorizationPolicy(e) => self.indexes.namespaces.handle(e, &mut policies),
            }
        }
        // Until every kind is listed, tables would be partial (Services without endpoints):
        // keep the dirty set and compute everything once at the first full sync.
        if !self.is_ready() || (was_ready && self.dirty.is_empty() && policies.is_empty()) {
            return BatchResult::default();
        }
        let new_errors = self.recompute(!was_ready);
        self.publish(oldest);
        BatchResult { published: Some(self.snapshot.clone()), new_errors }
    }

    fn recompute(&mut self, everything: bool) -> Vec<(ObjectKey, String)> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut todo: Vec<ObjectKey> = Vec::new();
        for svc in self.indexes.services.iter() {
            let affected = everything
                || dirty.contains(&svc.key)
                || self.tables.get(&svc.key).is_none_or(|t| t.deps.iter().any(|d| dirty.contains(d)));
            if affected {
                todo.push(svc.key.clone());
            }
        }
        // Services that are gone.
        let gone: Vec<ObjectKey> =
            self.tables.keys().filter(|k| self.indexes.services.get(k).is_none()).cloned().collect();
        for key in gone {
            self.tables.remove(&key);
            self.entries.remove(&key);
        }
        let mut new_errors = Vec::new();
        for key in todo {
            let Some(table) = tables::compute(&self.indexes, &key, &self.settings) else {
                continue;
            };
            if let Some(e) = &table.error {
                let old = self.tables.get(&key).and_then(|t| t.error.as_ref());
                if old != Some(e) {
                    new_errors.push((key.clone(), e.clone()));
                }
            }
            self.update_entry(&table);
            self.tables.insert(key, table);
        }
        // Backends no service uses any more.
        let used: std::collections::HashSet<&str> =
            self.entries.values().flat_map(|e| e.backends.iter().map(|b| b.config.name.as_str())).collect();
        self.backends.retain(|name, _| used.contains(name.as_str()));
        new_errors
    }

    fn update_entry(&mut self, table: &ServiceTable) {
        let Some(config) = &table.config else {
            self.entries.remove(&table.key);
            return;
        };
        let backends: Vec<Arc<BackendEntry>> = table.backends.iter().map(|b| self.intern(b)).collect();
        let body = match self.entries.get(&table.key) {
            Some(old) if old.body.config == *config => {
                let same_backends = old.backends.len() == backends.len()
                    && old.backends.iter().zip(&backends).all(|(a, b)| Arc::ptr_eq(a, b));
                if same_backends && old.visible_to == table.visible_to {
                    return;
                }
                old.body.clone()
            }
            _ => Arc::new(ServiceBody {
                config: config.clone(),
                json: Bytes::from(serde_json::to_vec(config).expect("a service config serializes")),
            }),
        };
        let entry = ServiceEntry { key: table.key.clone(), body, backends, visible_to: table.visible_to.clone() };
        self.entries.insert(table.key.clone(), Arc::new(entry));
    }

    // Internal: one `Arc` per backend content, shared by every service that uses it, so that
    // subscribers compare backends by pointer and serialize each once.
    fn intern(&mut self, b: &BackendConfig) -> Arc<BackendEntry> {
        if let Some(have) = self.backends.get(&b.name)
            && have.config == *b
        {
            return have.clone();
        }
        let entry = Arc::new(BackendEntry {
            config: b.clone(),
            json: Bytes::from(serde_json::to_vec(b).expect("a backend config serializes")),
        });
        self.backends.insert(b.name.clone(), entry.clone());
        entry
    }

    fn publish(&mut self, received: Option<Instant>) {
        let services: BTreeMap<String, Arc<ServiceEntry>> =
            self.entries.values().map(|e| (e.body.config.name.clone(), e.clone())).collect();
        let status = self
            .tables
            .values()
            .filter(|t| t.error.is_some() || !t.notes.is_empty())
            .map(|t| (t.key.to_string(), ServiceStatus { error: t.error.clone(), notes: t.notes.clone() }))
            .collect();
        let policies = self.indexes.namespaces.policies();
        let unchanged = self.snapshot.ready
            && self.snapshot.services.len() == services.len()
            && self.snapshot.services.iter().zip(&services).all(|((n1, a), (n2, b))| n1 == n2 && Arc::ptr_eq(a, b))
            && self.snapshot.policies.len() == policies.len()
            && self.snapshot.policies.iter().zip(&policies).all(|((n1, a), (n2, b))| n1 == n2 && Arc::ptr_eq(a, b));
        let version = if unchanged { self.snapshot.version } else { self.snapshot.version + 1 };
        self.snapshot = Arc::new(Snapshot { version, ready: true, services, status, policies, received });
    }
}

#[cfg(test)]
mod tests;
