//! Each server's real exposition format, read into the figures routing uses.

mod support;

use support::fixture;
use vane_gpu_probe::expo;
use vane_gpu_probe::servers::{self, Figures, ReadError, ServerChoice, ServerKind};

fn figures(q: Option<f64>, r: Option<f64>, kv: Option<f64>) -> Figures {
    Figures { queue_depth: q, running: r, kv_cache_usage: kv }
}

#[test]
fn every_fixture_reads_into_the_expected_figures() {
    use ServerKind::*;
    let cases = [
        // Two data-parallel engines: counts add up, the fuller KV cache counts.
        ("vllm.txt", Vllm, figures(Some(5.0), Some(21.0), Some(0.4215))),
        // vLLM 0.6: the older `vllm:gpu_cache_usage_perc`.
        ("vllm_legacy.txt", Vllm, figures(Some(1.0), Some(7.0), Some(0.0837))),
        ("sglang.txt", Sglang, figures(Some(17.0), Some(46.0), Some(0.61))),
        // Triton's own queue (1 request in `preprocessing`) plus the TensorRT-LLM batcher's 6.
        ("triton_trtllm.txt", Triton, figures(Some(7.0), Some(30.0), Some(0.2934))),
        // Without the `fraction` series: used / max blocks = 1337 / 4557.
        ("triton_trtllm_blocks.txt", Triton, figures(Some(7.0), Some(30.0), Some(1337.0 / 4557.0))),
        // Plain Triton models: pending requests summed over models and versions; nothing else.
        ("triton_plain.txt", Triton, figures(Some(9.0), None, None)),
        ("tgi.txt", Tgi, figures(Some(4.0), Some(32.0), None)),
    ];
    for (file, kind, expected) in cases {
        let page = fixture(file);
        let auto = servers::read_page(&page, ServerChoice::Auto).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(auto.kind, kind, "{file}: detected kind");
        assert_eq!(auto.figures, expected, "{file}: figures");
        let fixed = servers::read_page(&page, ServerChoice::Fixed(kind)).unwrap();
        assert_eq!(fixed.figures, expected, "{file}: figures with the kind given");
        assert_eq!(servers::detect(&page).unwrap(), Some(kind), "{file}: detect");
    }
}

#[test]
fn fixtures_are_genuine_exposition_text() {
    for file in [
        "vllm.txt",
        "vllm_legacy.txt",
        "sglang.txt",
        "triton_trtllm.txt",
        "triton_trtllm_blocks.txt",
        "triton_plain.txt",
        "tgi.txt",
        "no_load_metrics.txt",
    ] {
        let page = fixture(file);
        let items: Vec<_> = expo::samples(&page).collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{file}: {e}"));
        let samples = items.iter().filter(|i| matches!(i, expo::Item::Sample(_))).count();
        let types = items.iter().filter(|i| matches!(i, expo::Item::Type { .. })).count();
        assert!(samples > 5 && types > 3, "{file}: {samples} samples, {types} TYPE lines");
    }
    // The histogram buckets of the vLLM page, with `le` last as prometheus_client writes it.
    let page = fixture("vllm.txt");
    let buckets: Vec<_> = expo::parse(&page)
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "vllm:time_to_first_token_seconds_bucket")
        .collect();
    assert_eq!(buckets.len(), 2 * 23);
    assert_eq!(buckets[22].labels.get("le").as_deref(), Some("+Inf"));
    assert_eq!(buckets[22].labels.iter().last().map(|(n, _)| n), Some("le"));
    // An escaped quote inside a label value.
    let info = expo::parse(&page).unwrap().into_iter().find(|s| s.name == "vllm:lora_requests_info").unwrap();
    assert_eq!(info.labels.get("running_lora_adapters").as_deref(), Some("sql-lora,chat \"v2\""));
}

#[test]
fn the_wrong_kind_finds_nothing() {
    let page = fixture("vllm.txt");
    assert_eq!(
        servers::read_page(&page, ServerChoice::Fixed(ServerKind::Sglang)),
        Err(ReadError::NoLoadMetrics(ServerKind::Sglang))
    );
}

#[test]
fn malformed_and_unrelated_pages_are_errors() {
    for (file, line) in [("malformed_truncated.txt", 35), ("malformed_html.txt", 1), ("malformed_label.txt", 3)] {
        match servers::read_page(&fixture(file), ServerChoice::Auto) {
            Err(ReadError::Malformed(e)) => assert_eq!(e.line, line, "{file}: {e}"),
            other => panic!("{file}: expected a malformed page, got {other:?}"),
        }
    }
    assert_eq!(servers::read_page(&fixture("no_load_metrics.txt"), ServerChoice::Auto), Err(ReadError::Unrecognised));
    assert_eq!(servers::read_page("", ServerChoice::Auto), Err(ReadError::Unrecognised));
}

#[test]
fn fixtures_give_the_decode_counters_their_servers_export() {
    let read = |file: &str| servers::read_page(&fixture(file), ServerChoice::Auto).unwrap().decode;
    // vLLM: the token counter and the inter-token histogram, summed over both engines.
    let v = read("vllm.txt");
    assert_eq!(v.generated_tokens, Some(913_233.0 + 899_120.0));
    assert_eq!(v.token_time_count, Some(2.0 * 908_638.0));
    assert!((v.token_time_sum.unwrap() - (18_773.1 + 18_450.6)).abs() < 1e-6);
    assert!(!v.counted_at_finish);
    // SGLang: its own throughput gauge, and a counter that moves as requests end.
    let s = read("sglang.txt");
    assert!((s.tokens_per_s.unwrap() - 2187.449).abs() < 1e-3, "{s:?}");
    assert_eq!(s.generated_tokens, Some(7.557572e6));
    assert!(s.counted_at_finish);
    // Triton, TGI's fixture and the old vLLM page export none of them.
    for file in ["triton_trtllm.txt", "triton_plain.txt", "tgi.txt", "vllm_legacy.txt"] {
        let d = read(file);
        assert_eq!((d.generated_tokens, d.tokens_per_s, d.token_time_count), (None, None, None), "{file}");
    }
}
