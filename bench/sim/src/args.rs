//! Command-line flags (each with a `VANE_SIM_*` environment fallback) and the binary's entry.

use crate::driver::Slow;
use crate::engine::EngineConfig;
use crate::metrics::Freeze;
use crate::server::{Burst, Config, Sim, Stall};
use clap::Parser;
use clap::builder::BoolishValueParser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for a configuration that cannot work (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// A vLLM-like model server: OpenAI API, vLLM metrics, continuous batching over a KV-cache
/// budget. Defaults model one mid-size GPU serving an 8B-class model; see the README.
#[derive(Clone, Debug, Parser)]
#[command(name = "vane-sim", version, about)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "VANE_SIM_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// The served model's name (responses, /v1/models, the model_name label).
    #[arg(long, env = "VANE_SIM_MODEL", default_value = "vane-sim")]
    pub model: String,

    /// Most sequences in one batch (vLLM --max-num-seqs).
    #[arg(long, env = "VANE_SIM_MAX_BATCH", default_value_t = 64)]
    pub max_batch: usize,

    /// KV-cache size in tokens: limits how many sequences run at once.
    #[arg(long, env = "VANE_SIM_KV_TOKENS", default_value_t = 65_536)]
    pub kv_tokens: u32,

    /// Tokens per KV block (vLLM --block-size).
    #[arg(long, env = "VANE_SIM_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: u32,

    /// Token budget of one engine step; longer prompts are prefilled in chunks (vLLM
    /// --max-num-batched-tokens).
    #[arg(long, env = "VANE_SIM_MAX_BATCHED_TOKENS", default_value_t = 8192)]
    pub max_batched_tokens: u32,

    /// Longest prompt + output accepted (vLLM --max-model-len); at most --kv-tokens.
    #[arg(long, env = "VANE_SIM_MAX_MODEL_LEN", default_value_t = 16_384)]
    pub max_model_len: u32,

    /// Prefill cost per prompt token, in microseconds.
    #[arg(long, env = "VANE_SIM_PREFILL_US_PER_TOKEN", default_value_t = 40.0)]
    pub prefill_us_per_token: f64,

    /// Fixed cost of one engine step, in microseconds.
    #[arg(long, env = "VANE_SIM_STEP_BASE_US", default_value_t = 3500.0)]
    pub step_base_us: f64,

    /// Added step cost per sequence in the batch, in microseconds.
    #[arg(long, env = "VANE_SIM_STEP_PER_SEQ_US", default_value_t = 80.0)]
    pub step_per_seq_us: f64,

    /// Multiplies every step's time: 2.0 is a GPU twice as slow.
    #[arg(long, env = "VANE_SIM_SPEED", default_value_t = 1.0)]
    pub speed: f64,

    /// Time between background load bursts (e.g. 2s, 500ms); 0 means none.
    #[arg(long, env = "VANE_SIM_BURST_EVERY", default_value = "0", value_parser = duration)]
    pub burst_every: Duration,

    /// Background requests per burst.
    #[arg(long, env = "VANE_SIM_BURST_REQUESTS", default_value_t = 16)]
    pub burst_requests: u32,

    /// Prompt tokens of each background request.
    #[arg(long, env = "VANE_SIM_BURST_PROMPT_TOKENS", default_value_t = 1024)]
    pub burst_prompt_tokens: u32,

    /// Output tokens of each background request.
    #[arg(long, env = "VANE_SIM_BURST_OUTPUT_TOKENS", default_value_t = 256)]
    pub burst_output_tokens: u32,

    /// Attach an ORCA endpoint-load-metrics header to every response.
    #[arg(long, env = "VANE_SIM_ORCA", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub orca: bool,

    /// Answer 429 (with Retry-After: 1) at once while this many requests already wait; off
    /// when not given (vLLM queues without limit).
    #[arg(long, env = "VANE_SIM_MAX_WAITING")]
    pub max_waiting: Option<usize>,

    /// Reported load (ORCA header, /metrics gauges) freezes for ON, then is live for OFF,
    /// repeating from the start, e.g. 3s:2s. /state always tells the truth.
    #[arg(long, env = "VANE_SIM_FREEZE_METRICS", value_parser = freeze)]
    pub freeze_metrics: Option<Freeze>,

    /// For this long after the start the replica runs at --slow-speed (cold caches, JIT).
    #[arg(long, env = "VANE_SIM_SLOW_FOR", default_value = "0", value_parser = duration)]
    pub slow_for: Duration,

    /// The speed factor during --slow-for (3.0: three times slower).
    #[arg(long, env = "VANE_SIM_SLOW_SPEED", default_value_t = 3.0)]
    pub slow_speed: f64,

    /// Share of the generation requests (0..1) held for --stall-for before the engine takes
    /// them in, so that their answer starts that much later (a hung worker); 0 means none.
    #[arg(long, env = "VANE_SIM_STALL_SHARE", default_value_t = 0.0)]
    pub stall_share: f64,

    /// How long a stalled request is held (e.g. 1s).
    #[arg(long, env = "VANE_SIM_STALL_FOR", default_value = "1s", value_parser = duration)]
    pub stall_for: Duration,

    /// Which requests stall: the same seed holds the same request numbers.
    #[arg(long, env = "VANE_SIM_STALL_SEED", default_value_t = 1)]
    pub stall_seed: u64,
}

