use super::*;
use crate::config::{
    Algorithm, BackendBalancer, HeaderMatch, MatchConfig, PathMatch, Protocol, RouteConfig, StickyConfig,
    WeightedBackend,
};
use std::time::Duration;

fn service(name: &str, backends: &[(&str, u32)]) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        hosts: vec![],
        routes: vec![RouteConfig {
            name: "default".into(),
            matches: Default::default(),
            backends: backends.iter().map(|(b, w)| WeightedBackend { backend: (*b).into(), weight: *w }).collect(),
            sticky: None,
            timeout: None,
            retries: None,
            coalesce: None,
            hedge: None,
        }],
    }
}

fn backend(name: &str, endpoints: &[&str]) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        protocol: Protocol::Http1,
        endpoints: endpoints.iter().map(|e| (*e).into()).collect(),
        balancer: None,
        identity: None,
        identities: Default::default(),
    }
}

fn snapshot() -> Message {
    Message::Snapshot {
        version: 1,
        services: vec![service("a", &[("a:80", 1)]), service("b", &[("b:80", 1)])],
        backends: vec![backend("a:80", &["10.0.0.1:80"]), backend("b:80", &[])],
        authz: None,
    }
}

#[test]
fn wire_shapes() {
    assert_eq!(Message::Ping.to_line(), b"{\"type\":\"ping\"}\n");
    let line = Message::Remove { version: 3, services: vec!["a".into()] }.to_line();
    assert_eq!(String::from_utf8(line).unwrap(), "{\"type\":\"remove\",\"version\":3,\"services\":[\"a\"]}\n");
    for msg in [snapshot(), Message::Ping] {
        assert_eq!(Message::from_line(&msg.to_line()).unwrap(), msg);
    }
    assert_eq!(Message::from_line(br#"{"type":"hello","x":1}"#).unwrap(), Message::Unknown);
    assert_eq!(
        Message::from_line(br#"{"type":"remove","services":["x"]}"#).unwrap(),
        Message::Remove { version: 0, services: vec!["x".into()] }
    );
    assert!(Message::from_line(b"{\"type\":").is_err());
    // Unknown fields inside a service are ignored on the wire (a config file refuses them).
    assert_eq!(
        Message::from_line(br#"{"type":"update","version":1,"services":[{"name":"a","routes":[],"color":1}]}"#)
            .unwrap(),
        Message::Update {
            version: 1,
            services: vec![ServiceConfig { name: "a".into(), hosts: vec![], routes: vec![] }],
            backends: vec![],
            authz: None,
        }
    );
    // Values that cannot be read are still errors.
    assert!(Message::from_line(br#"{"type":"update","version":1,"backends":[{"name":"b","endpoints":7}]}"#).is_err());
    assert!(
        Message::from_line(
            br#"{"type":"update","version":1,"backends":[{"name":"b","endpoints":[],"protocol":"h3"}]}"#
        )
        .is_err()
    );
}

#[test]
fn snapshot_update_remove() {
    let mut st = DiscoveryState::default();
    assert_eq!(st.apply(Message::Ping).unwrap(), Applied::Unchanged, "pings are fine before the snapshot");
    assert_eq!(
        st.apply(Message::Update { version: 1, services: vec![], backends: vec![], authz: None }),
        Err(DiscoveryError::BeforeSnapshot("update"))
    );
    assert_eq!(st.apply(snapshot()).unwrap(), Applied::Changed);
    assert!(st.is_synced());
    assert_eq!(st.services().len(), 2);

    // A weight change arrives with the service in full; the new backend comes along.
    let upd = Message::Update {
        version: 2,
        services: vec![service("a", &[("a:80", 90), ("a2:80", 10)])],
        backends: vec![backend("a2:80", &["10.0.0.2:80"])],
        authz: None,
    };
    assert_eq!(st.apply(upd.clone()).unwrap(), Applied::Changed);
    assert_eq!(st.apply(upd).unwrap(), Applied::Unchanged);
    assert_eq!(st.version(), 2);
    assert_eq!(st.backends().len(), 3);

    // An endpoint change alone.
    st.apply(Message::Update { version: 3, services: vec![], backends: vec![backend("a:80", &[])], authz: None })
        .unwrap();
    assert!(st.backends()["a:80"].endpoints.is_empty());

    // A service that stops using a backend: the backend goes with it.
    st.apply(Message::Update {
        version: 4,
        services: vec![service("a", &[("a2:80", 1)])],
        backends: vec![],
        authz: None,
    })
    .unwrap();
    assert!(!st.backends().contains_key("a:80"));

    assert_eq!(
        st.apply(Message::Remove { version: 5, services: vec!["b".into(), "never".into()] }).unwrap(),
        Applied::Changed
    );
    assert_eq!(st.services().keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(st.backends().keys().collect::<Vec<_>>(), ["a2:80"]);

    // A new snapshot replaces everything.
    st.apply(snapshot()).unwrap();
    assert_eq!(st.services().len(), 2);
    assert_eq!(st.version(), 1);
}

#[test]
fn to_config_keeps_base_settings_and_validates() {
    let mut st = DiscoveryState::default();
    st.apply(snapshot()).unwrap();
    let mut base = Config::default();
    base.proxy.threads = Some(2);
    base.services.push(service("a", &[("local", 1)]));
    base.backends.push(backend("local", &["127.0.0.1:1"]));
    let c = st.to_config(&base);
    assert_eq!(c.proxy.threads, Some(2));
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "the base's own service wins");
    assert_eq!(c.services[0].routes[0].backends[0].backend, "local");
    crate::Table::from_config(c).unwrap();
}

#[test]
fn subscriptions() {
    assert_eq!(Subscription::from_query(Some("services=*")).unwrap(), Subscription::All);
    let s = Subscription::from_query(Some("x=1&services=B.ns.svc.cluster.local,a.ns%2Cc.ns")).unwrap();
    assert!(s.contains("b.ns.svc.cluster.local") && s.contains("a.ns") && s.contains("c.ns"));
    assert!(!s.contains("d"));
    assert_eq!(Subscription::from_query(Some(&s.to_query())).unwrap(), s);
    assert!(Subscription::from_query(None).is_err());
    assert!(Subscription::from_query(Some("services=")).is_err());
    assert!(Subscription::from_query(Some("services=a/b")).is_err());
}

/// A service and a backend using every object the wire carries, as JSON with a `@` at the start
/// of each object's fields: where an unknown field is put.
const SERVICE: &str = r#"{@"name":"llm","hosts":["llm.models"],"routes":[{@"name":"chat","match":{@"path":{@"prefix":"/v1"},"method":"POST","headers":[{@"name":"x-tier","value":"gold"}],"model":"llama"},"backends":[{@"backend":"v1","weight":90}],"sticky":{@"header":"x-user"},"timeout":"2s"}]}"#;
const BACKEND: &str = r#"{@"name":"v1","protocol":"http2","endpoints":["10.0.0.1:8000"],"balancer":{@"algorithm":"least_request","queue_weight":2.0,"load_stream":true}}"#;
/// What each object of [`SERVICE`] and [`BACKEND`] is, in the order of their `@`s.
const OBJECTS: [&str; 9] =
    ["service", "route", "match", "path", "header", "weighted backend", "sticky", "backend", "backend balancer"];
const EXTRA: &str = r#""future_field":{"nested":[1,{"deeper":true}]},"#;

/// [`SERVICE`] and [`BACKEND`] with the unknown field in the objects `at` (indexes into [`OBJECTS`]).
fn with_extra(at: &[usize]) -> (String, String) {
    let mut k = 0;
    let mut fill = |template: &str| {
        let mut out = String::new();
        for c in template.chars() {
            if c == '@' {
                if at.contains(&k) {
                    out.push_str(EXTRA);
                }
                k += 1;
            } else {
                out.push(c);
            }
        }
        out
    };
    let service = fill(SERVICE);
    let backend = fill(BACKEND);
    (service, backend)
}

fn expected_service() -> ServiceConfig {
    ServiceConfig {
        name: "llm".into(),
        hosts: vec!["llm.models".into()],
        routes: vec![RouteConfig {
            name: "chat".into(),
            matches: MatchConfig {
                path: Some(PathMatch { exact: None, prefix: Some("/v1".into()) }),
                method: Some("POST".into()),
                headers: vec![HeaderMatch { name: "x-tier".into(), value: Some("gold".into()) }],
                model: Some("llama".into()),
            },
            backends: vec![WeightedBackend { backend: "v1".into(), weight: 90 }],
            sticky: Some(StickyConfig { header: "x-user".into() }),
            timeout: Some(Duration::from_secs(2).into()),
            retries: None,
            coalesce: None,
            hedge: None,
        }],
    }
}

fn expected_backend() -> BackendConfig {
    BackendConfig {
        name: "v1".into(),
        protocol: Protocol::Http2,
        endpoints: vec!["10.0.0.1:8000".into()],
        balancer: Some(BackendBalancer {
            algorithm: Some(Algorithm::LeastRequest),
            queue_weight: Some(2.0),
            load_stream: true,
            ..Default::default()
        }),
        identity: None,
        identities: Default::default(),
    }
}

#[test]
fn unknown_fields_are_ignored_on_the_wire_at_every_level() {
    let every: Vec<usize> = (0..OBJECTS.len()).collect();
    let (service, backend) = with_extra(&every);
    assert_eq!(service.matches("future_field").count() + backend.matches("future_field").count(), OBJECTS.len());
    for kind in ["snapshot", "update"] {
        let line = format!(r#"{{"type":"{kind}",{EXTRA}"version":4,"services":[{service}],"backends":[{backend}]}}"#);
        let (services, backends) = (vec![expected_service()], vec![expected_backend()]);
        let want = match kind {
            "snapshot" => Message::Snapshot { version: 4, services, backends, authz: None },
            _ => Message::Update { version: 4, services, backends, authz: None },
        };
        assert_eq!(Message::from_line(line.as_bytes()).unwrap(), want, "{line}");
    }
    let cases: [(&str, Message); 3] = [
        (
            r#"{"type":"remove","version":5,"services":["a"],"future_field":{"x":1}}"#,
            Message::Remove { version: 5, services: vec!["a".into()] },
        ),
        (r#"{"type":"ping","future_field":[1,2]}"#, Message::Ping),
        (r#"{"type":"subscribe","services":[{"name":"a","color":1}],"extra":{"y":[]}}"#, Message::Unknown),
    ];
    for (line, want) in cases {
        assert_eq!(Message::from_line(line.as_bytes()).unwrap(), want, "{line}");
    }
}

#[test]
fn the_same_unknown_field_in_a_config_file_is_refused() {
    // Without the unknown field, the file config reads the same objects as the wire.
    let (service, backend) = with_extra(&[]);
    let c = Config::from_yaml(&format!(r#"{{"services":[{service}],"backends":[{backend}]}}"#)).unwrap();
    assert_eq!((c.services, c.backends), (vec![expected_service()], vec![expected_backend()]));
    let top = format!(r#"{{{EXTRA}"services":[{service}],"backends":[{backend}]}}"#);
    let mut files = vec![("config".to_string(), top)];
    for (k, what) in OBJECTS.iter().enumerate() {
        let (service, backend) = with_extra(&[k]);
        files.push((what.to_string(), format!(r#"{{"services":[{service}],"backends":[{backend}]}}"#)));
        let line = format!(r#"{{"type":"snapshot","version":1,"services":[{service}],"backends":[{backend}]}}"#);
        assert!(Message::from_line(line.as_bytes()).is_ok(), "the wire ignores it in the {what}");
    }
    for (what, text) in files {
        let err = Config::from_yaml(&text).unwrap_err();
        assert!(err.contains("unknown field `future_field`"), "{what}: {err}");
    }
}

fn policy(default: crate::authz::DefaultPolicy) -> AuthzConfig {
    AuthzConfig { default, rules: vec![] }
}

#[test]
fn authz_on_the_wire() {
    use crate::authz::DefaultPolicy::AllAuthenticated;
    // Absent: none pushed, and nothing is written.
    assert!(!String::from_utf8(snapshot().to_line()).unwrap().contains("authz"));
    let with =
        Message::Snapshot { version: 1, services: vec![], backends: vec![], authz: Some(policy(AllAuthenticated)) };
    let line = String::from_utf8(with.to_line()).unwrap();
    assert!(line.contains(r#""authz":{"default":"all-authenticated"}"#), "{line}");
    assert_eq!(Message::from_line(line.as_bytes()).unwrap(), with);
    // Fields this version lacks are ignored inside the policy too; values it cannot read are not.
    let line = r#"{"type":"update","version":2,"authz":{"default":"deny","future_field":1,"rules":[{"name":"r","allow":[{"namespace":"a","future_field":2}]}]}}"#;
    let Message::Update { authz: Some(a), .. } = Message::from_line(line.as_bytes()).unwrap() else {
        panic!("an update with a policy");
    };
    assert_eq!((a.default, a.rules[0].allow[0].namespace.as_deref()), (crate::authz::DefaultPolicy::Deny, Some("a")));
    assert!(Message::from_line(br#"{"type":"update","version":2,"authz":{"default":"allow-all"}}"#).is_err());
}

#[test]
fn pushed_authz_is_kept_across_updates_and_dropped_by_a_snapshot_without_it() {
    use crate::authz::DefaultPolicy::{AllAuthenticated, Deny};
    let mut st = DiscoveryState::default();
    let mut first = snapshot();
    if let Message::Snapshot { authz, .. } = &mut first {
        *authz = Some(policy(AllAuthenticated));
    }
    assert_eq!(st.apply(first.clone()).unwrap(), Applied::Changed);
    assert_eq!(st.authz(), Some(&policy(AllAuthenticated)));
    assert_eq!(st.apply(first).unwrap(), Applied::Unchanged, "the same snapshot again");

    // An update without `authz` leaves it as it was.
    let upd = Message::Update { version: 2, services: vec![], backends: vec![backend("a:80", &[])], authz: None };
    assert_eq!(st.apply(upd).unwrap(), Applied::Changed);
    assert_eq!(st.authz(), Some(&policy(AllAuthenticated)));

    // An update with one replaces it; the same one again changes nothing.
    let upd = Message::Update { version: 3, services: vec![], backends: vec![], authz: Some(policy(Deny)) };
    assert_eq!(st.apply(upd.clone()).unwrap(), Applied::Changed);
    assert_eq!(st.apply(upd).unwrap(), Applied::Unchanged);
    assert_eq!(st.to_config(&Config::default()).proxy.authz, policy(Deny));

    // A snapshot without one: none pushed any more.
    assert_eq!(st.apply(snapshot()).unwrap(), Applied::Changed);
    assert_eq!(st.authz(), None);
    assert_eq!(st.to_config(&Config::default()).proxy.authz, AuthzConfig::default());
}

#[test]
fn a_policy_in_the_proxys_file_wins_over_a_pushed_one() {
    use crate::authz::DefaultPolicy::{AllAuthenticated, ClusterAuthenticated, Deny};
    let mut st = DiscoveryState::default();
    st.apply(Message::Snapshot { version: 1, services: vec![], backends: vec![], authz: Some(policy(Deny)) }).unwrap();
    let rule = crate::authz::AuthzRule {
        name: "admin".into(),
        path_prefix: Some("/admin".into()),
        model: None,
        allow: vec![],
    };
    let with_rules = AuthzConfig { default: crate::authz::DefaultPolicy::AllUnauthenticated, rules: vec![rule] };
    for (file, want) in [
        (AuthzConfig::default(), policy(Deny)),
        (policy(AllAuthenticated), policy(AllAuthenticated)),
        (policy(ClusterAuthenticated), policy(ClusterAuthenticated)),
        (with_rules.clone(), with_rules),
    ] {
        let mut base = Config::default();
        base.proxy.authz = file.clone();
        let config = st.to_config(&base);
        assert_eq!(config.proxy.authz, want, "file {file:?}");
        crate::Table::from_config(config).unwrap();
    }
}
