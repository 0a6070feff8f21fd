//! What each route means. [`plan`] turns a parsed request into store operations plus a
//! [`Render`] that says how their outcomes become a response; [`Plan::render`] writes that
//! response from the outcomes.
//!
//! Owns URL and body semantics (keys, JSON, base64, status codes). It never performs I/O and
//! never touches a store: operations run on their owners through [`crate::shard::dispatch`].

pub mod admin;
pub mod auth;
pub mod compat;
pub mod list;
pub mod txn;
pub mod v1;
pub mod watch;

use std::borrow::Cow;
use std::rc::Rc;

use crate::config::ServeArgs;
use crate::error::Error;
use crate::http::request::{BodyLimit, HeadInfo, Method, Request};
use crate::http::response;
pub use crate::shard::dispatch::Ops;
use crate::shard::dispatch::Outcomes;
use crate::shard::message::{Condition, Outcome};

/// What a route needs to know about the server to plan a request.
pub struct Context<'a> {
    pub args: &'a ServeArgs,
    /// True once every shard is serving (for `/v1/readiness`).
    pub ready: bool,
    /// Shards serving so far and in all, for the readiness message.
    pub ready_shards: (usize, usize),
    /// With `--auth-token-file`: the shard's copy of the token table, checked before routing.
    pub tokens: Option<Rc<auth::Tokens>>,
}

/// How a request's outcomes become its response.
#[derive(Debug)]
pub enum Render {
    /// Answer at once with an error.
    Error(Error),
    /// Answer at once with a JSON body.
    Json(u16, serde_json::Value),
    /// Answer at once with 200 and a fixed body of this content type (the OpenAPI document).
    Static(&'static str, &'static [u8]),
    /// `GET`/`HEAD` of one key: the value's bytes, or 404.
    Value { head: bool },
    /// `PUT`/`POST`: 201 when created, 200 when replaced.
    Write,
    /// A seed's write: this status whether created or replaced.
    WriteWithStatus(u16),
    /// Seed 000's `GET /get`: `{"value": "<text>"}`, or 404.
    ValueJson,
    /// `PATCH` of one key: 200, or 404 when missing.
    Update,
    /// `DELETE`: 200 `{"deleted": bool}`.
    Delete,
    /// Bulk update: the keys in order (as given), one `Update` op each. `keys_only` answers
    /// seed 000's plain list of updated keys instead of `{"updated": [...], "missing": [...]}`.
    BulkUpdate { keys: Vec<String>, keys_only: bool },
    /// `/v1/stats` (JSON) or `/metrics` (Prometheus text), from every shard's numbers.
    Stats { prometheus: bool },
    /// `GET /v1/keys?prefix=`: a listing streamed by [`crate::http::stream::list`], never
    /// rendered from outcomes.
    List(list::ListSpec),
    /// `GET /v1/watch/...`: an event stream written by [`crate::http::stream::watch`]; the
    /// connection closes after it.
    Watch(watch::WatchSpec),
    /// `/v1/txn`: the keys of each branch's operations, in order, to name the results.
    Txn { success: Vec<String>, failure: Vec<String> },
    /// An all-or-nothing bulk update: 200, or 409 naming the missing keys.
    AtomicBulk { keys: Vec<String>, keys_only: bool },
    /// `/v1/cluster` (`--peers`): the members, and every group's state from every shard.
    Cluster { nodes: Vec<(u64, String)> },
}

/// A planned request: operations to run on their owners, then how to answer.
#[derive(Debug)]
pub struct Plan {
    pub ops: Ops,
    pub render: Render,
    pub keep_alive: bool,
    /// A HEAD request: the response's body is dropped, whatever its route renders.
    pub head: bool,
    /// `?consistency=stale` (`--peers`): may be answered from this node's replicas as they
    /// are, without a round through the shard's Raft group.
    pub stale: bool,
}

impl Plan {
    /// A plan that answers at once with `error`.
    pub fn error(error: Error, keep_alive: bool) -> Plan {
        Plan {
            ops: Ops::None,
            render: Render::Error(error),
            keep_alive,
            head: false,
            stale: false,
        }
    }

