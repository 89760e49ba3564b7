//! Load reports in and out.
//!
//! - [`probe`]: follows the local load probe (`vane-gpu-probe`'s `/load?watch=1`) into [`LocalLoad`].
//! - [`report`]: the inbound layer that attaches those figures to every response as an ORCA
//!   `endpoint-load-metrics` header (unless the model server sent its own) and serves them as a
//!   stream at [`LOAD_STREAM_PATH`].
//! - [`peer`]: the outbound side's follower of a peer's load stream, feeding the balancer.

mod local;
pub mod peer;
pub mod probe;
pub mod report;

pub use local::{LOAD_STREAM_PATH, LocalLoad};
pub use report::{LoadReportLayer, LoadReportService};

use std::net::SocketAddr;
use std::time::Duration;

/// What the load module reads from the active config (implemented by the config store), so that
/// it does not depend on how the config is held.
pub trait LoadConfig: Send + Sync + 'static {
    /// The probe to read (`ip:port` and path), if the config names one.
    fn probe(&self) -> Option<(SocketAddr, String)>;
    /// How often a probe that does not stream is polled.
    fn probe_interval(&self) -> Duration;
    /// Figures older than this are neither used nor passed on.
    fn staleness(&self) -> Duration;
}
