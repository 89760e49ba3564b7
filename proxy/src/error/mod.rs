//! Data-plane errors: what went wrong, whose fault it was, whether a retry is safe, and (in
//! [`layer`]) the one place they become responses.
//!
//! Every error response carries `vane-proxy-error: <reason>` so that an operator can tell the
//! proxy's answers from the application's. gRPC requests get a trailers-only gRPC error instead
//! (HTTP 200 with `grpc-status`), as gRPC clients expect.
//!
//! Layers return [`Error`]: a [`ProxyError`] plus extensions, where a layer that knows something
//! the metrics need (the route taken) leaves it for the response that the error becomes.

mod classify;
mod kind;
mod layer;
mod response;

pub use classify::{Fault, Retryable};
pub use kind::{BoxError, Error, ProxyError};
pub use layer::{ErrorLayer, ErrorService};
pub use response::{ATTEMPTS_HEADER, Answered, Attempts, ERROR_HEADER, is_grpc};