    /// True when the connection closes after this response.
    pub fn closes(&self) -> bool {
        !self.keep_alive || matches!(&self.render, Render::Error(error) if error.closes_connection())
    }

    /// True when the response is streamed ([`Render::List`]) rather than rendered from outcomes.
    pub fn streams(&self) -> bool {
        matches!(self.render, Render::List(_) | Render::Watch(_))
    }

    /// Writes this request's response from the outcomes of its operations, read in the order
    /// [`plan`] listed them; returns its status. `keep_alive: false` answers `Connection: close`.
    pub fn render(&self, outcomes: &mut impl Outcomes, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
        let start = out.len();
        let status = match &self.render {
            Render::Error(_) | Render::Json(..) | Render::Static(..) => render_now(&self.render, keep_alive, out),
            Render::BulkUpdate { keys, keys_only } => {
                // Every outcome is read (even past an error) so the next request reads its own.
                let read: Vec<Result<bool, Error>> = keys
                    .iter()
                    .map(|_| outcomes.next(|outcome| outcome.map(|outcome| matches!(outcome, Outcome::Updated { .. }))))
                    .collect();
                let updated: Result<Vec<bool>, Error> = read.into_iter().collect();
                match updated {
                    Ok(updated) => render_bulk(keys, &updated, *keys_only, keep_alive, out),
                    Err(error) => render_error(out, &error, keep_alive),
                }
            }
            Render::List(_) | Render::Watch(_) => internal_error(out, "a stream rendered as a plain response"),
            Render::Txn { success, failure } => match outcomes.txn() {
                Ok(answer) => txn::render_txn(&answer, success, failure, keep_alive, out),
                Err(error) => render_error(out, &error, keep_alive),
            },
            Render::AtomicBulk { keys, keys_only } => match outcomes.txn() {
                Ok(answer) => txn::render_atomic_bulk(&answer, keys, *keys_only, keep_alive, out),
                Err(error) => render_error(out, &error, keep_alive),
            },
            Render::Stats { prometheus } => match outcomes.stats() {
                Ok(stats) => admin::render_stats(&stats, *prometheus, keep_alive, out),
                Err(error) => render_error(out, &error, keep_alive),
            },
            Render::Cluster { nodes } => match outcomes.stats() {
                Ok(stats) => admin::render_cluster(nodes, &stats, keep_alive, out),
                Err(error) => render_error(out, &error, keep_alive),
            },
            render => outcomes.next(|outcome| match outcome {
                Ok(outcome) => render_one(render, outcome, keep_alive, out),
                Err(error) => render_error(out, &error, keep_alive),
            }),
        };
        if self.head {
            drop_body(out, start);
        }
        status
    }
}

/// Cuts the body off the response that starts at `start` (HEAD keeps the headers, including
/// the Content-Length a GET would have had).
fn drop_body(output: &mut Vec<u8>, start: usize) {
    if let Some(end) = output[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        output.truncate(start + end + 4);
    }
}

/// No route reads a GET, HEAD or DELETE request's body, so none may come: it is refused at head
/// time (413, and the connection closes) instead of being read and dropped.
const NO_BODY: BodyLimit = BodyLimit::none("GET, HEAD and DELETE requests");

/// The body limit of the route a head is for (checked before the body is read).
pub fn body_limit(head: &HeadInfo<'_>, args: &ServeArgs) -> BodyLimit {
    if let Method::Get | Method::Head | Method::Delete = head.method {
        return NO_BODY;
    }
    if let Some(limit) = v1::body_limit(head, args) {
        return limit;
    }
    json_body_limit(args)
}

/// The limit for JSON bodies (bulk updates, base64 POSTs, and any body sent to other routes).
pub fn json_body_limit(args: &ServeArgs) -> BodyLimit {
    BodyLimit {
        bytes: u64::from(args.json_body_bytes_max),
        what: "request body",
        flag: "--max-body-bytes",
    }
}

