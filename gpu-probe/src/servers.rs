//! From a model server's metrics page to the three figures routing needs: how many requests
//! wait, how many run, and how full the KV cache is.
//!
//! Each server names these differently:
//!
//! | figure | vLLM | SGLang | Triton (+ TensorRT-LLM backend) | TGI |
//! |---|---|---|---|---|
//! | queue depth | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `nv_inference_pending_request_count` + `nv_trt_llm_request_metrics{request_type="waiting"}` | `tgi_queue_size` |
//! | running | `vllm:num_requests_running` | `sglang:num_running_reqs` | `nv_trt_llm_request_metrics{request_type="active"}` (else `"scheduled"`) | `tgi_batch_current_size` |
//! | KV cache use (0..1) | `vllm:kv_cache_usage_perc`, else the older `vllm:gpu_cache_usage_perc` | `sglang:token_usage` | `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}`, else `"used"`/`"max"` | — |
//!
//! A pod may run several models or engines (vLLM data-parallel engines, Triton models, SGLang
//! DP ranks), each one series. Counts of requests are **summed** over series, since the pod's
//! queue is all of them. KV-cache use is a ratio, so it is the **maximum** over series: a
//! request may land on the fullest engine, and routing should back off before any engine
//! starts to preempt. SGLang repeats a scheduler's figures under `tp_rank`/`pp_rank`/
//! `moe_ep_rank` labels; series that differ only in those are one scheduler and are not added
//! twice.
//!
//! Values that are not finite are ignored, negative counts read as 0 and ratios are clamped
//! to 0..1, so one odd series cannot poison the figures.
//!
//! A page also gives the running totals that the decode speed is measured from
//! ([`DecodeCounters`]; the rates themselves are computed across scrapes in [`crate::decode`]):
//!
//! | counter | vLLM | SGLang | Triton | TGI |
//! |---|---|---|---|---|
//! | tokens generated | `vllm:generation_tokens_total` (per engine step) | `sglang:generation_tokens_total` (when a request ends) | — | `tgi_request_generated_tokens_sum` (when a request ends) |
//! | server's own tokens/s | — | `sglang:gen_throughput` (every few decode steps) | — | — |
//! | time per output token (histogram `_sum`/`_count`) | `vllm:time_per_output_token_seconds`, else `vllm:inter_token_latency_seconds` | `sglang:inter_token_latency_seconds` | — | `tgi_request_mean_time_per_token_duration` |
//!
//! They are summed over series like the request counts.

use crate::expo::{self, Item, Labels, ParseError};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The model servers whose metric names the probe understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// vLLM (`vllm:` names).
    Vllm,
    /// SGLang (`sglang:` names).
    Sglang,
    /// NVIDIA Triton Inference Server, including its TensorRT-LLM backend.
    Triton,
    /// Hugging Face Text Generation Inference.
    Tgi,
}

/// Which server to read for: a fixed kind, or whichever the page shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerChoice {
    /// Detect the kind from the names on each page.
    #[default]
    Auto,
    /// Read the names of this kind only.
    Fixed(ServerKind),
}

/// The load figures read from one page. `None` means the page did not report it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Requests waiting in the server's queue.
    pub queue_depth: Option<f64>,
    /// Requests being processed.
    pub running: Option<f64>,
    /// KV-cache use, 0..1.
    pub kv_cache_usage: Option<f64>,
}

/// The running totals one page gives about decoding, for [`crate::decode`] to turn into rates
/// across scrapes. `None` means the page does not have it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeCounters {
    /// Output tokens generated so far (a counter).
    pub generated_tokens: Option<f64>,
    /// Whether [`DecodeCounters::generated_tokens`] only moves when a request ends (SGLang,
    /// TGI) rather than as tokens are made (vLLM).
    pub counted_at_finish: bool,
    /// The server's own figure of tokens generated per second (a gauge: SGLang's
    /// `gen_throughput`).
    pub tokens_per_s: Option<f64>,
    /// The time-per-output-token histogram's `_sum`, in seconds (a counter).
    pub token_time_sum: Option<f64>,
    /// The same histogram's `_count` (a counter).
    pub token_time_count: Option<f64>,
}