/// Parses `ON:OFF`, two durations, e.g. `3s:2s`.
pub fn freeze(s: &str) -> Result<Freeze, String> {
    let (on, off) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected ON:OFF, e.g. 3s:2s"))?;
    Ok(Freeze { on: duration(on)?, off: duration(off)? })
}

/// Parses `500ms`, `2s`, `1.5s`, `250us`, `1m`, or `0`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit (us, ms, s, m)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl Args {
    /// The simulator's configuration.
    pub fn config(&self) -> Config {
        let burst = (!self.burst_every.is_zero()).then_some(Burst {
            every: self.burst_every,
            requests: self.burst_requests,
            prompt_tokens: self.burst_prompt_tokens,
            output_tokens: self.burst_output_tokens,
        });
        Config {
            listen: self.listen,
            model: self.model.clone(),
            max_model_len: self.max_model_len,
            engine: EngineConfig {
                max_batch: self.max_batch,
                kv_tokens: self.kv_tokens,
                block_size: self.block_size,
                max_batched_tokens: self.max_batched_tokens,
                prefill_us_per_token: self.prefill_us_per_token,
                step_base_us: self.step_base_us,
                step_per_seq_us: self.step_per_seq_us,
                speed: self.speed,
            },
            orca: self.orca,
            burst,
            max_waiting: self.max_waiting,
            freeze: self.freeze_metrics,
            slow: (!self.slow_for.is_zero()).then_some(Slow { duration: self.slow_for, speed: self.slow_speed }),
            stall: (self.stall_share != 0.0).then_some(Stall {
                share: self.stall_share,
                duration: self.stall_for,
                seed: self.stall_seed,
            }),
        }
    }
}

/// The binary: parse flags, serve on a single-threaded runtime until SIGTERM or Ctrl-C. A
/// configuration that cannot work exits with 64.
pub fn parse_and_run() -> ExitCode {
    let args = Args::parse();
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("vane-sim: {e}");
        return ExitCode::from(EX_USAGE);
    }
    // Internal: one thread. The engine loop and every stream are cheap tasks, and one
    // simulator per core lets a bench run a fleet on a few cores.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vane-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let sim = Sim::bind(config).await?;
        eprintln!("vane-sim: serving {} on http://{}", args.model, sim.local_addr()?);
        sim.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (crate::Error::Config(_) | crate::Error::Bind { .. })) => {
            eprintln!("vane-sim: {e}: {}", source_text(&e));
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("vane-sim: {e}: {}", source_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn source_text(e: &crate::Error) -> String {
    std::error::Error::source(e).map_or_else(String::new, ToString::to_string)
}

/// Completes at the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = Args::try_parse_from(["vane-sim"]).unwrap().config();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.engine, EngineConfig::default());
        assert!(c.burst.is_none());
        assert!(!c.orca);
        c.validate().unwrap();
    }

    #[test]
    fn flags_parse() {
        let c = Args::try_parse_from([
            "vane-sim",
            "--listen=0.0.0.0:9000",
            "--model=llama",
            "--max-batch=8",
            "--kv-tokens=4096",
            "--max-model-len=4096",
            "--speed=2",
            "--burst-every=1.5s",
            "--burst-requests=4",
            "--orca",
        ])
        .unwrap()
        .config();
        assert_eq!(c.model, "llama");
        assert_eq!(c.engine.max_batch, 8);
        assert_eq!(c.engine.speed, 2.0);
        assert!(c.orca);
        let b = c.burst.unwrap();
        assert_eq!((b.every, b.requests), (Duration::from_millis(1500), 4));
        c.validate().unwrap();
        assert!(Args::try_parse_from(["vane-sim", "--burst-every=soon"]).is_err());
        assert!(c.max_waiting.is_none() && c.freeze.is_none() && c.slow.is_none());
        let c = Args::try_parse_from([
            "vane-sim",
            "--max-waiting=4",
            "--freeze-metrics=3s:2s",
            "--slow-for=10s",
            "--slow-speed=3",
        ])
        .unwrap()
        .config();
        assert_eq!(c.max_waiting, Some(4));
        assert_eq!(c.freeze, Some(Freeze { on: Duration::from_secs(3), off: Duration::from_secs(2) }));
        assert_eq!(c.slow, Some(Slow { duration: Duration::from_secs(10), speed: 3.0 }));
        assert!(c.stall.is_none());
        c.validate().unwrap();
        let c = Args::try_parse_from(["vane-sim", "--stall-share=0.2", "--stall-for=800ms", "--stall-seed=3"])
            .unwrap()
            .config();
        assert_eq!(c.stall, Some(Stall { share: 0.2, duration: Duration::from_millis(800), seed: 3 }));
        c.validate().unwrap();
        for bad in [&["vane-sim", "--freeze-metrics=3s"][..], &["vane-sim", "--freeze-metrics=3s:x"]] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &["vane-sim", "--max-waiting=0"][..],
            &["vane-sim", "--freeze-metrics=0:2s"],
            &["vane-sim", "--slow-for=1s", "--slow-speed=0"],
            &["vane-sim", "--stall-share=2"],
            &["vane-sim", "--stall-share=0.1", "--stall-for=0"],
        ] {
            assert!(Args::try_parse_from(bad).unwrap().config().validate().is_err(), "{bad:?}");
        }
        // Parses, but cannot run: a request could need more KV than there is.
        let c = Args::try_parse_from(["vane-sim", "--kv-tokens=1024"]).unwrap().config();
        assert!(c.validate().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("5").is_err());
        assert!(duration("5h").is_err());
        assert!(duration("ms").is_err());
    }
}
