use super::*;
use crate::fixtures::{ready, service, slice, split, visible_to};
use crate::index::{IndexEvent, RouteInfo, ServiceInfo, SliceInfo};
use crate::state::{Change, ChangeEvent, Store};
use crate::tables::TableSettings;
use vane_route::discovery::{DiscoveryState, Message};

fn change(event: ChangeEvent) -> Change {
    Change { received: Instant::now(), event }
}

fn store() -> Store {
    let mut store = Store::new(TableSettings::default());
    let svcs = ["a", "b", "c"].map(|n| ServiceInfo::from_resource(&service("m", n, &[("http", 80, None)])).unwrap());
    let slices = ["a", "b", "c"].map(|n| {
        SliceInfo::from_resource(&slice("m", &format!("{n}-1"), n, ("http", 8000), &[ready("10.0.0.1")])).unwrap()
    });
    store.apply_batch([
        change(ChangeEvent::Service(IndexEvent::Reset(svcs.to_vec()))),
        change(ChangeEvent::EndpointSlice(IndexEvent::Reset(slices.to_vec()))),
        change(ChangeEvent::HttpRoute(IndexEvent::Reset(vec![]))),
    ]);
    store
}

fn apply_all(state: &mut DiscoveryState, msgs: &Messages) -> Vec<String> {
    msgs.iter()
        .map(|(bytes, kind)| {
            let msg = Message::from_line(bytes).expect("valid line");
            assert!(bytes.ends_with(b"\n"));
            state.apply(msg).unwrap();
            kind.to_string()
        })
        .collect()
}

#[test]
fn subscriber_gets_snapshot_then_only_its_changes() {
    let mut store = store();
    let cache = MessageCache::default();
    let sub = Subscription::from_query(Some("services=a.m.svc.cluster.local,x.m.svc.cluster.local")).unwrap();
    let key: Arc<str> = sub.to_query().into();
    let mut view = View::default();
    let mut state = DiscoveryState::default();

    let snap = store.snapshot();
    let kinds = apply_all(&mut state, &cache.messages(&key, &sub, &mut view, &snap));
    assert_eq!(kinds, ["snapshot"]);
    assert_eq!(state.services().keys().collect::<Vec<_>>(), ["a.m.svc.cluster.local"]);
    vane_route::Table::from_config(state.to_config(&Default::default())).unwrap();

    // A change elsewhere: nothing to send.
    let s2 = store
        .apply_batch([change(ChangeEvent::EndpointSlice(IndexEvent::Apply(
            SliceInfo::from_resource(&slice("m", "b-1", "b", ("http", 8000), &[])).unwrap(),
        )))])
        .published
        .unwrap();
    assert!(cache.messages(&key, &sub, &mut view, &s2).is_empty());

    // a routes to b now: a's config changes and b's (empty) backend comes along.
    let r = RouteInfo::from_resource(&split("m", "r", "a", &[("a", 80, 90), ("b", 80, 10)])).unwrap();
    let s3 = store.apply_batch([change(ChangeEvent::HttpRoute(IndexEvent::Apply(r)))]).published.unwrap();
    let msgs = cache.messages(&key, &sub, &mut view, &s3);
    assert_eq!(apply_all(&mut state, &msgs), ["update"]);
    let line = String::from_utf8(msgs[0].0.to_vec()).unwrap();
    assert!(line.contains("\"backends\":[{\"name\":\"b.m.svc.cluster.local:80\""), "{line}");
    assert!(!line.contains("a.m.svc.cluster.local:80\",\"protocol"), "a's backend did not change: {line}");
    assert_eq!(state.backends().len(), 2);

    // Same subscription, same versions: the cache hands out the same bytes.
    let mut view2 = View::default();
    let first = cache.messages(&key, &sub, &mut view2, &snap);
    let again = cache.messages(&key, &sub, &mut view2, &s3);
    assert_eq!(first[0].0, cache.messages(&key, &sub, &mut View::default(), &snap)[0].0);
    assert_eq!(again.len(), 1, "two versions at once are one update");

    // The service goes away.
    let s4 = store
        .apply_batch([change(ChangeEvent::Service(IndexEvent::Delete(ObjectKey::new("m", "a"))))])
        .published
        .unwrap();
    assert_eq!(apply_all(&mut state, &cache.messages(&key, &sub, &mut view, &s4)), ["remove"]);
    assert!(state.services().is_empty());
    assert!(state.backends().is_empty());
}

