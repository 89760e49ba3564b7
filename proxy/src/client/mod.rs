//! The proxy's HTTP client side: connections to endpoints ([`connect`]), per-endpoint pools
//! ([`pool`]), mTLS to meshed endpoints ([`mesh`]) and the request head an endpoint receives
//! ([`headers`]).

pub mod connect;
pub mod headers;
pub mod mesh;
pub mod pool;

pub use connect::{SendError, open_h1, open_h2};
pub use mesh::Mesh;
pub use pool::{ConnPool, PooledConn, Sent, send};
