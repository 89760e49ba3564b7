use super::*;
use crate::fixtures::{pod, ready, service, slice, split, visible_to};

fn change(event: ChangeEvent) -> Change {
    Change { received: Instant::now(), event }
}

fn svc(ns: &str, name: &str) -> ServiceInfo {
    ServiceInfo::from_resource(&service(ns, name, &[("http", 80, None)])).unwrap()
}

fn sl(name: &str, svc: &str, ips: &[&str]) -> SliceInfo {
    let eps: Vec<_> = ips.iter().map(|ip| ready(ip)).collect();
    SliceInfo::from_resource(&slice("m", name, svc, ("http", 8000), &eps)).unwrap()
}

fn synced_store() -> Store {
    let mut store = Store::new(TableSettings::default());
    let r = store.apply_batch([
        change(ChangeEvent::Service(IndexEvent::Reset(vec![svc("m", "a"), svc("m", "b"), svc("m", "b2")]))),
        change(ChangeEvent::EndpointSlice(IndexEvent::Reset(vec![
            sl("a-1", "a", &["10.0.0.1"]),
            sl("b-1", "b", &["10.0.1.1"]),
        ]))),
    ]);
    assert!(r.published.is_none(), "not ready before every kind has listed");
    assert_eq!(store.snapshot().version, 0);
    let r = store.apply_batch([change(ChangeEvent::HttpRoute(IndexEvent::Reset(vec![])))]);
    let snap = r.published.expect("ready: published");
    assert!(snap.ready);
    assert_eq!(snap.version, 1);
    assert_eq!(snap.services.len(), 3);
    store
}

#[test]
fn publishes_once_every_kind_listed() {
    let store = synced_store();
    assert!(store.is_ready());
    assert_eq!(store.counts(), Counts { services: 3, endpoints: 2, invalid_routes: 0 });
}

#[test]
fn unchanged_entries_keep_their_arc() {
    let mut store = synced_store();
    let before = store.snapshot();
    let r = store.apply_batch([change(ChangeEvent::EndpointSlice(IndexEvent::Apply(sl(
        "a-1",
        "a",
        &["10.0.0.1", "10.0.0.2"],
    ))))]);
    let after = r.published.unwrap();
    assert_eq!(after.version, 2);
    let a = "a.m.svc.cluster.local";
    let b = "b.m.svc.cluster.local";
    assert!(Arc::ptr_eq(&before.services[b], &after.services[b]));
    assert!(!Arc::ptr_eq(&before.services[a], &after.services[a]));
    assert_eq!(after.services[a].backends[0].config.endpoints.len(), 2);
    // The service config itself did not change, only its backend.
    assert!(Arc::ptr_eq(&before.services[a].body, &after.services[a].body));

    // Nothing changes: nothing published.
    let r = store.apply_batch([change(ChangeEvent::Service(IndexEvent::Apply(svc("m", "a"))))]);
    assert!(r.published.is_none());
}

#[test]
fn shared_backends_are_interned_and_follow_their_service() {
    let mut store = synced_store();
    let route = crate::index::RouteInfo::from_resource(&split("m", "r", "a", &[("a", 80, 50), ("b", 80, 50)])).unwrap();
    let snap = store.apply_batch([change(ChangeEvent::HttpRoute(IndexEvent::Apply(route)))]).published.unwrap();
    let a = &snap.services["a.m.svc.cluster.local"];
    let b = &snap.services["b.m.svc.cluster.local"];
    assert_eq!(a.backends.len(), 2);
    assert!(Arc::ptr_eq(&a.backends[1], &b.backends[0]), "one Arc per backend content");

    // b's endpoints change: a (which routes to b) is recomputed too.
    let snap2 = store
        .apply_batch([change(ChangeEvent::EndpointSlice(IndexEvent::Apply(sl("b-1", "b", &["10.0.1.9"]))))])
        .published
        .unwrap();
    let a2 = &snap2.services["a.m.svc.cluster.local"];
    assert_eq!(a2.backends[1].config.endpoints, ["10.0.1.9:8000"]);
    assert!(Arc::ptr_eq(&a2.backends[1], &snap2.services["b.m.svc.cluster.local"].backends[0]));
    assert!(Arc::ptr_eq(&a2.backends[0], &a.backends[0]), "a's own backend is unchanged");
    assert!(Arc::ptr_eq(&snap.services["b2.m.svc.cluster.local"], &snap2.services["b2.m.svc.cluster.local"]));
}

