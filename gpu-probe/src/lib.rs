//! Vane's load probe. It runs beside a model server (vLLM, SGLang, Triton, TGI), polls the
//! server's own Prometheus page every few milliseconds, reads the GPU where there is one, and
//! serves the pod's current load on localhost:
//!
//! - `GET /load`: JSON `{server, queue_depth, running, kv_cache_usage, decode_tokens_per_s,
//!   token_time_ms, decode_age_ms, gpu, gpu_status, error, updated_unix_ms, age_ms, stale}`;
//! - `GET /orca`: the same load as an ORCA `endpoint-load-metrics` TEXT value;
//! - `GET /metrics`, `/live`, `/ready`.
//!
//! The pieces, from pure to wired:
//! - [`expo`]: the Prometheus text parser (pure, never panics);
//! - [`servers`]: server kinds, detection and the figures each one's names give (pure);
//! - [`decode`]: the decode speed, from the token counters of successive scrapes (pure);
//! - [`snapshot`]: the pre-rendered `/load` and `/orca` answers (pure);
//! - [`gpu`]: NVML and CUDA readings behind the `gpu` feature, degrading to none at run time;
//! - [`scrape`], [`metrics`], [`admin`], [`probe`]: the client, the probe's own metrics, the
//!   HTTP handlers and the wiring;
//! - [`args`]: flags and environment variables, and `parse_and_run` for the binary.
//!
//! Running a probe in-process (as the black-box tests do):
//!
//! ```no_run
//! use vane_gpu_probe::{Config, Probe};
//!
//! # async fn example() -> Result<(), vane_gpu_probe::Error> {
//! let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
//! let probe = Probe::bind(config).await?;
//! println!("serving on {}", probe.local_addr()?);
//! probe.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod admin;
pub mod args;
pub mod decode;
pub mod error;
pub mod expo;
pub mod gpu;
pub mod metrics;
pub mod probe;
pub mod scrape;
pub mod servers;
pub mod snapshot;

pub use decode::DecodeRate;
pub use error::Error;
pub use probe::{Config, Probe};
pub use servers::{DecodeCounters, Figures, Reading, ServerChoice, ServerKind};
