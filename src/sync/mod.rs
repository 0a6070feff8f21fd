//! The project's own cross-thread synchronisation, and nothing else.
//!
//! Shards share no data; the few places where threads meet (a cross-shard reply, the readiness,
//! shutdown and drain latches, the locked design's shared counters) live here, written against
//! [`shim`] so that `loom-tests/` can check them exhaustively under `--cfg loom`.
//!
//! `loom-tests/` compiles this very file (`#[path = "../../src/sync/mod.rs"] pub mod sync;`), so
//! its children must stay files beside it that reach each other as `super::...` and use nothing
//! from the rest of the crate. No primitive here may take a shared type from `std::sync` directly
//! (only [`shim`] and the unit tests do): a type that does not come from [`shim`] escapes the loom
//! models.

pub mod counter;
pub mod latch;
pub mod oneshot;
pub mod shim;
