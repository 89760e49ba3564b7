//! HTTPRoutes attached to Services (Gateway API's mesh use, GAMMA).

use super::{Dirty, Index, ObjectKey};
use crate::api::{HttpRoute, HttpRouteSpec, is_core_service};
use std::collections::{HashMap, HashSet};

/// What the tables need of an HTTPRoute.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteInfo {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `metadata.creationTimestamp` as RFC 3339 (Gateway API orders equal matches by age).
    pub created: String,
    /// Services the route attaches to: `parentRefs` with `group: ""`, `kind: Service`, in the
    /// route's own namespace.
    pub parents: Vec<ObjectKey>,
    /// The rules, read when the tables are computed.
    pub spec: HttpRouteSpec,
    /// Parts of the route Vane does not apply, with the reason (logged and shown in `/status`).
    pub notes: Vec<String>,
}

impl RouteInfo {
    /// Reads an HTTPRoute.
    pub fn from_resource(route: &HttpRoute) -> Option<RouteInfo> {
        let key = ObjectKey::of(&route.metadata);
        if key.name.is_empty() {
            return None;
        }
        let mut notes = Vec::new();
        let mut parents = Vec::new();
        for (i, p) in route.spec.parent_refs.iter().enumerate() {
            if !is_core_service(p.group.as_deref(), p.kind.as_deref(), false) {
                continue; // a Gateway's route: not for the mesh
            }
            let ns = p.namespace.clone().unwrap_or_else(|| key.namespace.clone());
            if ns != key.namespace {
                notes.push(format!(
                    "parentRefs[{i}]: Service {ns}/{} is in another namespace; consumer routes are not supported, ignored",
                    p.name
                ));
                continue;
            }
            if p.port.is_some() {
                notes.push(format!("parentRefs[{i}].port: applied to every port of Service {}", p.name));
            }
            let parent = ObjectKey::new(ns, p.name.clone());
            if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        for (i, r) in route.spec.rules.iter().enumerate() {
            if !r.filters.is_empty() {
                notes.push(format!("rules[{i}].filters: {} filter(s) not applied by Vane, ignored", r.filters.len()));
            }
            if r.timeouts.is_some() {
                notes.push(format!("rules[{i}].timeouts: not applied by Vane, ignored"));
            }
            for (j, b) in r.backend_refs.iter().enumerate() {
                if !b.filters.is_empty() {
                    notes.push(format!("rules[{i}].backendRefs[{j}].filters: not applied by Vane, ignored"));
                }
            }
        }
        let created = route.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        Some(RouteInfo { key, created, parents, spec: route.spec.clone(), notes })
    }
}

/// HTTPRoutes by key, and their keys by parent Service.
#[derive(Debug, Default)]
pub struct RouteIndex {
    routes: HashMap<ObjectKey, RouteInfo>,
    by_parent: HashMap<ObjectKey, HashSet<ObjectKey>>,
}

impl RouteIndex {
    /// The routes attached to a Service, oldest first (then by name), the order in which
    /// Gateway API breaks ties between equally specific matches.
    pub fn for_parent(&self, svc: &ObjectKey) -> Vec<&RouteInfo> {
        let mut out: Vec<&RouteInfo> =
            self.by_parent.get(svc).into_iter().flatten().filter_map(|k| self.routes.get(k)).collect();
        out.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
        out
    }

    /// How many routes are held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn unlink(&mut self, route: &RouteInfo, dirty: &mut Dirty) {
        for p in &route.parents {
            dirty.insert(p.clone());
            if let Some(set) = self.by_parent.get_mut(p) {
                set.remove(&route.key);
                if set.is_empty() {
                    self.by_parent.remove(p);
                }
            }
        }
    }
}

impl Index<RouteInfo> for RouteIndex {
    fn apply(&mut self, obj: RouteInfo, dirty: &mut Dirty) {
        if self.routes.get(&obj.key) == Some(&obj) {
            return;
        }
        if let Some(old) = self.routes.remove(&obj.key) {
            self.unlink(&old, dirty);
        }
        for p in &obj.parents {
            dirty.insert(p.clone());
            self.by_parent.entry(p.clone()).or_default().insert(obj.key.clone());
        }
        self.routes.insert(obj.key.clone(), obj);
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if let Some(old) = self.routes.remove(key) {
            self.unlink(&old, dirty);
        }
    }

    fn reset(&mut self, objs: Vec<RouteInfo>, dirty: &mut Dirty) {
        let fresh: HashMap<ObjectKey, RouteInfo> = objs.into_iter().map(|r| (r.key.clone(), r)).collect();
        let gone: Vec<ObjectKey> = self.routes.keys().filter(|k| !fresh.contains_key(k)).cloned().collect();
        for key in gone {
            self.delete(&key, dirty);
        }
        for (_, route) in fresh {
            self.apply(route, dirty);
        }
    }
}
