//! Benchmark support (see bench/README.md).
