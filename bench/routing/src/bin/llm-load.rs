//! `llm-load`: an open-loop LLM load generator (Poisson arrivals of streaming completions,
//! TTFT and end-to-end latency from the scheduled arrival), with a closed-loop mode to find an
//! instance's capacity. Prints one JSON summary on stdout; `--csv` adds one row per request.
//!
//! ```sh
//! llm-load --url http://127.0.0.1:4140/v1/completions --model sim --rate 40 --warmup 5 --duration 30
//! llm-load --url http://127.0.0.1:9001/v1/completions --model sim --closed 96 --duration 10
//! llm-load --url http://127.0.0.1:4140/v1/completions --model sim --rate 20 --distinct 100 --zipf 1 --temperature 0
//! llm-load --policy oracle --backends http://127.0.0.1:9001,http://127.0.0.1:9002@10 --model sim --rate 40
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use vane_routing_bench::dist::Dist;
use vane_routing_bench::load::{self, Config, Mode};
use vane_routing_bench::policy::{Backend, Policy};

/// Open-loop (or closed-loop) LLM load generator for loopback targets.
#[derive(Debug, Parser)]
#[command(name = "llm-load")]
struct Args {
    /// Completion endpoint, e.g. http://127.0.0.1:4140/v1/completions (repeatable; loopback only).
    #[arg(long = "url", required_unless_present = "backends", conflicts_with = "backends")]
    urls: Vec<http::Uri>,
    /// Client-side balancing (open loop): least_request (fewest outstanding from this client) or
    /// oracle (soonest estimated finish from each backend's /state); needs --backends.
    #[arg(long, default_value = "in_turn", requires = "backends")]
    policy: Policy,
    /// The backends of --policy, comma-separated: http://HOST:PORT[/PATH][@SECONDS], where
    /// @SECONDS makes a backend a candidate only that long after the start (a replica joining).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<Backend>,
    /// How long the oracle waits for a backend's /state, in milliseconds.
    #[arg(long, default_value_t = 50)]
    state_timeout_ms: u64,
    /// The `model` field of every request.
    #[arg(long)]
    model: String,
    /// Open loop: Poisson arrivals per second (over all URLs, taken in turn).
    #[arg(long, conflicts_with = "closed", required_unless_present = "closed")]
    rate: Option<f64>,
    /// Closed loop: requests kept outstanding against each URL.
    #[arg(long)]
    closed: Option<usize>,
    /// Seconds of load before the measured window (same rate, not measured).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Measured seconds (warm-up + duration at most 60).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds to wait for open requests after the last arrival (at most 60).
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Prompt length in tokens: fixed:N, uniform:LO:HI, exp:MEAN[:MAX], lognormal:MEDIAN:SIGMA[:MAX].
    #[arg(long, default_value = "lognormal:400:0.8:4096")]
    prompt: Dist,
    /// Output length in tokens (`max_tokens`), same forms.
    #[arg(long, default_value = "lognormal:128:0.6:1024")]
    output: Dist,
    /// Seed of the arrivals and the lengths.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write one CSV row per request here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Open loop: draw every request from this many distinct prompts, each with its own sizes
    /// drawn once (identical requests for a coalescing proxy); 0: no pool.
    #[arg(long, default_value_t = 0)]
    distinct: usize,
    /// The pool's Zipf exponent: prompt k (from 1) is drawn with probability ∝ 1 / k^S (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Send this `temperature` in every request (e.g. 0 for greedy, deterministic answers).
    #[arg(long)]
    temperature: Option<f64>,
    /// Ask for a closing usage event (`stream_options.include_usage`), as OpenAI clients do for
    /// token accounting.
    #[arg(long)]
    include_usage: bool,
    /// Send nothing: write the open-loop schedule's requests as JSON lines
    /// (`{"prompt": TEXT, "output_tokens_count": N}`) for another client to replay.
    #[arg(long, requires = "rate")]
    emit_dataset: Option<PathBuf>,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("--{what} must be a non-negative number of seconds"))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mode = match (a.rate, a.closed) {
        (Some(rate), _) => Mode::Open { rate },
        (None, Some(concurrency)) => Mode::Closed { concurrency },
        (None, None) => anyhow::bail!("--rate or --closed is required"),
    };
    if !a.backends.is_empty() && a.policy == Policy::InTurn {
        anyhow::bail!("--backends needs --policy least_request or oracle");
    }
    if !a.backends.is_empty() && a.closed.is_some() {
        anyhow::bail!("--policy is for the open loop (--rate)");
    }
    let targets =
        if a.backends.is_empty() { a.urls.clone() } else { a.backends.iter().map(|b| b.url.clone()).collect() };
    let cfg = Config {
        targets,
        model: a.model.clone(),
        mode,
        warmup: secs(a.warmup, "warmup")?,
        duration: secs(a.duration, "duration")?,
        drain: secs(a.drain, "drain")?,
        prompt: a.prompt.clone(),
        output: a.output.clone(),
        seed: a.seed,
        csv: a.csv.clone(),
        policy: a.policy,
        backends: a.backends.clone(),
        state_timeout: Duration::from_millis(a.state_timeout_ms),
        distinct: a.distinct,
        zipf: a.zipf,
        temperature: a.temperature,
        include_usage: a.include_usage,
    };
    if let Some(path) = &a.emit_dataset {
        let n = load::emit_dataset(&cfg, path)?;
        eprintln!("llm-load: wrote {n} requests to {}", path.display());
        return Ok(());
    }
    let summary = load::run(&cfg)?;
    println!("{summary}");
    Ok(())
}
