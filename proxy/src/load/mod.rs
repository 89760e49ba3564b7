//! Load reports in and out.
//!
//! - [`probe`]: follows the local load probe (`vane-gpu-probe`'s `/load?watch=1`) into [`LocalLoad`].
//! - [`report`]: the inbound layer that attaches those figures to every response as an ORCA
//!   `endpoint-load-metrics` header (unless the model server sent its own) and serves them as a
//!   stream at [`LOAD_STREAM_PATH`].
//! - [`peer`]: the outbound side's follower of a peer's load stream, feeding the balancer.

mod config;
mod local;
pub mod peer;
pub mod probe;
pub mod report;

pub use config::LoadConfig;
pub use local::{LOAD_STREAM_PATH, LocalLoad};
pub use report::{LoadReportLayer, LoadReportService};
