//! Request and response bodies. Both stream frame by frame: nothing is buffered except the bounded
//! prefix read to find the model name (which is then replayed first).
//!
//! This module depends on nothing else in the proxy: what a response body must tell the balancer
//! when it ends is a [`Completion`] that the balancer implements.

mod request;
mod response;

pub use request::{BodyError, BodyFailure, ReqBody};
pub use response::{BoxedBody, Completion, Piece, RespBody, RespError};
