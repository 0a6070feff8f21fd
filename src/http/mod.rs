//! HTTP/1.1 on top of `httparse`: parsing requests out of a read buffer ([`request`]),
//! encoding responses into a write buffer ([`response`]), the per-connection loop that reads,
//! hands requests to the dispatcher and writes ([`conn`]), and each shard's registry of open
//! connections with their deadlines ([`registry`]), and responses streamed over a socket the
//! loop hands over ([`stream`]).
//!
//! Owns bytes on the wire and connection state. It never interprets a route (that is
//! [`crate::api`]) and never decides where an operation runs (that is
//! [`crate::shard::dispatch`]).

pub mod conn;
pub mod registry;
pub mod request;
pub mod response;
pub mod stream;
