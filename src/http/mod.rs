//! HTTP/1.1 on top of `httparse`: parsing requests out of a read buffer ([`request`]),
//! encoding responses into a write buffer ([`response`]), and the per-connection loop that
//! reads, batches, dispatches and writes ([`conn`]).
//!
//! Owns bytes on the wire and connection state. It never interprets a route (that is
//! [`crate::api`]) and never touches a store directly (that goes through [`crate::shard`]).

pub mod conn;
pub mod request;
pub mod response;
