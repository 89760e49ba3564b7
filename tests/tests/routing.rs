//! Requests over HTTP/1.1 and h2c reach the backend their route names.

use vane_tests::*;

fn config(a: &Backend, b: &Backend, c: &Backend, inbound: std::net::SocketAddr) -> String {
    format!(
        r#"
inbound: {{ forward_to: "{inbound}" }}
backends:
  - {{ name: a, endpoints: ["{}"] }}
  - {{ name: b, endpoints: ["{}"] }}
  - {{ name: c, protocol: http2, endpoints: ["{}"] }}
services:
  - name: llm
    hosts: [llm.models.svc.cluster.local]
    routes:
      - name: by-header
        match: {{ headers: [{{ name: x-tier, value: gold }}] }}
        backends: [{{ backend: b }}]
      - name: by-model
        match: {{ method: POST, model: llama-70b }}
        backends: [{{ backend: c }}]
      - name: kserve
        match: {{ model: resnet }}
        backends: [{{ backend: b }}]
      - name: exact
        match: {{ path: {{ exact: /special }} }}
        backends: [{{ backend: c }}]
      - name: v1
        match: {{ path: {{ prefix: /v1 }} }}
        backends: [{{ backend: a }}]
"#,
        a.addr, b.addr, c.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_header_model_over_h1_and_h2c() {
    let (a, b, c, local) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("local").await,
    );
    let proxy = Proxy::start(&config(&a, &b, &c, local.addr));
    for (label, client, inbound) in [
        ("h1", h1_client(proxy.outbound), h1_client(proxy.inbound)),
        ("h2c", h2_client(proxy.outbound), h2_client(proxy.inbound)),
    ] {
        let r = get(&client, "llm", "/v1/models", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.served_by()), (200, "a"), "{label}: {r:?}");
        let r = get(&client, "LLM.models.svc.cluster.local:4140", "/v1/models", &[]).await.unwrap();
        assert_eq!(r.served_by(), "a", "{label}: alias host with port");
        let r = get(&client, "llm", "/v1/models", &[("x-tier", "gold")]).await.unwrap();
        assert_eq!(r.served_by(), "b", "{label}: header match");
        let body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"llama-70b","stream":false}"#;
        let r = send(&client, "POST", "llm", "/v1/chat/completions", &[("content-type", "application/json")], body)
            .await
            .unwrap();
        assert_eq!(r.served_by(), "c", "{label}: model match");
        // the body read to find the model reaches the endpoint unchanged
        let echoed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echoed["body"], body, "{label}");
        // the endpoint sees the caller's authority, over HTTP/2 for an http2 backend
        assert_eq!(echoed["host"], "llm");
        assert_eq!(echoed["version"], "HTTP/2.0");
        let r = send(&client, "POST", "llm", "/v1/chat/completions", &[], r#"{"model":"llama-8b"}"#).await.unwrap();
        assert_eq!(r.served_by(), "a", "{label}: other model falls through");
        let r = send(&client, "POST", "llm", "/v2/models/resnet/infer", &[], "{}").await.unwrap();
        assert_eq!(r.served_by(), "b", "{label}: kserve path model");
        let r = get(&client, "llm", "/special", &[]).await.unwrap();
        assert_eq!(r.served_by(), "c", "{label}: exact path");
        let r = get(&client, "llm", "/nothing", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.proxy_error()), (404, "no-route"), "{label}");
        let r = get(&client, "unknown", "/v1", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.proxy_error()), (503, "unknown-service"), "{label}");
        // inbound: everything goes to the local server
        let r = get(&inbound, "whatever", "/v1/models", &[]).await.unwrap();
        assert_eq!(r.served_by(), "local", "{label}: inbound");
    }
    let m = proxy.metrics();
    assert!(
        metric(
            &m,
            "vane_requests_total",
            &["service=\"llm\"", "route=\"by-model\"", "backend=\"c\"", "status=\"200\""]
        )
        .unwrap()
            >= 2.0,
        "{m}"
    );
    assert!(metric(&m, "vane_request_duration_seconds_count", &["route=\"v1\""]).unwrap() >= 4.0);
    assert!(m.contains("vane_endpoint_rtt_ewma_seconds{"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&split_config(&[("a", &[a.addr], 1)], ""));
    assert_eq!(admin_get(proxy.admin, "/live").unwrap().0, 200);
    let (s, body) = admin_get(proxy.admin, "/ready").unwrap();
    assert_eq!((s, body.trim()), (200, "ready (config version 1)"), "{body:?}");
    let (s, body) = admin_get(proxy.admin, "/config").unwrap();
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["config"]["services"][0]["name"], "svc");
    assert_eq!(admin_get(proxy.admin, "/nope").unwrap().0, 404);
    let (s, m) = admin_get(proxy.admin, "/metrics").unwrap();
    assert_eq!(s, 200);
    assert!(m.contains("# TYPE vane_endpoint_rtt_ewma_seconds gauge"), "{m}");
    assert!(m.contains("vane_config_version 1"), "{m}");
    assert!(m.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let (h1b, h2b) = (Backend::start("h1").await, Backend::start("h2").await);
    let cfg = format!(
        "backends:\n  - {{ name: a, endpoints: [\"{}\"] }}\n  - {{ name: b, protocol: http2, endpoints: [\"{}\"] }}\n\
         services:\n  - {{ name: one, routes: [{{ name: r, backends: [{{ backend: a }}] }}] }}\n  - {{ name: two, routes: [{{ name: r, backends: [{{ backend: b }}] }}] }}\n",
        h1b.addr, h2b.addr
    );
    let proxy = Proxy::start(&cfg);
    let client = h1_client(proxy.outbound);
    for _ in 0..50 {
        assert_eq!(get(&client, "one", "/", &[]).await.unwrap().status, 200);
        assert_eq!(send(&client, "POST", "two", "/", &[], "x").await.unwrap().status, 200);
    }
    // Sequential requests reuse one keep-alive connection; HTTP/2 multiplexes over one.
    assert_eq!(h1b.conns(), 1);
    assert_eq!(h2b.conns(), 1);
    // Concurrent HTTP/2 requests share the connection too.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = h2_client(proxy.outbound);
        tasks.push(tokio::spawn(async move { get(&c, "two", "/", &[]).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h2b.conns(), 1);
}
