//! The active configuration: one immutable [`Snapshot`] behind an `ArcSwap`.
//!
//! A request calls [`Store::load`] once and uses that snapshot to the end, so a reload never
//! mixes two configs within one request. Reloads build and validate the whole new snapshot off
//! the request path and swap it in with one `store`; an invalid file is rejected, logged and
//! counted, and the last good snapshot stays.

mod process;
mod snapshot;
mod source;
mod store;
mod watch;

pub use process::{Process, compile};
pub use snapshot::{BackendStats, Snapshot};
pub use source::{EMBEDDED, LoadError, Source};
pub use store::{DiscoveryUpdateError, Store};
pub use watch::Watcher;