/// What one page said.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The server the figures were read for.
    pub kind: ServerKind,
    /// The figures.
    pub figures: Figures,
    /// The totals the decode speed is measured from.
    pub decode: DecodeCounters,
}

/// Why a page gave no figures.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The page is not valid exposition text.
    #[error("malformed metrics page: {0}")]
    Malformed(#[from] ParseError),
    /// The page is valid but holds none of the names of the configured server.
    #[error("the page has none of the {0} load metrics")]
    NoLoadMetrics(ServerKind),
    /// Auto-detection found no known server's names.
    #[error("the page has no vLLM, SGLang, Triton or TGI load metrics")]
    Unrecognised,
}

/// Reads a page for the configured server (or detects it) in one pass.
pub fn read_page(page: &str, choice: ServerChoice) -> Result<Reading, ReadError> {
    let acc = accumulate(page)?;
    let kind = match choice {
        ServerChoice::Fixed(kind) => kind,
        ServerChoice::Auto => acc.detect().ok_or(ReadError::Unrecognised)?,
    };
    let figures = acc.figures(kind);
    if figures == Figures::default() {
        return Err(ReadError::NoLoadMetrics(kind));
    }
    Ok(Reading { kind, figures, decode: acc.decode(kind) })
}

/// The server whose load names appear on the page, if any. Where names of several appear
/// (a gateway that re-exports them), the one with more figures wins, then the first in the
/// order vLLM, SGLang, Triton, TGI.
pub fn detect(page: &str) -> Result<Option<ServerKind>, ParseError> {
    Ok(accumulate(page)?.detect())
}

fn accumulate(page: &str) -> Result<Accumulator, ParseError> {
    let mut acc = Accumulator::default();
    for item in expo::samples(page) {
        if let Item::Sample(s) = item? {
            acc.add(s.name, &s.labels, s.value);
        }
    }
    Ok(acc)
}

// === impl ServerKind ===

impl ServerKind {
    /// Every kind, in detection order.
    pub const ALL: [ServerKind; 4] = [ServerKind::Vllm, ServerKind::Sglang, ServerKind::Triton, ServerKind::Tgi];

    /// The lower-case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Vllm => "vllm",
            ServerKind::Sglang => "sglang",
            ServerKind::Triton => "triton",
            ServerKind::Tgi => "tgi",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ServerChoice::Auto);
        }
        ServerKind::ALL
            .into_iter()
            .find(|k| s.eq_ignore_ascii_case(k.as_str()))
            .map(ServerChoice::Fixed)
            .ok_or_else(|| format!("unknown server `{s}` (use vllm, sglang, triton, tgi or auto)"))
    }
}

impl fmt::Display for ServerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerChoice::Auto => f.write_str("auto"),
            ServerChoice::Fixed(k) => k.fmt(f),
        }
    }
}

// === impl Accumulator ===

/// Labels under which SGLang repeats one scheduler's figures once per parallel rank.
const SGLANG_RANK_LABELS: &[&str] = &["tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank"];

/// Everything every kind could want from one page, gathered in a single pass so that
/// detection costs nothing extra.
#[derive(Debug, Default)]
struct Accumulator {
    vllm_waiting: Sum,
    vllm_running: Sum,
    vllm_kv: Max,
    vllm_kv_old: Max,
    sglang_queue: Sum,
    sglang_running: Sum,
    sglang_kv: Max,
    triton_pending: Sum,
    trt_waiting: Sum,
    trt_active: Sum,
    trt_scheduled: Sum,
    trt_kv_fraction: Max,
    trt_kv_blocks: Vec<BlockPair>,
    tgi_queue: Sum,
    tgi_running: Sum,
    vllm_generated: Sum,
    vllm_tpot: Hist,
    vllm_itl: Hist,
    sglang_generated: Sum,
    sglang_throughput: Sum,
    sglang_itl: Hist,
    tgi_generated: Sum,
    tgi_tpot: Hist,
}