#[test]
fn invalid_routes_are_reported_once_and_kept_in_status() {
    let mut store = synced_store();
    let bad = crate::index::RouteInfo::from_resource(&split("m", "r", "a", &[("a", 80, 0)])).unwrap();
    let r = store.apply_batch([change(ChangeEvent::HttpRoute(IndexEvent::Apply(bad.clone())))]);
    assert_eq!(r.new_errors.len(), 1);
    let snap = r.published.unwrap();
    assert!(snap.status["m/a"].error.as_ref().unwrap().contains("all backend weights are 0"));
    assert_eq!(snap.services["a.m.svc.cluster.local"].body.config.routes[0].name, "default");
    assert_eq!(store.counts().invalid_routes, 1);

    // A relist that brings the same route back does not report it again.
    let r = store.apply_batch([change(ChangeEvent::HttpRoute(IndexEvent::Reset(vec![bad])))]);
    assert!(r.new_errors.is_empty());
}

#[test]
fn deleted_services_leave_the_snapshot() {
    let mut store = synced_store();
    let snap = store
        .apply_batch([change(ChangeEvent::Service(IndexEvent::Delete(ObjectKey::new("m", "b2"))))])
        .published
        .unwrap();
    assert_eq!(snap.services.len(), 2);
    assert!(!snap.services.contains_key("b2.m.svc.cluster.local"));
}

#[test]
fn with_a_trust_domain_pods_are_waited_for_and_their_changes_recompute_their_services() {
    let meshed = TableSettings { trust_domain: Some("cluster.local".into()), ..TableSettings::default() };
    let mut store = Store::new(meshed);
    let p = |ip: &str, sa: &str| PodInfo::from_resource(&pod("m", ip, Some(sa), true)).unwrap();
    let r = store.apply_batch([
        change(ChangeEvent::Service(IndexEvent::Reset(vec![svc("m", "a"), svc("m", "b")]))),
        change(ChangeEvent::EndpointSlice(IndexEvent::Reset(vec![
            sl("a-1", "a", &["10.0.0.1"]),
            sl("b-1", "b", &["10.0.1.1"]),
        ]))),
        change(ChangeEvent::HttpRoute(IndexEvent::Reset(vec![]))),
    ]);
    assert!(r.published.is_none(), "Pods are watched too: not ready before they are listed");
    let r = store.apply_batch([change(ChangeEvent::Pod(IndexEvent::Reset(vec![p("10.0.0.1", "llm")])))]);
    assert!(r.published.is_none(), "and Namespaces");
    let r = store.apply_batch([change(ChangeEvent::Namespace(IndexEvent::Reset(vec![])))]);
    assert!(r.published.is_none(), "and AuthorizationPolicies");
    let snap = store
        .apply_batch([change(ChangeEvent::AuthorizationPolicy(IndexEvent::Reset(vec![])))])
        .published
        .expect("ready");
    let a = "a.m.svc.cluster.local";
    let b = "b.m.svc.cluster.local";
    assert_eq!(snap.services[a].backends[0].config.identity.as_deref(), Some("spiffe://cluster.local/ns/m/sa/llm"));
    assert_eq!(snap.services[b].backends[0].config.identity, None);

    // The pod behind a's endpoint changes ServiceAccount: a is recomputed, b is untouched.
    let snap2 =
        store.apply_batch([change(ChangeEvent::Pod(IndexEvent::Apply(p("10.0.0.1", "canary"))))]).published.unwrap();
    let id = snap2.services[a].backends[0].config.identity.as_deref();
    assert_eq!(id, Some("spiffe://cluster.local/ns/m/sa/canary"));
    assert!(Arc::ptr_eq(&snap.services[b], &snap2.services[b]));

    // A pod no endpoint points at changes nothing.
    let r = store.apply_batch([change(ChangeEvent::Pod(IndexEvent::Apply(p("10.9.9.9", "x"))))]);
    assert!(r.published.is_none_or(|s| s.version == snap2.version));
}

#[test]
fn a_visibility_change_is_a_new_entry_with_the_same_body() {
    let mut store = synced_store();
    let before = store.snapshot();
    let hidden = ServiceInfo::from_resource(&visible_to(service("m", "a", &[("http", 80, None)]), "x")).unwrap();
    let after = store.apply_batch([change(ChangeEvent::Service(IndexEvent::Apply(hidden)))]).published.unwrap();
    let a = "a.m.svc.cluster.local";
    assert!(after.version > before.version);
    assert_eq!(after.services[a].visible_to, Some(["x".to_string()].into()));
    assert!(Arc::ptr_eq(&before.services[a].body, &after.services[a].body), "the service itself is unchanged");
}
