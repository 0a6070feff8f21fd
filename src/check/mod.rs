//! Test tooling, never used by the server: checkers for histories recorded by tests against a
//! running cluster. Nothing in the request path may import this module; it lives in the library
//! (not in `tests/`) only so unit tests and integration tests can share it.
//!
//! - [`linearizability`]: a Wing–Gong–Lowe checker for key-value register histories, checked
//!   key by key (P-compositionality), with a bounded search.

pub mod linearizability;