impl Accumulator {
    fn add(&mut self, name: &str, labels: &Labels<'_>, value: f64) {
        if !value.is_finite() {
            return;
        }
        match name {
            "vllm:num_requests_waiting" => self.vllm_waiting.add(labels, &[], value),
            "vllm:num_requests_running" => self.vllm_running.add(labels, &[], value),
            "vllm:kv_cache_usage_perc" => self.vllm_kv.add(value),
            "vllm:gpu_cache_usage_perc" => self.vllm_kv_old.add(value),
            "sglang:num_queue_reqs" => self.sglang_queue.add(labels, SGLANG_RANK_LABELS, value),
            "sglang:num_running_reqs" => self.sglang_running.add(labels, SGLANG_RANK_LABELS, value),
            "sglang:token_usage" => self.sglang_kv.add(value),
            "nv_inference_pending_request_count" => self.triton_pending.add(labels, &[], value),
            "nv_trt_llm_request_metrics" => {
                let Some(kind) = labels.value("request_type") else {
                    return;
                };
                let sum = if kind.eq_str("waiting") {
                    &mut self.trt_waiting
                } else if kind.eq_str("active") {
                    &mut self.trt_active
                } else if kind.eq_str("scheduled") {
                    &mut self.trt_scheduled
                } else {
                    return;
                };
                sum.add(labels, &["request_type"], value);
            }
            "nv_trt_llm_kv_cache_block_metrics" => {
                let Some(kind) = labels.value("kv_cache_block_type") else {
                    return;
                };
                if kind.eq_str("fraction") {
                    self.trt_kv_fraction.add(value);
                } else if kind.eq_str("used") || kind.eq_str("max") {
                    let key = series_key(labels, &["kv_cache_block_type"]);
                    let pair = match self.trt_kv_blocks.iter_mut().find(|p| p.key == key) {
                        Some(p) => p,
                        None => {
                            self.trt_kv_blocks.push(BlockPair { key, used: None, max: None });
                            let last = self.trt_kv_blocks.len() - 1;
                            &mut self.trt_kv_blocks[last]
                        }
                    };
                    if kind.eq_str("used") {
                        pair.used = Some(value);
                    } else {
                        pair.max = Some(value);
                    }
                }
            }
            "tgi_queue_size" => self.tgi_queue.add(labels, &[], value),
            "tgi_batch_current_size" => self.tgi_running.add(labels, &[], value),
            "vllm:generation_tokens_total" => self.vllm_generated.add(labels, &[], value),
            "vllm:time_per_output_token_seconds_sum" => self.vllm_tpot.sum.add(labels, &[], value),
            "vllm:time_per_output_token_seconds_count" => self.vllm_tpot.count.add(labels, &[], value),
            "vllm:inter_token_latency_seconds_sum" => self.vllm_itl.sum.add(labels, &[], value),
            "vllm:inter_token_latency_seconds_count" => self.vllm_itl.count.add(labels, &[], value),
            "sglang:generation_tokens_total" => self.sglang_generated.add(labels, SGLANG_RANK_LABELS, value),
            "sglang:gen_throughput" => self.sglang_throughput.add(labels, SGLANG_RANK_LABELS, value),
            "sglang:inter_token_latency_seconds_sum" => self.sglang_itl.sum.add(labels, SGLANG_RANK_LABELS, value),
            "sglang:inter_token_latency_seconds_count" => self.sglang_itl.count.add(labels, SGLANG_RANK_LABELS, value),
            "tgi_request_generated_tokens_sum" => self.tgi_generated.add(labels, &[], value),
            "tgi_request_mean_time_per_token_duration_sum" => self.tgi_tpot.sum.add(labels, &[], value),
            "tgi_request_mean_time_per_token_duration_count" => self.tgi_tpot.count.add(labels, &[], value),
            _ => {}
        }
    }

