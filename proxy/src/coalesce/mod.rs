//! Coalescing: while a request is on its way upstream, identical requests wait for its answer
//! instead of costing another GPU pass. Opt-in per route (`coalesce:`); the route layer leaves a
//! [`Coalescing`] extension on the requests of such a route, and a request without one passes
//! straight through (one extension lookup).
//!
//! - **Who may share** ([`policy`]): `when: deterministic` (the default) takes only requests
//!   whose answer does not depend on sampling, `when: always` every GET and POST. Only requests
//!   whose body is known in full qualify: empty, or small with a `Content-Length` (at most
//!   `max_sniff_bytes`, which the route layer reads whole), or a gRPC call whose stream ends with
//!   its first message (read by the route layer on a service that coalesces); a streamed body
//!   goes upstream alone.
//! - **Identical** ([`key`]): same service, route and picked backend, method, path and query,
//!   `Authorization` (unless `across_callers: true`), `Accept`, `Accept-Encoding`,
//!   `Content-Type` and the route's `vary` headers, and the same body: canonical JSON (key order
//!   and whitespace do not matter) or, when not JSON, the same bytes. Hashed to 128 bits.
//! - **Leader and followers** ([`flight`]): the first request with a key leads: it goes on down
//!   the stack (retries, balancing), so its retries stay one logical request. Requests with
//!   the same key that arrive while it is in flight follow: they get its status, headers
//!   (plus `vane-coalesced: true`), body and trailers (a gRPC answer's `grpc-status`). A
//!   follower that joins while the body streams receives the chunks already sent, then the rest
//!   as they come, never with a gap.
//! - **Bounds**: a group takes at most `max_followers`; a follower joins only while the answer
//!   so far is under `max_buffer_bytes`. Past either, the next identical request leads a group
//!   of its own (its own upstream call). The upstream body is read no further while the
//!   slowest reader of the group has `max_buffer_bytes` unread, so a group holds at most that
//!   (plus one chunk, and a few chunks per reader on their way to its connection).
//! - **Disconnects**: a task drives the upstream call and its body, so a leader whose client
//!   leaves does not end its followers' answer; when every client of a group has left, the
//!   upstream call is dropped.
//! - **Failures**: a leader's answer of 429 or 503, or an error that says another try may
//!   succeed (nothing sent, refused, reset) or that is its client's fault, is not shared: its
//!   followers go upstream on their own. A leader's timeout, or its backend having no endpoint
//!   ready, is shared: followers get the same error. Other 5xx answers are the endpoint's answer
//!   and are shared as they are. A body that breaks off upstream after its head breaks off for
//!   every reader of the group, as an error (the client's HTTP/2 stream is reset, its HTTP/1.1
//!   connection closed before the end), never as a clean but short answer.

mod drive;
pub mod flight;
pub mod key;
pub mod policy;
mod service;

pub use drive::{COALESCED_HEADER, followers_go_alone, shared_error};
pub use policy::Coalescing;
pub use service::{CoalesceLayer, CoalesceService, ResponseFuture};
