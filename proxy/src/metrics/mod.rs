//! Prometheus metrics (OpenMetrics text through prometheus-client) and the metrics layer.
//!
//! | metric | labels |
//! |---|---|
//! | `vane_requests_total` | direction, service, route, backend, status, error |
//! | `vane_request_duration_seconds` (histogram, to response headers) | direction, service, route, backend |
//! | `vane_requests_in_flight` | direction |
//! | `vane_requests_by_priority_total` | direction, priority (`critical`/`standard`/`sheddable`), outcome (`success`/`shed`/`rejected`/`failed`) |
//! | `vane_retries_total` (attempts sent again) | direction, service, route, backend, reason (`refused`, `reset`, `status`, `grpc_unavailable`) |
//! | `vane_retry_budget_exhausted_total` (retries the budget refused) | direction, service, route, backend |
//! | `vane_endpoint_rtt_ewma_seconds` | backend, endpoint |
//! | `vane_endpoint_token_ewma_seconds` (time per output token of streamed answers) | backend, endpoint |
//! | `vane_endpoint_load_report_trust` (1 as reported, 0.5 corrected, 0 not used) | backend, endpoint |
//! | `vane_endpoint_in_flight` | backend, endpoint |
//! | `vane_endpoint_ejected` (1 while ejected) | backend, endpoint |
//! | `vane_config_reloads_total` | source (`file`/`control`), result (`ok`/`error`) |
//! | `vane_control_connected` (1 while the discovery stream is up) | |
//! | `vane_control_messages_total` | type |
//! | `vane_control_reconnects_total` | |
//! | `vane_config_version` | |
//! | `vane_balancer_load_age_seconds` (histogram) | |
//! | `vane_listener_connections` (open client connections) | listener |
//! | `vane_listener_connections_limited_total` (accepts that waited for a free connection slot) | listener |
//! | `vane_listener_header_timeouts_total` (connections closed before a complete first request head) | listener |
//! | `vane_coalesce_leaders_total`, `vane_coalesce_followers_total`, `vane_coalesce_saved_bytes_total` | service, route |
//! | `vane_model_requests_total` (JSON or SSE answers) | direction, model, backend, caller, status |
//! | `vane_model_input_tokens_total`, `vane_model_output_tokens_total` | direction, model, backend, caller |
//! | `vane_model_ttft_seconds` (histogram: request to first body byte of a stream) | direction, model, backend |
//! | `vane_model_tpot_seconds` (histogram: (end − first token) / (tokens − 1)) | direction, model, backend |
//! | `vane_model_gpu_seconds_total` (time-weighted share of busy endpoints, [`busy`]) | direction, model, backend, caller |
//! | `vane_model_cost_total` (GPU-seconds × `gpu_hour_price` / 3600) | direction, model, backend, caller |
//! | `vane_trace_spans_exported_total`, `vane_trace_spans_dropped_total`, `vane_trace_export_errors_total` | |
//! | `vane_access_log_dropped_total` | |
//! | `vane_identity_cert_expiry_seconds` (until this proxy's certificate expires; absent without one) | |
//! | `vane_identity_renewals_total` (certificates asked for or read, the first included) | outcome (`ok`/`error`) |
//!
//! Models and callers come from requests, so their label values are capped ([`caps`]): past
//! `max_models` / `max_callers` distinct values, the rest count as `other`.

pub mod busy;
pub mod caps;
mod coalesce;
mod identity;
pub mod kserve;
mod layer;
mod mesh;
mod model;
mod priority;
mod registry;
mod route;
pub mod usage;

pub use coalesce::{CoalesceMetrics, CoalesceStats};
pub use identity::IdentityMetrics;
pub use layer::{MetricsLayer, MetricsService};
pub use model::{ModelAnswer, ModelMetrics};
pub use priority::PriorityMetrics;
pub use registry::{Direction, EndpointRow, ListenerStats, Metrics, Name};
pub use route::{RouteStats, Tag};