/// Plans one request.
pub fn plan(request: Request<'_>, context: &Context<'_>) -> Plan {
    let keep_alive = request.keep_alive;
    let head = request.head.method == Method::Head;
    if let Some(tokens) = &context.tokens
        && let Err(error) = auth::check(&request.head, tokens, context.args.metrics_open)
    {
        return Plan {
            head,
            ..Plan::error(error, keep_alive)
        };
    }
    let stale = request.head.query.split('&').any(|pair| pair == "consistency=stale");
    let routed = admin::route(&request)
        .or_else(|| admin::route_cluster(&request, context.args))
        .or_else(|| v1::route(&request, context))
        .or_else(|| compat::route(&request, context.args));
    let (ops, render) = match routed {
        // Until every shard has loaded `--load`, no half-loaded data is served.
        Some(Ok((Ops::One(_) | Ops::Many(_) | Ops::Txn(_), _) | (_, Render::List(_) | Render::Watch(_))))
            if !context.ready =>
        {
            (
                Ops::None,
                Render::Error(Error::Unavailable(
                    "not ready: still loading data (--load, or recovering --data-dir)",
                )),
            )
        }
        Some(Ok(planned)) => planned,
        Some(Err(error)) => (Ops::None, Render::Error(error)),
        None => (Ops::None, Render::Error(Error::RouteNotFound)),
    };
    // A watch streams until the connection closes.
    let keep_alive = keep_alive && !matches!(render, Render::Watch(_));
    Plan {
        ops,
        render,
        keep_alive,
        head,
        stale,
    }
}

/// Writes the response of a plan with no operations; returns its status.
pub fn render_now(render: &Render, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
    match render {
        Render::Error(error) => {
            response::error(out, error, keep_alive);
            error.status()
        }
        Render::Json(status, body) => {
            response::json(out, *status, body, keep_alive);
            *status
        }
        Render::Static(content_type, body) => {
            response::full(out, 200, content_type, body, keep_alive, &[]);
            200
        }
        // Plans with operations never reach here; answer safely rather than panic.
        _ => internal_error(out, "response without outcome"),
    }
}

/// Answers a broken invariant with 503 (never a panic, never a 500 for a client's request).
fn internal_error(out: &mut Vec<u8>, what: &'static str) -> u16 {
    crate::log_limited!(log::Level::Error, "internal error: {what}");
    let error = Error::Unavailable("internal error");
    response::error(out, &error, false);
    error.status()
}

