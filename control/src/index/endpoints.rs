//! EndpointSlices (`discovery.k8s.io/v1`): the usable addresses and the ports, per Service.

use super::{Dirty, Index, ObjectKey};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the tables need of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The slice's own namespace and name.
    pub key: ObjectKey,
    /// The Service it belongs to (its `kubernetes.io/service-name` label), if any.
    pub service: Option<ObjectKey>,
    /// Ports by name.
    pub ports: Vec<SlicePort>,
    /// Addresses of the endpoints that may take traffic: `ready`, or `serving` and not
    /// `terminating`. FQDN slices have none (Vane routes to IP addresses).
    pub addresses: Vec<IpAddr>,
    /// The Pod behind each of those addresses, from the endpoint's `targetRef`.
    pub pods: BTreeMap<IpAddr, ObjectKey>,
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// The Service port's name (empty for a single unnamed port).
    pub name: String,
    /// The port the endpoints listen on.
    pub port: u16,
    /// `appProtocol`, copied from the Service port.
    pub app_protocol: Option<String>,
}

impl SliceInfo {
    /// Reads an EndpointSlice.
    pub fn from_resource(slice: &EndpointSlice) -> Option<SliceInfo> {
        let key = ObjectKey::of(&slice.metadata);
        if key.name.is_empty() {
            return None;
        }
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|n| !n.is_empty())
            .map(|n| ObjectKey::new(key.namespace.clone(), n.clone()));
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port?).ok().filter(|n| *n > 0)?,
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        let ip = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
        let mut addresses = Vec::new();
        let mut pods = BTreeMap::new();
        for e in slice.endpoints.iter().flatten().filter(|_| ip).filter(|e| usable(e.conditions.as_ref())) {
            // kube-proxy uses the first address: the others are "fungible" (API docs).
            let Some(addr) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            addresses.push(addr);
            let pod = e.target_ref.as_ref().filter(|t| t.kind.as_deref() == Some("Pod"));
            if let Some(name) = pod.and_then(|t| t.name.clone()) {
                let ns = pod.and_then(|t| t.namespace.clone()).unwrap_or_else(|| key.namespace.clone());
                pods.entry(addr).or_insert(ObjectKey::new(ns, name));
            }
        }
        Some(SliceInfo { key, service, ports, addresses, pods })
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&SlicePort> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Whether an endpoint may take traffic. The API says an absent `ready` means ready, an absent
/// `serving` means the same as `ready`, and an absent `terminating` means not terminating.
pub fn usable(c: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> bool {
    let Some(c) = c else { return true };
    let ready = c.ready.unwrap_or(true);
    let serving = c.serving.unwrap_or(ready);
    let terminating = c.terminating.unwrap_or(false);
    ready || (serving && !terminating)
}

/// EndpointSlices by key, and their keys by Service and by the Pods they point at.
#[derive(Debug, Default)]
pub struct EndpointIndex {
    slices: HashMap<ObjectKey, SliceInfo>,
    by_service: HashMap<ObjectKey, HashSet<ObjectKey>>,
    by_pod: HashMap<ObjectKey, HashSet<ObjectKey>>,
}

impl EndpointIndex {
    /// The slices of a Service, in no particular order.
    pub fn for_service<'a>(&'a self, svc: &ObjectKey) -> impl Iterator<Item = &'a SliceInfo> + 'a {
        self.by_service.get(svc).into_iter().flatten().filter_map(|k| self.slices.get(k))
    }

    /// The Services whose slices point at `pod`.
    pub fn services_of_pod<'a>(&'a self, pod: &ObjectKey) -> impl Iterator<Item = &'a ObjectKey> + 'a {
        self.by_pod.get(pod).into_iter().flatten().filter_map(|k| self.slices.get(k)?.service.as_ref())
    }

    /// How many slices are held.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// Whether no slice is held.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// How many usable addresses all slices hold together.
    pub fn addresses(&self) -> usize {
        self.slices.values().map(|s| s.addresses.len()).sum()
    }

    fn unlink(&mut self, slice: &SliceInfo, dirty: &mut Dirty) {
        for pod in slice.pods.values() {
            if let Some(set) = self.by_pod.get_mut(pod) {
                set.remove(&slice.key);
                if set.is_empty() {
                    self.by_pod.remove(pod);
                }
            }
        }
        if let Some(svc) = &slice.service {
            dirty.insert(svc.clone());
            if let Some(set) = self.by_service.get_mut(svc) {
                set.remove(&slice.key);
                if set.is_empty() {
                    self.by_service.remove(svc);
                }
            }
        }
    }
}

impl Index<SliceInfo> for EndpointIndex {
    fn apply(&mut self, obj: SliceInfo, dirty: &mut Dirty) {
        if self.slices.get(&obj.key) == Some(&obj) {
            return;
        }
        if let Some(old) = self.slices.remove(&obj.key) {
            self.unlink(&old, dirty);
        }
        if let Some(svc) = &obj.service {
            dirty.insert(svc.clone());
            self.by_service.entry(svc.clone()).or_default().insert(obj.key.clone());
        }
        for pod in obj.pods.values() {
            self.by_pod.entry(pod.clone()).or_default().insert(obj.key.clone());
        }
        self.slices.insert(obj.key.clone(), obj);
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if let Some(old) = self.slices.remove(key) {
            self.unlink(&old, dirty);
        }
    }

    fn reset(&mut self, objs: Vec<SliceInfo>, dirty: &mut Dirty) {
        let fresh: HashMap<ObjectKey, SliceInfo> = objs.into_iter().map(|s| (s.key.clone(), s)).collect();
        let gone: Vec<ObjectKey> = self.slices.keys().filter(|k| !fresh.contains_key(k)).cloned().collect();
        for key in gone {
            self.delete(&key, dirty);
        }
        for (_, slice) in fresh {
            self.apply(slice, dirty);
        }
    }
}
