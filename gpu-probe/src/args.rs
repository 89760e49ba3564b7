//! Command-line flags (each with a `VANE_PROBE_*` environment fallback) and the binary's entry.

use crate::gpu::GpuConfig;
use crate::probe::{Config, Probe};
use crate::servers::ServerChoice;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use http::Uri;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for a configuration that cannot work (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// Vane's load probe: serves a model server's queue depth, running requests, KV-cache use and
/// GPU state on localhost.
#[derive(Clone, Debug, Parser)]
#[command(name = "vane-gpu-probe", version, about)]
pub struct Args {
    /// The model server's Prometheus endpoint (plain http).
    #[arg(long, env = "VANE_PROBE_METRICS_URL", default_value = "http://127.0.0.1:8000/metrics")]
    pub metrics_url: Uri,

    /// Which server's metric names to read: vllm, sglang, triton, tgi, or auto to detect them.
    #[arg(long, env = "VANE_PROBE_SERVER", default_value = "auto")]
    pub server: ServerChoice,

    /// Time between scrapes (e.g. 10ms, 1s).
    #[arg(long, env = "VANE_PROBE_INTERVAL", default_value = "10ms", value_parser = duration)]
    pub interval: Duration,

    /// Longest a scrape may take before it counts as failed.
    #[arg(long, env = "VANE_PROBE_SCRAPE_TIMEOUT", default_value = "500ms", value_parser = duration)]
    pub scrape_timeout: Duration,

    /// Age after which the figures are marked stale (and `/orca` stops reporting them).
    #[arg(long, env = "VANE_PROBE_STALE_AFTER", default_value = "1s", value_parser = duration)]
    pub stale_after: Duration,

    /// Decoding time the decode speed (tokens/s, time per token) is measured over.
    #[arg(long, env = "VANE_PROBE_DECODE_WINDOW", default_value = "250ms", value_parser = duration)]
    pub decode_window: Duration,

    /// Address to serve /load, /orca, /metrics, /live and /ready on.
    #[arg(long, env = "VANE_PROBE_LISTEN", default_value = "127.0.0.1:4192")]
    pub listen: SocketAddr,

    /// Do not read the GPU.
    #[arg(long, env = "VANE_PROBE_NO_GPU", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub no_gpu: bool,

    /// Time between GPU readings.
    #[arg(long, env = "VANE_PROBE_GPU_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub gpu_interval: Duration,

    /// Also read free memory through a CUDA context on each GPU. The contexts themselves take
    /// GPU memory from the model server, so this is off by default.
    #[arg(long, env = "VANE_PROBE_CUDA_MEM_INFO", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub cuda_mem_info: bool,

    /// Path of libnvidia-ml.so.1, when it is not on the loader's path.
    #[arg(long, env = "VANE_PROBE_NVML_LIB")]
    pub nvml_lib: Option<PathBuf>,

    /// Log filter (tracing-subscriber syntax, e.g. info or vane_gpu_probe=debug).
    #[arg(long, env = "VANE_PROBE_LOG", default_value = "info")]
    pub log: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    vane_route::duration::parse(s)
}

impl Args {
    /// The probe's configuration.
    pub fn config(&self) -> Config {
        Config {
            metrics_url: self.metrics_url.clone(),
            server: self.server,
            interval: self.interval,
            scrape_timeout: self.scrape_timeout,
            stale_after: self.stale_after,
            decode_window: self.decode_window,
            listen: self.listen,
            gpu: GpuConfig {
                enabled: !self.no_gpu,
                nvml_lib: self.nvml_lib.clone(),
                cuda: true,
                cuda_mem_info: self.cuda_mem_info,
                interval: self.gpu_interval,
            },
        }
    }
}

/// The binary: parse flags, log to stderr, run on a single-threaded runtime until SIGTERM or
/// Ctrl-C. A configuration that cannot work exits with 64.
pub fn parse_and_run() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Internal: one thread is plenty for a few hundred tiny requests a second, and a sidecar
    // must stay light. The GPU reader has its own thread because NVML calls block.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vane-gpu-probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let probe = Probe::bind(args.config()).await?;
        probe
            .run(async {
                vane_runtime::signal::shutdown().await;
            })
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (crate::Error::Config(_) | crate::Error::Bind { .. })) => {
            tracing::error!("{e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::ServerKind;

    #[test]
    fn defaults_match_the_documentation() {
        let args = Args::try_parse_from(["vane-gpu-probe"]).unwrap();
        let c = args.config();
        assert_eq!(c.metrics_url, "http://127.0.0.1:8000/metrics");
        assert_eq!(c.server, ServerChoice::Auto);
        assert_eq!(c.interval, Duration::from_millis(10));
        assert_eq!(c.stale_after, Duration::from_secs(1));
        assert_eq!(c.decode_window, Duration::from_millis(250));
        assert_eq!(c.listen, "127.0.0.1:4192".parse().unwrap());
        assert!(c.gpu.enabled);
        assert!(!c.gpu.cuda_mem_info);
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "vane-gpu-probe",
            "--metrics-url=http://127.0.0.1:30000/metrics",
            "--server=sglang",
            "--interval=25ms",
            "--stale-after=2s",
            "--decode-window=1s",
            "--listen=0.0.0.0:9000",
            "--no-gpu",
        ])
        .unwrap();
        let c = args.config();
        assert_eq!(c.server, ServerChoice::Fixed(ServerKind::Sglang));
        assert_eq!(c.interval, Duration::from_millis(25));
        assert_eq!(c.stale_after, Duration::from_secs(2));
        assert_eq!(c.decode_window, Duration::from_secs(1));
        assert!(!c.gpu.enabled);
        assert!(Args::try_parse_from(["vane-gpu-probe", "--server=ollama"]).is_err());
        assert!(Args::try_parse_from(["vane-gpu-probe", "--interval=soon"]).is_err());
    }
}
