//! Transparent capture: the rules that send a pod's TCP through its proxy, and what the proxy
//! does with the connections they send it.
//!
//! - [`rules`] and [`ports`]: the nat rules `vane-proxy init` installs, a pure function of its
//!   flags and of the table as it is ([`Capture::install`], [`remove`]); [`apply`] runs
//!   `iptables-save` / `iptables-restore --noflush` and checks for `CAP_NET_ADMIN`.
//! - [`original`]: a redirected connection's original destination (`SO_ORIGINAL_DST`).
//! - [`dispatch`]: per connection, HTTP for a known service (outbound), HTTP on the model
//!   server's port when the first bytes say so ([`detect`], inbound), else opaque TCP ([`tcp`]).
//! - [`authority`]: a request of a captured connection is pointed at the service its original
//!   destination picked.

pub mod apply;
pub mod authority;
pub mod detect;
pub mod dispatch;
pub mod original;
pub mod ports;
pub mod rules;
pub mod tcp;

pub use apply::{ApplyError, Iptables};
pub use dispatch::{Destinations, Dispatch};
pub use ports::{PortRange, parse_ports};
pub use rules::{Capture, remove};