    fn figures(&self, kind: ServerKind) -> Figures {
        let f = match kind {
            ServerKind::Vllm => Figures {
                queue_depth: self.vllm_waiting.get(),
                running: self.vllm_running.get(),
                kv_cache_usage: self.vllm_kv.get().or(self.vllm_kv_old.get()),
            },
            ServerKind::Sglang => Figures {
                queue_depth: self.sglang_queue.get(),
                running: self.sglang_running.get(),
                kv_cache_usage: self.sglang_kv.get(),
            },
            ServerKind::Triton => Figures {
                // Triton's scheduler queue and the TensorRT-LLM batcher's waiting queue are
                // successive stages, so a request is in at most one of them.
                queue_depth: add_opt(self.triton_pending.get(), self.trt_waiting.get()),
                running: self.trt_active.get().or(self.trt_scheduled.get()),
                kv_cache_usage: self.trt_kv_fraction.get().or_else(|| self.trt_block_ratio()),
            },
            ServerKind::Tgi => {
                Figures { queue_depth: self.tgi_queue.get(), running: self.tgi_running.get(), kv_cache_usage: None }
            }
        };
        Figures {
            queue_depth: f.queue_depth.map(|v| v.max(0.0)),
            running: f.running.map(|v| v.max(0.0)),
            kv_cache_usage: f.kv_cache_usage.map(|v| v.clamp(0.0, 1.0)),
        }
    }

    fn decode(&self, kind: ServerKind) -> DecodeCounters {
        let with = |generated: &Sum, counted_at_finish: bool, hist: &Hist| DecodeCounters {
            generated_tokens: generated.get(),
            counted_at_finish,
            tokens_per_s: None,
            token_time_sum: hist.sum.get(),
            token_time_count: hist.count.get(),
        };
        match kind {
            // The older name and its replacement carry the same observations; use one.
            ServerKind::Vllm => {
                let hist = if self.vllm_tpot.count.get().is_some() { &self.vllm_tpot } else { &self.vllm_itl };
                with(&self.vllm_generated, false, hist)
            }
            ServerKind::Sglang => DecodeCounters {
                tokens_per_s: self.sglang_throughput.get(),
                ..with(&self.sglang_generated, true, &self.sglang_itl)
            },
            ServerKind::Triton => DecodeCounters::default(),
            ServerKind::Tgi => with(&self.tgi_generated, true, &self.tgi_tpot),
        }
    }

    fn trt_block_ratio(&self) -> Option<f64> {
        self.trt_kv_blocks
            .iter()
            .filter_map(|p| match (p.used, p.max) {
                (Some(used), Some(max)) if max > 0.0 => Some(used / max),
                _ => None,
            })
            .reduce(f64::max)
    }

    fn detect(&self) -> Option<ServerKind> {
        let count = |f: Figures| {
            usize::from(f.queue_depth.is_some())
                + usize::from(f.running.is_some())
                + usize::from(f.kv_cache_usage.is_some())
        };
        let mut best: Option<(ServerKind, usize)> = None;
        for kind in ServerKind::ALL {
            let n = count(self.figures(kind));
            if n > 0 && best.is_none_or(|(_, m)| n > m) {
                best = Some((kind, n));
            }
        }
        best.map(|(k, _)| k)
    }
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// A sum over series, where series that differ only in `ignored` labels count once (their
/// largest value).
#[derive(Debug, Default)]
struct Sum {
    /// One entry per distinct series key. Pages have a handful of series per name, so a
    /// vector beats a map.
    series: Vec<(String, f64)>,
}

impl Sum {
    fn add(&mut self, labels: &Labels<'_>, ignored: &[&str], value: f64) {
        let key = series_key(labels, ignored);
        match self.series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = v.max(value),
            None => self.series.push((key, value)),
        }
    }

    fn get(&self) -> Option<f64> {
        (!self.series.is_empty()).then(|| self.series.iter().map(|(_, v)| v.max(0.0)).sum())
    }
}

/// A histogram's `_sum` and `_count`, each summed over series.
#[derive(Debug, Default)]
struct Hist {
    sum: Sum,
    count: Sum,
}

#[derive(Debug, Default)]
struct Max(Option<f64>);

impl Max {
    fn add(&mut self, value: f64) {
        self.0 = Some(self.0.map_or(value, |m| m.max(value)));
    }

    fn get(&self) -> Option<f64> {
        self.0
    }
}

#[derive(Debug)]
struct BlockPair {
    key: String,
    used: Option<f64>,
    max: Option<f64>,
}

