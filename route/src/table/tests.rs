use super::*;

const GOOD: &str = r#"
proxy:
  timeouts: { connect: 250ms, response_header: 5s }
inbound: { forward_to: "127.0.0.1:8000" }
backends:
  - { name: v1, endpoints: ["127.0.0.1:9001", "127.0.0.1:9002"] }
  - { name: v2, protocol: http2, endpoints: ["[::1]:9003"] }
services:
  - name: llm
    hosts: [llm.models.svc.cluster.local]
    routes:
      - name: canary
        match: { path: { prefix: /v1 }, model: llama }
        backends: [{ backend: v1, weight: 90 }, { backend: v2, weight: 10 }]
        sticky: { header: x-user }
        timeout: 2s
"#;

fn problems(yaml: &str) -> Vec<String> {
    match Table::from_yaml(yaml) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(errs)) => errs.into_iter().map(|e| e.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn good_config_compiles() {
    let t = Table::from_yaml(GOOD).unwrap();
    assert_eq!(t.settings.connect_timeout, Duration::from_millis(250));
    assert_eq!(t.backends.len(), 2);
    assert_eq!(t.backends[1].protocol, Protocol::Http2);
    let s = t.service("llm.models.svc.cluster.local").unwrap();
    assert!(s.needs_model);
    assert_eq!(s.routes[0].split.total(), 100);
    assert_eq!(s.routes[0].timeout, Some(Duration::from_secs(2)));
    assert_eq!(t.inbound.as_ref().unwrap().forward_to, "127.0.0.1:8000".parse().unwrap());
}

#[test]
fn each_problem_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("backends: [{ name: a, endpoints: [nowhere] }]", "backends[0].endpoints[0]: \"nowhere\" is not an ip:port"),
        (
            "backends: [{ name: a, endpoints: [] }, { name: a, endpoints: [] }]",
            "backends[1].name: duplicate backend name",
        ),
        (
            "backends: [{ name: a, endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"] }]",
            "backends[0].endpoints[1]: duplicate endpoint",
        ),
        ("services: [{ name: s, routes: [] }]", "services[0].routes: a service needs at least one route"),
        (
            "services: [{ name: s, routes: [{ name: r, backends: [{ backend: nope }] }] }]",
            "services[0].routes[0].backends[0].backend: no backend named \"nope\"",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, backends: [{ backend: a, weight: 0 }] }] }]",
            "services[0].routes[0].backends: all backend weights are 0",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, match: { path: { exact: v1 } }, backends: [{ backend: a }] }] }]",
            "services[0].routes[0].match.path: a path must start with `/`",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, match: { path: { exact: /a, prefix: /b } }, backends: [{ backend: a }] }] }]",
            "services[0].routes[0].match.path: give exactly one",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, match: { method: \"GE T\" }, backends: [{ backend: a }] }] }]",
            "services[0].routes[0].match.method",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, match: { headers: [{ name: \"bad header\" }] }, backends: [{ backend: a }] }] }]",
            "services[0].routes[0].match.headers[0].name",
        ),
        (
            "backends: [{ name: a, endpoints: [] }]\nservices: [{ name: s, routes: [{ name: r, backends: [{ backend: a }] }] }, { name: S, routes: [{ name: r, backends: [{ backend: a }] }] }]",
            "services[1].name: host \"S\" is already used by services[0]",
        ),
        ("proxy: { timeouts: { connect: 0ms } }", "proxy.timeouts.connect: must be greater than zero"),
        ("proxy: { limits: { max_header_bytes: 100 } }", "proxy.limits.max_header_bytes"),
        ("proxy: { timeouts: { header_read: 0s } }", "proxy.timeouts.header_read: must be greater than zero"),
        ("proxy: { timeouts: { header_read: 0 } }", "proxy.timeouts.header_read: must be greater than zero"),
        ("proxy: { limits: { max_connections: 0 } }", "proxy.limits.max_connections: must be at least 1"),
        ("inbound: { forward_to: \":80\" }", "inbound.forward_to"),
        ("proxy: { balancer: { in_flight_weight: -1 } }", "proxy.balancer.in_flight_weight: must be a finite number"),
        (
            "backends: [{ name: a, endpoints: [], balancer: { in_flight_weight: -0.5 } }]",
            "backends[0].balancer.in_flight_weight: must be a finite number",
        ),
    ];
    for (yaml, want) in cases {
        let got = problems(yaml);
        assert!(got.iter().any(|p| p.contains(want)), "config:\n{yaml}\nwanted {want:?}, got {got:?}");
    }
}

#[test]
fn cost_weights_come_from_the_proxy_and_each_backend() {
    let t = Table::from_yaml(
        "proxy: { balancer: { in_flight_weight: 0.5, queue_weight: 2 } }\n\
         backends: [{ name: a, endpoints: [] }, { name: b, endpoints: [], balancer: { in_flight_weight: 0 } }]",
    )
    .unwrap();
    let w = |i: usize| t.backends[i].cost;
    assert_eq!((w(0).in_flight, w(0).queue, w(0).kv), (0.5, 2.0, 4.0));
    assert_eq!((w(1).in_flight, w(1).queue), (0.0, 2.0));
}

#[test]
fn parse_errors_are_reported() {
    let got = problems("services: [{ name: s, routes: [], colour: blue }]");
    assert!(got[0].contains("cannot parse config"), "{got:?}");
    let got = problems("proxy: { timeouts: { connect: soon } }");
    assert!(got[0].contains("not a duration"), "{got:?}");
    let got = problems("backends: [{ name: a, endpoints: [], protocol: http3 }]");
    assert!(!got.is_empty());
}

#[test]
fn all_problems_reported_together() {
    let yaml = "backends: [{ name: a, endpoints: [x, y] }]\nproxy: { timeouts: { idle: 0s } }";
    assert_eq!(problems(yaml).len(), 3);
    let text = Table::from_yaml(yaml).unwrap_err().to_string();
    assert!(text.starts_with("invalid config (3 problems)"), "{text}");
    // Process settings (listeners, threads, drain) are the proxy's to check, not the routing table's.
    assert!(Table::from_yaml("proxy: { threads: 100, outbound: nowhere }").is_ok());
}

#[test]
fn empty_config_is_valid() {
    let t = Table::from_yaml("{}").unwrap();
    assert!(t.services.is_empty());
    assert_eq!(t.settings.max_header_bytes, 16 * 1024);
    assert_eq!(t.settings.response_timeout, Duration::from_secs(30));
    assert_eq!(t.settings.ejection.consecutive_failures, 5);
    assert_eq!(t.settings.header_read_timeout, Duration::from_secs(10));
    assert_eq!(t.settings.max_connections, 10_000);
}

#[test]
fn listener_settings_compile() {
    let t = Table::from_yaml("proxy: { timeouts: { header_read: 1500ms }, limits: { max_connections: 1 } }").unwrap();
    assert_eq!(t.settings.header_read_timeout, Duration::from_millis(1500));
    assert_eq!(t.settings.max_connections, 1);
    let t = Table::from_yaml("proxy: { limits: { max_connections: 250000 } }").unwrap();
    assert_eq!(t.settings.max_connections, 250_000);
    for bad in ["proxy: { limits: { max_connections: -1 } }", "proxy: { timeouts: { header_read: soon } }"] {
        let got = problems(bad);
        assert!(got.iter().any(|p| p.contains("cannot parse config")), "{bad}: {got:?}");
    }
}

#[test]
fn example_files_are_valid() {
    for f in ["vane.yaml", "demo.yaml"] {
        let path = format!("{}/../examples/{f}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Table::from_yaml(&text) {
            panic!("{path}: {e}");
        }
    }
}

#[test]
fn coalesce_setting_compiles_with_defaults_and_is_checked() {
    let yaml = |extra: &str| {
        format!(
            "backends: [{{ name: b, endpoints: [\"127.0.0.1:1\"] }}]\nservices:\n  - name: s\n    routes:\n      - name: r\n        backends: [{{ backend: b }}]\n{extra}"
        )
    };
    let t = Table::from_yaml(&yaml("")).unwrap();
    assert_eq!(t.services[0].routes[0].coalesce, None);
    let t = Table::from_yaml(&yaml("        coalesce: {}\n")).unwrap();
    let c = t.services[0].routes[0].coalesce.as_deref().unwrap();
    assert_eq!(c.when, crate::config::CoalesceWhen::Deterministic);
    assert_eq!((c.max_buffer_bytes, c.max_followers, c.across_callers), (4 << 20, 64, false));
    let t = Table::from_yaml(&yaml(
        "        coalesce: { when: always, max_buffer_bytes: 1024, max_followers: 2, across_callers: true, vary: [x-tenant] }\n",
    ))
    .unwrap();
    let c = t.services[0].routes[0].coalesce.as_deref().unwrap();
    assert_eq!(c.when, crate::config::CoalesceWhen::Always);
    assert_eq!((c.max_buffer_bytes, c.max_followers, c.across_callers), (1024, 2, true));
    assert_eq!(c.vary, vec![HeaderName::from_static("x-tenant")]);
    let bad = problems(&yaml("        coalesce: { max_buffer_bytes: 0, max_followers: 0, vary: [\"bad header\"] }\n"));
    assert_eq!(
        bad,
        vec![
            "services[0].routes[0].coalesce.max_buffer_bytes: must be greater than zero",
            "services[0].routes[0].coalesce.max_followers: must be greater than zero",
            "services[0].routes[0].coalesce.vary[0]: \"bad header\" is not a valid header name",
        ]
    );
    assert!(!problems(&yaml("        coalesce: { when: sometimes }\n")).is_empty());
}

#[test]
fn captured_destinations_find_their_service() {
    let t = Table::from_yaml(
        r#"
backends:
  - { name: v1, endpoints: ["10.0.0.1:8000", "10.0.0.2:8000"] }
  - { name: v2, endpoints: ["10.0.0.3:8000"] }
  - { name: emb, endpoints: ["10.0.0.1:8000", "10.0.0.9:9000"] }
services:
  - name: llm
    hosts: [llm.models.svc.cluster.local, "10.96.0.10:80"]
    routes: [{ name: r, backends: [{ backend: v1, weight: 90 }, { backend: v2, weight: 10 }] }]
  - name: embed
    hosts: ["10.96.0.11:80"]
    routes: [{ name: r, backends: [{ backend: emb }] }]
"#,
    )
    .unwrap();
    let at = |a: &str| t.service_at(a.parse().unwrap()).map(|i| &*t.services[i].name);
    assert_eq!(at("10.96.0.10:80"), Some("llm"));
    assert_eq!(at("10.96.0.11:80"), Some("embed"));
    assert_eq!(at("10.0.0.3:8000"), Some("llm"));
    // An endpoint two services send to belongs to the first.
    assert_eq!(at("10.0.0.1:8000"), Some("llm"));
    assert_eq!(at("10.0.0.9:9000"), Some("embed"));
    assert_eq!(at("10.96.0.10:443"), None);
    assert_eq!(at("10.96.0.12:80"), None);
    // An address is not a host name.
    assert!(t.service("10.96.0.10:80").is_none());
    assert_eq!(
        problems(
            "backends: [{ name: b, endpoints: [\"10.0.0.1:1\"] }]\nservices:\n  - { name: a, hosts: [\"10.96.0.1:80\"], routes: [{ name: r, backends: [{ backend: b }] }] }\n  - { name: c, hosts: [\"10.96.0.1:80\"], routes: [{ name: r, backends: [{ backend: b }] }] }"
        ),
        ["services[1].hosts[0]: address 10.96.0.1:80 is already used by services[0]"]
    );
}