/// Writes the response of a single-operation plan from its outcome; returns its status.
pub fn render_one(render: &Render, outcome: Outcome<&[u8]>, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
    let json = |out: &mut Vec<u8>, status: u16, body: &[u8], version: u64| {
        let etag = etag(version);
        response::full(
            out,
            status,
            response::JSON,
            body,
            keep_alive,
            &[("ETag", etag.as_bytes())],
        );
        status
    };
    match (render, outcome) {
        (Render::Value { head }, Outcome::Found { value, ttl_ms, version }) => {
            let mut digits = Vec::new();
            let etag = etag(version);
            let mut extra: [(&str, &[u8]); 2] = [("ETag", etag.as_bytes()), ("", b"")];
            let extra: &[(&str, &[u8])] = match ttl_ms {
                Some(ttl_ms) => {
                    response::push_decimal(&mut digits, ttl_ms);
                    extra[1] = ("X-TTL-Ms", &digits);
                    &extra
                }
                None => &extra[..1],
            };
            response::head(out, 200, response::OCTET_STREAM, value.len(), keep_alive, extra);
            if !head {
                out.extend_from_slice(value);
            }
            200
        }
        (Render::Write, Outcome::Created { version }) => json(out, 201, br#"{"created":true}"#, version),
        (Render::Write, Outcome::Replaced { version }) => json(out, 200, br#"{"created":false}"#, version),
        (Render::WriteWithStatus(status), Outcome::Created { version }) => {
            json(out, *status, br#"{"created":true}"#, version)
        }
        (Render::WriteWithStatus(status), Outcome::Replaced { version }) => {
            json(out, *status, br#"{"created":false}"#, version)
        }
        (Render::ValueJson, Outcome::Found { value, .. }) => {
            let body = serde_json::json!({ "value": String::from_utf8_lossy(value) });
            response::json(out, 200, &body, keep_alive);
            200
        }
        (Render::Update, Outcome::Updated { version }) => json(out, 200, br#"{"updated":true}"#, version),
        (Render::Delete, Outcome::Deleted(true)) => {
            response::full(out, 200, response::JSON, br#"{"deleted":true}"#, keep_alive, &[]);
            200
        }
        (Render::Delete, Outcome::Deleted(false)) => {
            response::full(out, 200, response::JSON, br#"{"deleted":false}"#, keep_alive, &[]);
            200
        }
        (_, Outcome::Missing) => render_error(out, &Error::KeyNotFound, keep_alive),
        (_, Outcome::Rejected(limit)) => render_error(out, &Error::InsufficientStorage(limit), keep_alive),
        (_, Outcome::PreconditionFailed { current }) => {
            render_error(out, &Error::PreconditionFailed { current }, keep_alive)
        }
        _ => internal_error(out, "outcome does not match the request"),
    }
}

/// A version as a strong ETag: its hex digits in quotes. Opaque to clients; stable for the
/// life of the key's current value.
pub fn etag(version: u64) -> Etag {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - version.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut bytes = [b'"'; 18];
    for at in 0..digits {
        bytes[digits - at] = HEX[((version >> (4 * at)) & 0xf) as usize];
    }
    Etag { bytes, len: digits + 2 }
}

/// An ETag's bytes, built without allocating (it is on every GET's path).
pub struct Etag {
    bytes: [u8; 18],
    len: usize,
}

impl Etag {
    /// The header value, quotes included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads an ETag back: `None` unless it is one [`etag`] could have written.
pub fn parse_etag(text: &[u8]) -> Option<u64> {
    let hex = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if hex.is_empty() || hex.len() > 16 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let version = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    (version != 0 && version < Condition::FIRST_RESERVED).then_some(version)
}

/// The condition a write's `If-Match` / `If-None-Match` headers put on it. `If-Match: *` needs
/// the key to exist, `If-Match: "<etag>"` that exact version, `If-None-Match: *` that the key
/// does not exist. An ETag this server could never have written (a weak one, another server's)
/// never matches: 412 at once. Lists and other `If-None-Match` values are 400.
pub fn write_condition(head: &HeadInfo<'_>) -> Result<Condition, Error> {
    match (head.if_match, head.if_none_match) {
        (None, None) => Ok(Condition::NONE),
        (Some(_), Some(_)) => Err(Error::bad_request("send If-Match or If-None-Match, not both")),
        (None, Some(b"*")) => Ok(Condition::IF_ABSENT),
        (None, Some(_)) => Err(Error::bad_request(
            "If-None-Match on a write takes only * (create only)",
        )),
        (Some(b"*"), None) => Ok(Condition::IF_EXISTS),
        (Some(value), None) if value.contains(&b',') => Err(Error::bad_request("If-Match takes one ETag, not a list")),
        (Some(value), None) => match parse_etag(value) {
            Some(version) => Ok(Condition::if_version(version)),
            None => Err(Error::PreconditionFailed { current: None }),
        },
    }
}

/// Writes an error response; returns its status.
pub fn render_error(out: &mut Vec<u8>, error: &Error, keep_alive: bool) -> u16 {
    response::error(out, error, keep_alive);
    error.status()
}

/// Writes a bulk update's response: 200 when every key existed, 206 when some were missing.
pub fn render_bulk(keys: &[String], updated: &[bool], keys_only: bool, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
    let (mut done, mut missing) = (Vec::new(), Vec::new());
    for (key, &was_updated) in keys.iter().zip(updated) {
        if was_updated {
            done.push(key.as_str())
        } else {
            missing.push(key.as_str())
        }
    }
    let status = if missing.is_empty() { 200 } else { 206 };
    let body = if keys_only {
        serde_json::json!(done)
    } else {
        serde_json::json!({ "updated": done, "missing": missing })
    };
    response::json(out, status, &body, keep_alive);
    status
}

/// Decodes `%XX` escapes (a `+` stays a `+`: this is a path, not a form).
pub fn percent_decode(text: &str) -> Result<Cow<'_, [u8]>, Error> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => decoded.push((high * 16 + low) as u8),
                _ => return Err(Error::bad_request("bad percent-encoding in the key")),
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Ok(Cow::Owned(decoded))
}

/// Checks a decoded key against the limits: 400 when empty, 414 when too long.
pub fn check_key(key: &[u8], args: &ServeArgs) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::bad_request("empty key"));
    }
    let limit = args.key_bytes_max as usize;
    if key.len() > limit {
        return Err(Error::UriTooLong { size: key.len(), limit });
    }
    Ok(())
}

/// Refuses writes in `--read-only` mode; `allow` lists the methods the route still takes then
/// (its reads, or none), for the 405's `Allow` header.
pub fn check_writable(args: &ServeArgs, allow: &'static str) -> Result<(), Error> {
    if args.read_only {
        Err(Error::ReadOnly { allow })
    } else {
        Ok(())
    }
}

/// The `ttl_ms` query parameter: `None` when absent; 400 unless a whole number of ms in range.
pub fn ttl_from_query(query: &str) -> Result<Option<u64>, Error> {
    let mut ttl = None;
    for pair in query.split('&') {
        if let Some(text) = pair.strip_prefix("ttl_ms=") {
            ttl = Some(parse_ttl_ms(text)?);
        }
    }
    Ok(ttl)
}

/// Parses a TTL in milliseconds: digits only, 1 to `TTL_MS_MAX`.
pub fn parse_ttl_ms(text: &str) -> Result<u64, Error> {
    text.parse::<u64>()
        .ok()
        .filter(|ttl| (1..=crate::limits::TTL_MS_MAX).contains(ttl) && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Error::BadRequest(
                format!(
                    "ttl_ms must be a whole number of milliseconds from 1 to {}",
                    crate::limits::TTL_MS_MAX
                )
                .into(),
            )
        })
}

/// Checks a value's size against `--max-value-bytes`.
pub fn check_value(value: &[u8], args: &ServeArgs) -> Result<(), Error> {
    let limit = u64::from(args.value_bytes_max);
    if value.len() as u64 > limit {
        return Err(Error::PayloadTooLarge {
            what: "value",
            size: value.len() as u64,
            limit,
            flag: "--max-value-bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_slashes_and_rejects_garbage() {
        assert_eq!(&*percent_decode("a%2Fb%2fc").unwrap(), b"a/b/c");
        assert_eq!(&*percent_decode("a/b/c").unwrap(), b"a/b/c");
        assert_eq!(&*percent_decode("%00%ff+").unwrap(), b"\x00\xff+");
        assert_eq!(percent_decode("a%2").unwrap_err().status(), 400);
        assert_eq!(percent_decode("a%zz").unwrap_err().status(), 400);
    }

    #[test]
    fn ttl_query_is_strict() {
        assert_eq!(ttl_from_query(""), Ok(None));
        assert_eq!(ttl_from_query("a=1&ttl_ms=250"), Ok(Some(250)));
        for bad in [
            "ttl_ms=",
            "ttl_ms=0",
            "ttl_ms=-5",
            "ttl_ms=1.5",
            "ttl_ms=+5",
            "ttl_ms=99999999999999999999",
        ] {
            assert_eq!(ttl_from_query(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn found_values_carry_their_ttl_header() {
        let mut out = Vec::new();
        let status = render_one(
            &Render::Value { head: false },
            Outcome::Found {
                value: b"v",
                ttl_ms: Some(42),
                version: 0x2a,
            },
            true,
            &mut out,
        );
        assert_eq!(status, 200);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nX-TTL-Ms: 42\r\n") && text.ends_with("\r\n\r\nv"),
            "{text}"
        );
        assert!(text.contains("\r\nETag: \"2a\"\r\n"), "{text}");
        let mut out = Vec::new();
        assert_eq!(
            render_one(
                &Render::Write,
                Outcome::Rejected(crate::shard::message::Limit::Keys(3)),
                true,
                &mut out
            ),
            507
        );
    }

    #[test]
    fn head_of_a_missing_key_announces_the_length_get_sends() {
        let length = |head: bool| {
            let mut out = Vec::new();
            assert_eq!(
                render_one(&Render::Value { head }, Outcome::Missing, true, &mut out),
                404
            );
            let text = String::from_utf8(out).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("Content-Length: "))
                .unwrap()
                .to_string();
            (line, text)
        };
        let ((get, get_text), (head, _)) = (length(false), length(true));
        assert_eq!(get, head, "{get_text}");
        assert_ne!(get, "Content-Length: 0", "GET of a missing key has a JSON error body");
    }

    #[test]
    fn get_head_and_delete_take_no_body_on_any_route() {
        let args = ServeArgs::from_flags(&[]);
        let limit = |method, path| body_limit(&HeadInfo::of(method, path), &args);
        for path in [
            "/v1/keys/k",
            "/v1/ping",
            "/v1/stats",
            "/metrics",
            "/v1/readiness",
            "/get",
            "/k",
            "/nope",
        ] {
            for method in [Method::Get, Method::Head, Method::Delete] {
                assert!(!limit(method, path).takes_body(), "{method:?} {path}");
            }
        }
        assert_eq!(limit(Method::Put, "/v1/keys/k").bytes, u64::from(args.value_bytes_max));
        assert_eq!(
            limit(Method::Patch, "/v1/keys").bytes,
            u64::from(args.json_body_bytes_max)
        );
        assert!(
            limit(Method::Post, "/metrics").takes_body(),
            "answered 405, not refused unread"
        );
    }

    #[test]
    fn etags_round_trip_and_conditions_follow_the_headers() {
        assert_eq!(etag(0x2a).as_bytes(), b"\"2a\"");
        assert_eq!(etag(0).as_bytes(), b"\"0\"");
        for version in [1, 0x2a, 0x10, Condition::FIRST_RESERVED - 1] {
            assert_eq!(parse_etag(etag(version).as_bytes()), Some(version));
        }
        for bad in [
            &b"2a"[..],
            b"W/\"2a\"",
            b"\"\"",
            b"\"0\"",
            b"\"zz\"",
            b"\"12345678901234567\"",
        ] {
            assert_eq!(parse_etag(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let head = |if_match, if_none_match| HeadInfo {
            if_match,
            if_none_match,
            ..HeadInfo::of(Method::Put, "/v1/keys/k")
        };
        assert_eq!(write_condition(&head(None, None)), Ok(Condition::NONE));
        assert_eq!(write_condition(&head(None, Some(b"*"))), Ok(Condition::IF_ABSENT));
        assert_eq!(write_condition(&head(Some(b"*"), None)), Ok(Condition::IF_EXISTS));
        assert_eq!(
            write_condition(&head(Some(b"\"ff\""), None)),
            Ok(Condition::if_version(255))
        );
        assert_eq!(
            write_condition(&head(Some(b"W/\"ff\""), None)).unwrap_err().status(),
            412
        );
        for (m, n) in [
            (Some(&b"*"[..]), Some(&b"*"[..])),
            (None, Some(b"\"ff\"")),
            (Some(b"\"1\", \"2\""), None),
        ] {
            assert_eq!(write_condition(&head(m, n)).unwrap_err().status(), 400);
        }
    }

    #[test]
    fn bulk_status_is_206_when_any_key_is_missing() {
        let keys = vec!["a".to_string(), "b".to_string()];
        let mut out = Vec::new();
        render_bulk(&keys, &[true, true], false, true, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 200 "));
        let mut out = Vec::new();
        render_bulk(&keys, &[true, false], false, true, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 206 "));
        assert!(out.ends_with(br#"{"missing":["b"],"updated":["a"]}"#));
    }
}
