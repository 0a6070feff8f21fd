//! corekv: a thread-per-core, shared-nothing HTTP key-value server on io_uring.
//!
//! One glommio executor (a *shard*) runs pinned to each CPU. The keyspace is hash-partitioned:
//! every key has exactly one owning shard ([`shard::shard_for`]), and only that shard's thread
//! ever touches the map that holds it. Every shard also accepts connections; a request for a
//! key owned elsewhere travels to its owner over glommio's cross-executor channels, batched per
//! owner per read, and the answer comes back to the connection's shard.
//!
//! # Layout
//! - `main.rs`: parse the command line, call [`server::main`] or [`client::run`]. No module
//!   imports [`server`].
//! - [`config`]: clap flags. [`limits`]: every limit and default, named with its unit.
//! - [`server`]: start-up checks, executors and pinning, listeners, readiness, shutdown.
//! - [`shard`]: the store a shard owns, `shard_for`, the messages between shards, the router,
//!   the shard's shared state (`context`) and the dispatcher that runs operations where their
//!   keys live (`dispatch`), and its durability at run time (`durability`: recovery,
//!   snapshots, closing the log); the ordered key index (`index`), prefix listings merged
//!   across shards (`listing`), watchers with their change history (`watch`), and
//!   transactions across shards (`txn`).
//! - [`http`]: request parsing (httparse), response encoding, the connection loop, the
//!   registry of open connections and their deadlines, streamed responses (`stream`: listings
//!   and watches).
//! - [`api`]: what each route means: turns a parsed request into store operations and back;
//!   `api::auth` checks bearer tokens against the route's class before routing; `admin` serves
//!   the OpenAPI document that `build.rs` makes from `docs/openapi.yaml`.
//! - [`sync`]: the project's own cross-thread primitives (loom-checked in `loom-tests/`).
//! - [`client`]: the synchronous command-line client.
//! - [`error`]: the one error type, and its HTTP status.
//! - [`logging`]: a `RUST_LOG`-style logger that never prints values, and rate-limited log macros.
//! - [`os`]: sockets, rlimits, signals and the io_uring probe, through socket2, rlimit and nix.
//! - [`replication`]: `--peers`: one Raft group per shard across nodes (raft-rs), the peer
//!   transport, replicated writes and linearizable reads, log compaction behind snapshots of
//!   the store (sent to a follower too far behind).
//! - [`storage`]: durability: each shard's write-ahead log and snapshots, recovery, the data dir.
//! - `check` (hidden): test tooling, never used by the server: the linearizability checker the
//!   replication tests run over recorded histories.
//!
//! `docs/ARCHITECTURE.md` draws a request's path from socket to owning shard and back.

pub mod api;
#[doc(hidden)]
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod load;
pub mod logging;
pub mod os;
pub mod replication;
pub mod server;
pub mod shard;
pub mod storage;
pub mod sync;
