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
    /// 401: access control is on and the request carries no known bearer token.
    Unauthorized(&'static str),
    /// 403: the request's token has `role`, and the route needs `needed`.
    Forbidden { role: &'static str, needed: &'static str },
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
    /// 507: no room on the disk for the write-ahead log: the write was not applied.
    DiskFull,
    /// 503: the write-ahead log failed: the write was not applied, or is not durable.
    LogFailed,
    /// 412: a conditional write's `If-Match`/`If-None-Match` did not hold; the key's current
    /// version, when it exists.
    PreconditionFailed { current: Option<u64> },
    /// 413: a transaction has more operations (compares included) than its limit.
    TooManyOps { count: usize, limit: usize },
    /// 503, connection kept: a transaction's keys stayed locked by others through every attempt.
    Contended { attempts: u32 },
}

impl From<crate::shard::message::Refusal> for Error {
    fn from(refusal: crate::shard::message::Refusal) -> Error {
        match refusal {
            crate::shard::message::Refusal::DiskFull => Error::DiskFull,
            crate::shard::message::Refusal::LogFailed => Error::LogFailed,
        }
    }
}

impl Error {
    /// The HTTP status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden { .. } => 403,
            Error::KeyNotFound | Error::RouteNotFound => 404,
            Error::MethodNotAllowed { .. } | Error::ReadOnly { .. } => 405,
            Error::RequestTimeout { .. } => 408,
            Error::LengthRequired => 411,
            Error::PayloadTooLarge { .. }
            | Error::BodyNotAllowed { .. }
            | Error::TooManyItems { .. }
            | Error::TooManyOps { .. } => 413,
            Error::PreconditionFailed { .. } => 412,
            Error::Contended { .. } => 503,
            Error::UriTooLong { .. } | Error::RequestLineTooLong { .. } => 414,
            Error::HeadersTooLarge { .. } => 431,
            Error::NotImplemented(_) => 501,
            Error::Unavailable(_) | Error::NoQuorum { .. } => 503,
            Error::InsufficientStorage(_) | Error::DiskFull => 507,
            Error::LogFailed => 503,
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
            Error::Unauthorized(why) => write!(f, "unauthorized: {why}"),
            Error::Forbidden { role, needed } => {
                write!(f, "forbidden: this token's role is {role}; this route needs {needed}")
            }
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
            Error::DiskFull => write!(
                f,
                "disk full: no room for the write-ahead log on the key's shard (--data-dir); \
                 the write was not applied: free disk space and retry"
            ),
            Error::LogFailed => write!(
                f,
                "the write-ahead log failed on the key's shard (see the server's log): the write \
                 was not applied or is not durable; the server needs a restart"
            ),
            Error::PreconditionFailed { current: Some(version) } => {
                write!(f, "precondition failed: the key's version is \"{version:x}\"")
            }
            Error::PreconditionFailed { current: None } => {
                write!(f, "precondition failed: the key does not exist")
            }
            Error::TooManyOps { count, limit } => {
                write!(f, "transaction has {count} operations; the limit is {limit} operations")
            }
            Error::Contended { attempts } => write!(
                f,
                "transaction gave up after {attempts} attempts: its keys stayed locked by other transactions; retry"
            ),
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
            (Error::Unauthorized("unknown token"), 401, "unknown token"),
            (
                Error::Forbidden {
                    role: "read",
                    needed: "write",
                },
                403,
                "role is read; this route needs write",
            ),
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
            (Error::DiskFull, 507, "disk full: "),
            (Error::LogFailed, 503, "write-ahead log failed"),
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
            (Error::PreconditionFailed { current: Some(255) }, 412, "\"ff\""),
            (Error::PreconditionFailed { current: None }, 412, "does not exist"),
            (
                Error::TooManyOps { count: 3, limit: 2 },
                413,
                "3 operations; the limit is 2",
            ),
            (Error::Contended { attempts: 4 }, 503, "4 attempts"),
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
        assert!(!Error::PreconditionFailed { current: None }.closes_connection());
        assert!(!Error::Contended { attempts: 1 }.closes_connection());
    }
}
