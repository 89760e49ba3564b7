//! The probe's errors at its boundary.

use std::net::SocketAddr;

/// Why the probe could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting cannot work (bad URL, zero interval, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The GPU reader thread could not be started.
    #[error("cannot start the GPU reader thread: {0}")]
    GpuThread(#[source] std::io::Error),
}
