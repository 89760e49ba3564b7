//! The simulator's errors.

use crate::engine::ConfigError;
use std::net::SocketAddr;

/// Why the simulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("I/O error")]
    Io(#[source] std::io::Error),
}