/// A canonical key for a series: its labels other than `ignored`, sorted by name.
fn series_key(labels: &Labels<'_>, ignored: &[&str]) -> String {
    let mut pairs: Vec<(&str, &str)> =
        labels.iter().filter(|(n, _)| !ignored.contains(n)).map(|(n, v)| (n, v.as_raw())).collect();
    pairs.sort_unstable();
    let mut key = String::new();
    for (n, v) in pairs {
        key.push_str(n);
        key.push('=');
        key.push_str(v);
        key.push('\u{0}');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(kind: ServerKind) -> ServerChoice {
        ServerChoice::Fixed(kind)
    }

    #[test]
    fn choice_parses_names_in_any_case() {
        assert_eq!("auto".parse::<ServerChoice>(), Ok(ServerChoice::Auto));
        assert_eq!("vLLM".parse::<ServerChoice>(), Ok(fixed(ServerKind::Vllm)));
        assert_eq!("TGI".parse::<ServerChoice>(), Ok(fixed(ServerKind::Tgi)));
        assert!("ollama".parse::<ServerChoice>().unwrap_err().contains("unknown server"));
        for kind in ServerKind::ALL {
            assert_eq!(fixed(kind).to_string().parse::<ServerChoice>(), Ok(fixed(kind)));
        }
    }

    #[test]
    fn sums_counts_and_takes_the_largest_ratio() {
        let page = "vllm:num_requests_waiting{engine=\"0\"} 2\n\
                    vllm:num_requests_waiting{engine=\"1\"} 3\n\
                    vllm:num_requests_running{engine=\"0\"} 4\n\
                    vllm:kv_cache_usage_perc{engine=\"0\"} 0.25\n\
                    vllm:kv_cache_usage_perc{engine=\"1\"} 0.5\n";
        let r = read_page(page, ServerChoice::Auto).unwrap();
        assert_eq!(r.kind, ServerKind::Vllm);
        assert_eq!(r.figures, Figures { queue_depth: Some(5.0), running: Some(4.0), kv_cache_usage: Some(0.5) });
    }

    #[test]
    fn the_new_vllm_kv_name_wins_over_the_old_one() {
        let both = "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n";
        let old = "vllm:gpu_cache_usage_perc 0.9\n";
        assert_eq!(read_page(both, ServerChoice::Auto).unwrap().figures.kv_cache_usage, Some(0.1));
        assert_eq!(read_page(old, ServerChoice::Auto).unwrap().figures.kv_cache_usage, Some(0.9));
    }

    #[test]
    fn sglang_rank_copies_count_once_but_dp_ranks_add_up() {
        let page = "sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"0\"} 4\n\
                    sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"1\"} 4\n\
                    sglang:num_queue_reqs{model_name=\"m\",dp_rank=\"1\",tp_rank=\"2\"} 1\n";
        let r = read_page(page, fixed(ServerKind::Sglang)).unwrap();
        assert_eq!(r.figures.queue_depth, Some(5.0));
    }

    #[test]
    fn odd_values_cannot_poison_the_figures() {
        let page = "tgi_queue_size NaN\ntgi_queue_size{shard=\"1\"} -3\n\
                    tgi_batch_current_size +Inf\ntgi_batch_current_size{shard=\"1\"} 2\n\
                    vllm:kv_cache_usage_perc 1.7\n";
        let tgi = read_page(page, fixed(ServerKind::Tgi)).unwrap().figures;
        assert_eq!(tgi, Figures { queue_depth: Some(0.0), running: Some(2.0), kv_cache_usage: None });
        let vllm = read_page(page, fixed(ServerKind::Vllm)).unwrap().figures;
        assert_eq!(vllm.kv_cache_usage, Some(1.0));
    }

    #[test]
    fn triton_kv_falls_back_to_used_over_max_per_model() {
        let page = "\
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"a\",version=\"1\"} 100
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"a\",version=\"1\"} 25
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"b\",version=\"1\"} 30
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"b\",version=\"1\"} 40
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"c\",version=\"1\"} 0
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"c\",version=\"1\"} 5
nv_trt_llm_request_metrics{model=\"a\",request_type=\"scheduled\",version=\"1\"} 7
";
        let f = read_page(page, ServerChoice::Auto).unwrap().figures;
        assert_eq!(f.kv_cache_usage, Some(0.75));
        assert_eq!(f.running, Some(7.0), "scheduled stands in for a missing active count");
        assert_eq!(f.queue_depth, None);
    }

    #[test]
    fn detection_prefers_the_kind_with_more_figures() {
        let page = "tgi_queue_size 1\nsglang:num_queue_reqs 1\nsglang:token_usage 0.5\n";
        assert_eq!(detect(page).unwrap(), Some(ServerKind::Sglang));
        assert_eq!(detect("tgi_queue_size 1\nvllm:num_requests_waiting 1\n").unwrap(), Some(ServerKind::Vllm));
        assert_eq!(detect("process_cpu_seconds_total 1\n").unwrap(), None);
        assert!(detect("vllm:num_requests_waiting{ 1\n").is_err());
    }

    #[test]
    fn decode_counters_are_summed_per_kind() {
        let vllm = "vllm:num_requests_running{engine=\"0\"} 3\n\
                    vllm:generation_tokens_total{engine=\"0\"} 100\n\
                    vllm:generation_tokens_total{engine=\"1\"} 50\n\
                    vllm:inter_token_latency_seconds_sum{engine=\"0\"} 9\n\
                    vllm:inter_token_latency_seconds_count{engine=\"0\"} 300\n\
                    vllm:time_per_output_token_seconds_sum{engine=\"0\"} 4\n\
                    vllm:time_per_output_token_seconds_count{engine=\"0\"} 200\n\
                    vllm:time_per_output_token_seconds_sum{engine=\"1\"} 2\n\
                    vllm:time_per_output_token_seconds_count{engine=\"1\"} 100\n";
        let d = read_page(vllm, ServerChoice::Auto).unwrap().decode;
        assert_eq!(
            d,
            DecodeCounters {
                generated_tokens: Some(150.0),
                counted_at_finish: false,
                tokens_per_s: None,
                token_time_sum: Some(6.0),
                token_time_count: Some(300.0),
            }
        );
        // Only the newer histogram name: that one.
        let newer = "vllm:num_requests_running 1\nvllm:inter_token_latency_seconds_sum 9\n\
                     vllm:inter_token_latency_seconds_count 300\n";
        let d = read_page(newer, ServerChoice::Auto).unwrap().decode;
        assert_eq!((d.token_time_sum, d.token_time_count, d.generated_tokens), (Some(9.0), Some(300.0), None));

        let sglang = "sglang:num_running_reqs{tp_rank=\"0\"} 2\n\
                      sglang:gen_throughput{tp_rank=\"0\"} 800\nsglang:gen_throughput{tp_rank=\"1\"} 800\n\
                      sglang:generation_tokens_total{model_name=\"m\"} 1000\n";
        let d = read_page(sglang, ServerChoice::Auto).unwrap().decode;
        assert_eq!((d.tokens_per_s, d.generated_tokens, d.counted_at_finish), (Some(800.0), Some(1000.0), true));

        let tgi = "tgi_batch_current_size 4\ntgi_request_generated_tokens_sum 5000\n\
                   tgi_request_generated_tokens_count 20\n";
        let d = read_page(tgi, ServerChoice::Auto).unwrap().decode;
        assert_eq!((d.generated_tokens, d.counted_at_finish, d.token_time_count), (Some(5000.0), true, None));

        let triton = "nv_inference_pending_request_count 1\nvllm:generation_tokens_total 5\n";
        let d = read_page(triton, ServerChoice::Fixed(ServerKind::Triton)).unwrap().decode;
        assert_eq!(d, DecodeCounters::default(), "Triton exports no token counter");
    }

    #[test]
    fn pages_without_load_metrics_are_errors() {
        let page = "# HELP process_cpu_seconds_total CPU.\nprocess_cpu_seconds_total 1\n";
        assert_eq!(read_page(page, ServerChoice::Auto), Err(ReadError::Unrecognised));
        assert_eq!(read_page(page, fixed(ServerKind::Triton)), Err(ReadError::NoLoadMetrics(ServerKind::Triton)));
        assert!(matches!(read_page("vllm:x{a=b} 1", ServerChoice::Auto), Err(ReadError::Malformed(_))));
    }
}
