//! Vane's routing-quality benchmark.
//!
//! `llm-load` offers LLM traffic the way a fleet of users would: Poisson arrivals of streaming
//! completions with prompt and output lengths drawn from seeded distributions, measured from each
//! request's scheduled arrival (no coordinated omission). `run.sh` and `driver.py` beside this
//! crate run it through Vane's balancing algorithms against a simulated model fleet; see
//! `bench/routing/README.md`.

pub mod dist;
pub mod load;
pub mod oracle;
pub mod policy;
pub mod pool;
pub mod schedule;
pub mod sse;
pub mod stats;
