//! What the load module reads from the active config.

use std::net::SocketAddr;
use std::time::Duration;

/// What the load module reads from the active config (implemented by the config store), so that
/// it does not depend on how the config is held.
pub trait LoadConfig: Send + Sync + 'static {
    /// The probe to read (`ip:port` and path), if the config names one.
    fn probe(&self) -> Option<(SocketAddr, String)>;
    /// Whether the config still names the probe at `addr` and `path` (asked on every line of its
    /// stream, so without copying the path).
    fn names_probe(&self, addr: SocketAddr, path: &str) -> bool;
    /// How often a probe that does not stream is polled.
    fn probe_interval(&self) -> Duration;
    /// Figures older than this are neither used nor passed on.
    fn staleness(&self) -> Duration;
}
