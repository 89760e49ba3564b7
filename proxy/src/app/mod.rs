//! The process: command line ([`args`], [`cli`]; where the certificate comes from:
//! [`identity_args`]), startup and drain ([`start`]), signals ([`signals`]), the demo ([`demo`])
//! and the capture init step ([`init`]).

pub mod args;
pub mod cli;
pub mod demo;
pub mod destinations;
pub mod identity_args;
pub mod init;
pub mod signals;
pub mod start;

pub use args::{Args, Command, options};
pub use cli::{EX_CONFIG, EX_USAGE, main};
pub use signals::serve_until_signal;
pub use start::{ControlTarget, Options, Running, start};
