//! The Grafana dashboard and the Prometheus alert rules in `manifests/dashboards/` name only
//! metrics that the binaries export: every `vane_*` name in their PromQL is looked up in the
//! proxy's and the GPU probe's registries, as rendered, so a renamed metric breaks this test
//! rather than a panel.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/dashboards")
}

/// The sample names a text exposition page can show: from each `# TYPE name kind` line, the
/// name and, for counters and histograms, the names of their samples.
fn exported(page: &str, out: &mut BTreeSet<String>) {
    for line in page.lines() {
        let mut parts = line.strip_prefix("# TYPE ").unwrap_or_default().split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        out.insert(name.to_string());
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {}
        }
    }
}

/// The proxy's page with a series in every family (a family without one is not rendered).
fn proxy_page() -> String {
    use vane_proxy::metrics::{Direction, EndpointRow, Metrics, ModelAnswer};
    let m = Metrics::new();
    let name = |s: &str| -> std::sync::Arc<str> { s.into() };
    let (svc, route, backend) = (name("svc"), name("main"), name("v1"));
    let st = m.route_stats(Direction::Outbound, &svc, &route, &backend);
    st.retried("refused");
    st.budget_exhausted();
    m.load_age.observe(0.01);
    m.control_message("table");
    m.config_reload_from("file", true, 2);
    let _ = m.listener("outbound");
    let _ = m.coalesce.stats(&svc, &route);
    m.model.record(&ModelAnswer {
        direction: Direction::Outbound,
        model: name("llama"),
        backend: name("v1"),
        caller: name("team-a"),
        status: 200,
        input_tokens: Some(1),
        output_tokens: Some(2),
        ttft: Some(0.1),
        tpot: Some(0.01),
        gpu_seconds: Some(1.0),
        gpu_hour_price: Some(1.0),
    });
    let row = EndpointRow {
        backend: &backend,
        addr: "127.0.0.1:1".parse().unwrap(),
        rtt_seconds: 0.01,
        token_seconds: Some(0.01),
        report_trust: Some(1.0),
        in_flight: 1,
        ejected: false,
    };
    m.render([row])
}

fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    exported(&proxy_page(), &mut names);
    let probe = vane_gpu_probe::metrics::ProbeMetrics::new();
    exported(&probe.encode(None, false, false), &mut names);
    names
}

/// Every `vane_…` identifier in a PromQL expression (metric names; no label or function
/// name starts so).
fn referenced(expr: &str, out: &mut BTreeSet<String>) {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        if ident(b[i]) && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("vane_") {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
}

/// The PromQL of a dashboard or rule file: every string under a key `expr`, `query` or
/// `definition`.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn names_in(v: &serde_json::Value) -> BTreeSet<String> {
    let mut qs = Vec::new();
    queries(v, &mut qs);
    let mut names = BTreeSet::new();
    for q in &qs {
        referenced(q, &mut names);
    }
    names
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(manifests().join("vane.json")).expect("read vane.json");
    serde_json::from_str(&text).expect("vane.json is JSON")
}

fn alerts() -> serde_json::Value {
    let text = std::fs::read_to_string(manifests().join("alerts.yaml")).expect("read alerts.yaml");
    serde_saphyr::from_str(&text).expect("alerts.yaml is YAML")
}

#[test]
fn every_metric_on_the_dashboard_and_in_the_alerts_is_exported() {
    let have = exported_names();
    for (file, used) in [("vane.json", names_in(&dashboard())), ("alerts.yaml", names_in(&alerts()))] {
        assert!(used.len() >= 5, "{file}: too few metrics read, is the reader broken? {used:?}");
        let missing: Vec<_> = used.difference(&have).collect();
        assert!(missing.is_empty(), "{file} names metrics nobody exports: {missing:?}\nexported: {have:?}");
    }
}

#[test]
fn the_dashboard_has_the_panels_the_issue_asks_for() {
    let d = dashboard();
    let used = names_in(&d);
    for name in [
        "vane_requests_total",
        "vane_model_ttft_seconds_bucket",
        "vane_model_tpot_seconds_bucket",
        "vane_model_output_tokens_total",
        "vane_model_cost_total",
        "vane_probe_queue_depth",
        "vane_probe_kv_cache_usage_ratio",
        "vane_balancer_load_age_seconds_bucket",
    ] {
        assert!(used.contains(name), "no panel reads {name}");
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {p}");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "panel without gridPos: {p}");
    }
    let rules: Vec<String> = alerts()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    assert!(rules.iter().any(|r| r.contains("TTFT")), "{rules:?}");
    assert!(rules.iter().any(|r| r.contains("Stale")), "{rules:?}");
}

#[test]
fn the_reader_finds_names_and_misses_none() {
    let mut names = BTreeSet::new();
    referenced(r#"histogram_quantile(0.9, sum by (le) (rate(vane_a_bucket{x="vane_not"}[5m]))) / vane_b"#, &mut names);
    // A label value in quotes is read too: harmless (it would only make the test stricter).
    assert!(names.contains("vane_a_bucket") && names.contains("vane_b"), "{names:?}");
    let mut have = BTreeSet::new();
    exported("# TYPE vane_x counter\n# TYPE vane_y_seconds histogram\n# TYPE vane_z gauge\n", &mut have);
    for n in ["vane_x_total", "vane_y_seconds_bucket", "vane_y_seconds_count", "vane_z"] {
        assert!(have.contains(n), "{n}");
    }
    assert!(!have.contains("vane_renamed_total"));
}
