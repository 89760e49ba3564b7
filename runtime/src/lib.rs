//! What Vane's three binaries (`vane-proxy`, `vane-control`, `vane-gpu-probe`) share, written once:
//!
//! - [`signal`]: SIGTERM / SIGINT, first and second;
//! - [`serve`]: listeners with a large backlog, an accept loop with a connection cap and backoff
//!   on accept errors, and an HTTP/1.1 + h2c server with graceful drain;
//! - [`admin`]: the `/live`, `/ready`, `/metrics` admin surface, with extra routes per binary;
//! - [`backoff`]: the reconnect policy (exponential, capped, jittered), on `backon`;
//! - [`ndjson`]: lines of an HTTP body (NDJSON streams), on `tokio-util`'s `LinesCodec`;
//! - [`load_doc`]: the probe's `/load` document, one serde type for writer and readers.
//!
//! Shutdown is a [`CancellationToken`] everywhere: it is one-way and idempotent, any number of
//! tasks wait on clones of it, `cancelled()` is cancel-safe inside `select!`, a child token can
//! stop one part early without stopping the rest, and, unlike a `watch::Receiver<bool>`, there
//! is no third state where the sender is gone without having said whether to stop.
#![warn(missing_docs)]

pub mod admin;
pub mod backoff;
pub mod load_doc;
pub mod ndjson;
pub mod serve;
pub mod signal;

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
