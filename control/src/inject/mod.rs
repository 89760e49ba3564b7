//! Sidecar injection: a mutating admission webhook that adds Vane to the pods that opt in.
//!
//! ```text
//!  API server ──POST /inject (AdmissionReview v1, TLS)──▶ server ──▶ review::respond ──▶ patch() ──▶ JSON Patch
//!                                                          │                             (pure)
//!                                                          └── namespace labels (a watch on Namespaces)
//! ```
//!
//! - [`patch()`]: the decision and the patch, a pure function of the pod, the
//!   [`InjectSettings`] and the namespace's labels, table-tested on real pod specs
//!   (`control/tests/inject.rs`).
//! - [`overrides`]: the `vane.io/*` annotations, parsed and checked.
//! - [`containers`]: the init container, the two native sidecars and the token volume.
//! - [`review`]: AdmissionReview in, AdmissionReview out, with the patch base64-encoded (the
//!   form the API server documents; kube's `AdmissionResponse` writes a number array).
//! - [`server`]: the HTTPS listener and the injector's metrics; [`tls`]: its certificate,
//!   reloaded when the files change; [`cert`]: a CA and serving certificate for a first install;
//!   [`run`]: the wiring (webhook, admin, Namespace watch) behind `vane-control inject`.
//!
//! The webhook always allows the pod: one it cannot or should not patch goes through as it is,
//! with a log line and `vane_injector_skipped_total{reason}`, as `failurePolicy: Ignore` does
//! when the webhook is down. A broken injector thus never blocks a deploy.
//!
//! ```
//! use std::collections::BTreeMap;
//! use vane_control::inject::{self, Decision, InjectSettings};
//!
//! let pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "llm-0", "annotations": {"vane.io/inject": "enabled"}},
//!     "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.0"}]}
//! })).unwrap();
//! let Decision::Patch(patch) = inject::patch(&pod, &InjectSettings::default(), &BTreeMap::new()) else {
//!     panic!("not injected");
//! };
//! assert_eq!(patch.0.len(), 3); // init containers, volumes, annotations
//! ```

pub mod cert;
pub mod containers;
pub mod overrides;
mod patch;
pub mod review;
pub mod run;
pub mod server;
pub mod settings;
pub mod tls;

pub use overrides::{InvalidAnnotation, Overrides};
pub use patch::{Decision, Skip, patch};
pub use settings::InjectSettings;
