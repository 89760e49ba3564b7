//! The route layer: loads the config snapshot once per request, makes the routing decision
//! (outbound: authority → service → route → weighted backend, in [`outbound`]; inbound: the local
//! model server, in [`inbound`]), and hands the request on with a
//! [`Target`](crate::balance::Target) extension for the
//! balancer. The decisions themselves (route match, weighted and sticky split) are pure functions
//! in the `vane-route` crate.
//!
//! The route taken is left for the metrics as a [`Tag`](crate::metrics::Tag) in the request's
//! extensions, which the balancer hands on to the response (or the error that becomes one).

pub mod facts;
pub mod inbound;
mod layer;
pub mod outbound;
mod outcome;
mod sniff;

pub use layer::{RouteLayer, RouteService};
pub use outcome::{Routed, Unrouted};
