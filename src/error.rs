//! The server's one error type for everything a request can get wrong, and its HTTP status.
//!
//! Owns the wording users see in `{"error": ...}` bodies. It never logs and never carries a
//! value's bytes: messages name limits and keys' lengths, not data.

use std::borrow::Cow;
use std::fmt;

use crate::shard::message::Limit;

/// Why a request is answered with an error. Small and unboxed: it is built on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400: the request is malformed (bad syntax, percent-encoding, JSON, base64, framing).
    BadRequest(Cow<'static, str>),
    /// 404: the key does not exist.
    KeyNotFound,
    /// 404: no route has this path.
    RouteNotFound,
    /// 405: the route exists but not for this method; `allow` lists the ones it takes.
    MethodNotAllowed { allow: &'static str },
    /// 405: the server runs with `--read-only`; `allow` lists the methods the route still takes
    /// (its reads, or none).
    ReadOnly { allow: &'static str },
    /// 408: the client did not send the request in time.
    RequestTimeout { phase: &'static str, limit_ms: u64 },
    /// 411: a method that needs a body came with neither Content-Length nor chunked encoding.
    LengthRequired,
    /// 413: the body (or a value inside it) is larger than a limit.
    PayloadTooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
        flag: &'static str,
    },
    /// 414: the key is longer than `--max-key-bytes`.
    UriTooLong { size: usize, limit: usize },
    /// 414: the request line alone is longer than the request head limit.
    RequestLineTooLong { limit: usize },
    /// 413: a body came with a request that takes none; `what` names those requests.
    BodyNotAllowed { what: &'static str },
    /// 413: a bulk update has more items than its limit.
    TooManyItems { count: usize, limit: usize },
    /// 501: the request uses a feature the server does not implement (a transfer coding).
    NotImplemented(&'static str),
    /// 431: the request head is too large or has too many headers.
    HeadersTooLarge { detail: &'static str },
    /// 507: a write would create a key beyond the owning shard's share of a capacity limit.
    InsufficientStorage(Limit),
    /// 503: the server cannot take this request now (connection limit, shutting down).
    Unavailable(&'static str),
    /// 503: the shard's consensus group could not commit (or confirm a read) within
    /// `REPLICATION_TIMEOUT_MS`: no leader, or no majority reachable.
    NoQuorum { shard: usize },
    /// 505: not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
}

impl Error {
    /// The HTTP status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::KeyNotFound | Error::RouteNotFound => 404,
            Error::MethodNotAllowed { .. } | Error::ReadOnly { .. } => 405,
            Error::RequestTimeout { .. } => 408,
            Error::LengthRequired => 411,
            Error::PayloadTooLarge { .. } | Error::BodyNotAllowed { .. } | Error::TooManyItems { .. } => 413,
            Error::UriTooLong { .. } | Error::RequestLineTooLong { .. } => 414,
            Error::HeadersTooLarge { .. } => 431,
            Error::NotImplemented(_) => 501,
            Error::Unavailable(_) | Error::NoQuorum { .. } => 503,
            Error::InsufficientStorage(_) => 507,
            Error::VersionNotSupported => 505,
        }
    }

    /// True when the connection must close after this answer: the request's framing can no
    /// longer be trusted, or the rest of its body was never read.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::BadRequest(_)
                | Error::RequestTimeout { .. }
                | Error::LengthRequired
                | Error::PayloadTooLarge { .. }
                | Error::BodyNotAllowed { .. }
                | Error::UriTooLong { .. }
                | Error::RequestLineTooLong { .. }
                | Error::NotImplemented(_)
                | Error::HeadersTooLarge { .. }
                | Error::Unavailable(_)
                | Error::VersionNotSupported
        )
    }

    /// Shorthand for a 400 with a fixed message.
    pub fn bad_request(message: &'static str) -> Error {
        Error::BadRequest(Cow::Borrowed(message))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(message) => write!(f, "bad request: {message}"),
            Error::KeyNotFound => write!(f, "key not found"),
            Error::RouteNotFound => write!(f, "no such route"),
            Error::MethodNotAllowed { allow } => {
                write!(f, "method not allowed here; allowed: {allow}")
            }
            Error::ReadOnly { .. } => write!(f, "the server is read-only (--read-only): writes are refused"),
            Error::RequestTimeout { phase, limit_ms } => {
                write!(f, "request {phase} not received within {limit_ms} ms")
            }
            Error::LengthRequired => {
                write!(
                    f,
                    "a body is required: send Content-Length or Transfer-Encoding: chunked"
                )
            }
            Error::PayloadTooLarge {
                what,
                size,
                limit,
                flag,
            } => {
                write!(f, "{what} is {size} bytes; the limit is {limit} bytes ({flag})")
            }
            Error::UriTooLong { size, limit } => {
                write!(f, "key is {size} bytes; the limit is {limit} bytes (--max-key-bytes)")
            }
            Error::RequestLineTooLong { limit } => write!(
                f,
                "request line is longer than {limit} bytes (the request head limit): use a shorter path or query"
            ),
            Error::BodyNotAllowed { what } => {
                write!(f, "{what} take no body: send the request without one")
            }
            Error::TooManyItems { count, limit } => {
                write!(f, "bulk update has {count} items; the limit is {limit} items")
            }
            Error::NotImplemented(what) => write!(f, "not implemented: {what}"),
            Error::HeadersTooLarge { detail } => write!(f, "request headers too large: {detail}"),
            Error::Unavailable(why) => write!(f, "service unavailable: {why}"),
            Error::NoQuorum { shard } => write!(f, "no quorum for shard {shard}"),
            Error::InsufficientStorage(Limit::Keys(share)) => write!(
                f,
                "storage full: the key's shard holds its share of --max-keys ({share} keys); \
                 delete keys, raise the limit or run with --eviction lru"
            ),
            Error::InsufficientStorage(Limit::Memory(share)) => write!(
                f,
                "storage full: the key's shard holds its share of --max-memory ({share} bytes); \
                 delete keys, raise the limit or run with --eviction lru"
            ),
            Error::VersionNotSupported => {
                write!(f, "HTTP version not supported: use HTTP/1.1 or HTTP/1.0")
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_a_client_error_status_and_names_its_cause() {
        let cases = [
            (Error::bad_request("bad percent-encoding"), 400, "percent"),
            (Error::KeyNotFound, 404, "not found"),
            (Error::MethodNotAllowed { allow: "GET" }, 405, "GET"),
            (
                Error::RequestTimeout {
                    phase: "headers",
                    limit_ms: 7,
                },
                408,
                "7 ms",
            ),
            (Error::LengthRequired, 411, "Content-Length"),
            (
                Error::PayloadTooLarge {
                    what: "value",
                    size: 9,
                    limit: 8,
                    flag: "--max-value-bytes",
                },
                413,
                "limit is 8 bytes",
            ),
            (Error::UriTooLong { size: 300, limit: 250 }, 414, "250"),
            (Error::HeadersTooLarge { detail: "too many" }, 431, "too many"),
            (Error::VersionNotSupported, 505, "HTTP/1.1"),
            (Error::InsufficientStorage(Limit::Keys(7)), 507, "--max-keys (7 keys)"),
            (
                Error::InsufficientStorage(Limit::Memory(9)),
                507,
                "--max-memory (9 bytes)",
            ),
            (Error::ReadOnly { allow: "GET, HEAD" }, 405, "read-only"),
            (
                Error::RequestLineTooLong { limit: 16384 },
                414,
                "request line is longer than 16384 bytes",
            ),
            (
                Error::BodyNotAllowed { what: "GET requests" },
                413,
                "GET requests take no body",
            ),
            (
                Error::TooManyItems { count: 11, limit: 10 },
                413,
                "11 items; the limit is 10 items",
            ),
            (Error::NotImplemented("transfer coding gzip"), 501, "gzip"),
        ];
        for (error, status, needle) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
        assert!(Error::LengthRequired.closes_connection());
        assert!(!Error::KeyNotFound.closes_connection());
        assert!(
            Error::NotImplemented("x").closes_connection(),
            "the body cannot be framed"
        );
        assert!(
            Error::BodyNotAllowed { what: "x" }.closes_connection(),
            "the body is unread"
        );
        assert!(
            !Error::TooManyItems { count: 2, limit: 1 }.closes_connection(),
            "the body was read"
        );
    }
}
