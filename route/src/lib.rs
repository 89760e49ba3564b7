//! Vane's routing model, shared by the proxy and the control service.
//!
//! Everything here is pure: plain data in, a decision out, no I/O and no clock
//! (time and randomness are passed in). The proxy executes these decisions on
//! the request path; the control service validates with the same code, so
//! a table that the control service accepts is one the proxy can run.
//!
//! - [`config`]: the YAML/JSON configuration as written by users.
//! - [`table`]: a validated, compiled routing table ([`Table::from_config`]).
//! - [`matching`]: which route of a service a request takes.
//! - [`split`]: weighted (canary, blue/green) and sticky backend choice.
//! - [`balance`]: peak-EWMA latency, the endpoint cost and power of two choices.
//! - [`health`]: outlier ejection with exponential backoff.
//! - [`select`]: endpoint selection (round robin, least request, power of two choices, panic mode).
//! - [`model`]: reading the model name from an OpenAI-style body prefix or a KServe v2 path.
//! - [`discovery`]: the stream of routing tables from the control service, and the state a proxy
//!   keeps from it.
//! - [`orca`]: ORCA `endpoint-load-metrics` load reports.
//! - [`authz`]: inbound authorization: default policies and rules by identity.
#![warn(missing_docs)]

pub mod authz;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod duration;
pub mod health;
pub mod matching;
pub mod model;
pub mod orca;
pub mod priority;
pub mod select;
pub mod split;
pub mod table;

pub use config::Config;
pub use table::{ConfigError, Table};
