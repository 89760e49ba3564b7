//! Test support: backends, clients and a proxy process runner.
