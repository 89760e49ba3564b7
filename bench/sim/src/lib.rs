//! A model-server simulator that behaves like vLLM closely enough to judge routing
//! decisions: the OpenAI-compatible API (streaming and not), vLLM's `/metrics` names and the
//! ORCA load header on the outside; continuous batching over a KV-cache budget inside, with
//! prefill time growing with prompt length and decode step time growing with batch size.
//!
//! The pieces, from pure to wired:
//! - [`engine`]: the scheduler and its timing as a pure state machine (unit-tested without
//!   I/O or clocks);
//! - [`api`]: request sizes and response bodies (pure);
//! - [`metrics`]: the `/metrics` page and the ORCA header;
//! - [`driver`]: the one task that steps the engine on a timer and feeds the streams;
//! - [`server`]: the HTTP/1.1 server; [`args`]: flags and `parse_and_run` for the binary.
//!
//! The model, its parameters and how they compare with vLLM are in the crate's README.
//!
//! Running a simulator in-process (as the tests do):
//!
//! ```no_run
//! use vane_sim::{Config, Sim};
//!
//! # async fn example() -> Result<(), vane_sim::Error> {
//! let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
//! let sim = Sim::bind(config).await?;
//! println!("serving on {}", sim.local_addr()?);
//! sim.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod args;
pub mod driver;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod server;

pub use driver::Slow;
pub use error::Error;
pub use metrics::Freeze;
pub use server::{Burst, Config, Sim, Stall};
