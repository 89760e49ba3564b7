//! Balancing within a backend: each endpoint's live state ([`Endpoint`]: latency averages,
//! requests in flight, health, reported load), the choice of an endpoint for one attempt
//! ([`pick`]) and the service that sends the attempt ([`BalanceService`]).

mod backend;
pub mod endpoint;
mod guard;
pub mod pick;
mod service;

pub use backend::{Attempted, Backend, Picked, Target, Typical};
pub use endpoint::{Endpoint, MAX_BODY_SAMPLE, Policy};
pub use guard::InFlightGuard;
pub use service::BalanceService;
/// Request extension: the endpoints already tried for this request, so that a retry goes elsewhere.
pub use vane_route::select::Tried;
