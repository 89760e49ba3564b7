//! Propagation benchmark (see control/README.md); written with the fake API server.
fn main() {}
