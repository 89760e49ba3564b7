//! The process: command line ([`args`], [`cli`]), startup and drain ([`start`]), signals ([`signals`]) and
//! the demo ([`demo`]).

pub mod args;
pub mod cli;
pub mod demo;
pub mod signals;
pub mod start;

pub use args::{Args, Command, options};
pub use cli::{EX_CONFIG, main};
pub use signals::serve_until_signal;
pub use start::{Options, Running, start};