#[test]
fn wildcard_subscriber_sees_everything() {
    let store = store();
    let cache = MessageCache::default();
    let mut view = View::default();
    let mut state = DiscoveryState::default();
    let msgs = cache.messages(&"services=*".into(), &Subscription::All, &mut view, &store.snapshot());
    apply_all(&mut state, &msgs);
    assert_eq!(state.services().len(), 3);
    assert_eq!(state.backends().len(), 3);
}

use crate::index::ObjectKey;

#[test]
fn each_viewer_is_served_what_it_may_see() {
    let mut store = store();
    let hidden = ServiceInfo::from_resource(&visible_to(service("m", "b", &[("http", 80, None)]), "team-a")).unwrap();
    let snap = store.apply_batch([change(ChangeEvent::Service(IndexEvent::Apply(hidden)))]).published.unwrap();
    let cache = MessageCache::default();
    let key: Arc<str> = "services=*".into();
    let seen = |viewer: Viewer| {
        let mut view = View { viewer, ..View::default() };
        let mut state = DiscoveryState::default();
        apply_all(&mut state, &cache.messages(&key, &Subscription::All, &mut view, &snap));
        state.services().keys().cloned().collect::<Vec<_>>()
    };
    let (a, b, c) = ("a.m.svc.cluster.local", "b.m.svc.cluster.local", "c.m.svc.cluster.local");
    assert_eq!(seen(Viewer::Anyone), [a, b, c], "no identity: everything");
    assert_eq!(seen(Viewer::Namespace("team-a".into())), [a, b, c]);
    assert_eq!(seen(Viewer::Namespace("m".into())), [a, b, c], "its own namespace");
    assert_eq!(seen(Viewer::Namespace("team-b".into())), [a, c]);
    // The same subscription as another viewer is not served from the first one's cache entry.
    assert_eq!(seen(Viewer::Namespace("team-a".into())), [a, b, c]);
}

#[test]
fn a_viewer_is_pushed_its_namespaces_policy_and_its_changes() {
    use crate::index::NamespacePolicy;
    use vane_route::authz::{AuthzConfig, DefaultPolicy};
    let policy = |name: &str, default| {
        change(ChangeEvent::Namespace(IndexEvent::Apply(NamespacePolicy { key: ObjectKey::new("", name), default })))
    };
    let mut store = store();
    let s1 = store.apply_batch([policy("m", DefaultPolicy::AllAuthenticated)]).published.unwrap();
    let cache = MessageCache::default();
    let sub = Subscription::All;
    let key: Arc<str> = sub.to_query().into();
    let views = ["m", "other"].map(|ns| View { viewer: Viewer::Namespace(ns.into()), ..View::default() });
    let mut anyone = View::default();
    let [mut m, mut other] = views;
    let (mut in_m, mut in_other, mut anon) = Default::default();
    let authz = |st: &DiscoveryState| st.authz().map(|a| a.default);

    assert_eq!(apply_all(&mut in_m, &cache.messages(&key, &sub, &mut m, &s1)), ["snapshot"]);
    assert_eq!(authz(&in_m), Some(DefaultPolicy::AllAuthenticated));
    apply_all(&mut in_other, &cache.messages(&key, &sub, &mut other, &s1));
    apply_all(&mut anon, &cache.messages(&key, &sub, &mut anyone, &s1));
    assert_eq!((authz(&in_other), authz(&anon)), (None, None), "another namespace; no identity");

    // The annotation changes: an update for that namespace only.
    let s2 = store.apply_batch([policy("m", DefaultPolicy::Deny)]).published.unwrap();
    assert!(s2.version > s1.version);
    assert_eq!(apply_all(&mut in_m, &cache.messages(&key, &sub, &mut m, &s2)), ["update"]);
    assert_eq!(authz(&in_m), Some(DefaultPolicy::Deny));
    assert!(cache.messages(&key, &sub, &mut other, &s2).is_empty());
    assert!(cache.messages(&key, &sub, &mut anyone, &s2).is_empty());

    // Taken back: the default policy, the same as none.
    let gone = ChangeEvent::Namespace(IndexEvent::Delete(ObjectKey::new("", "m")));
    let s3 = store.apply_batch([change(gone)]).published.unwrap();
    assert_eq!(apply_all(&mut in_m, &cache.messages(&key, &sub, &mut m, &s3)), ["update"]);
    assert_eq!(in_m.to_config(&Default::default()).proxy.authz, AuthzConfig::default());

    // A relist that changes nothing publishes nothing.
    assert!(store.apply_batch([change(ChangeEvent::Namespace(IndexEvent::Reset(vec![])))]).published.is_none());
}
