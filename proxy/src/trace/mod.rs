//! Observing model traffic: traces, model metrics and the access log.
//!
//! - **Traces** ([`context`], [`export`]): W3C `traceparent` is read on every request and, for a
//!   sampled one, replaced by this proxy's span before the next hop (`tracestate` passes on as
//!   it came). Sampling is parent-based: a caller's sampled flag is followed; a request without
//!   a `traceparent` starts a trace with probability `proxy.tracing.sample`. One span per
//!   request and side: a client span outbound, a server span inbound, so two sidecars give a
//!   parent link across the hop. Spans carry the OpenTelemetry semantic-convention attributes
//!   (`http.request.method`, `http.response.status_code`, `server.address`, `url.path`,
//!   `gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`) and
//!   Vane's (`vane.route`, `vane.backend`, `vane.endpoint`, `vane.retries`, `vane.coalesced`,
//!   `vane.time_to_first_byte_ms`), and `retried` and `hedged` events. Export is OTLP/gRPC in batches from
//!   a bounded queue that drops, and counts, rather than wait. With `proxy.tracing` unset the
//!   request path does one check.
//! - **Model metrics** (`vane_model_*`, [`crate::metrics::ModelMetrics`]): tokens from the
//!   answer's `usage` (or SSE events), time to first token and per output token, GPU-seconds
//!   ([`crate::metrics::busy`]) and cost, by model, backend and caller, for JSON and SSE answers.
//! - **Access log** ([`log`]): a sampled JSON line per request with the span's fields.
//!
//! Two layers: [`ObserveLayer`] at the top of the stack (every request, every answer) and
//! [`ModelLayer`] just below the route layer (the model and the busy clock, where the request
//! is routed and its body held).

mod body;
pub mod context;
pub mod export;
mod layer;
pub mod log;
mod model;
mod observer;
mod record;

pub use body::{Kind, Watch, Watched};
pub use layer::{ObserveLayer, ObserveService};
pub use model::{MODEL_HEADER, ModelLayer, ModelService, RequestInfo, Tagged};
pub use observer::{Observer, Ticket};
pub use record::{Record, RequestLine, Span};
