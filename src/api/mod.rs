//! What each route means. [`plan`] turns a parsed request into store operations plus a
//! [`Render`] that says how their outcomes become a response; [`Plan::render`] writes that
//! response from the outcomes.
//!
//! Owns URL and body semantics (keys, JSON, base64, status codes). It never performs I/O and
//! never touches a store: operations run on their owners through [`crate::shard::dispatch`].

pub mod admin;
pub mod compat;
pub mod v1;

use std::borrow::Cow;

use crate::config::ServeArgs;
use crate::error::Error;
use crate::http::request::{BodyLimit, HeadInfo, Method, Request};
use crate::http::response;
pub use crate::shard::dispatch::Ops;
use crate::shard::dispatch::Outcomes;
use crate::shard::message::Outcome;

/// What a route needs to know about the server to plan a request.
pub struct Context<'a> {
    pub args: &'a ServeArgs,
    /// True once every shard is serving (for `/v1/readiness`).
    pub ready: bool,
    /// Shards serving so far and in all, for the readiness message.
    pub ready_shards: (usize, usize),
}

/// How a request's outcomes become its response.
#[derive(Debug)]
pub enum Render {
    /// Answer at once with an error.
    Error(Error),
    /// Answer at once with a JSON body.
    Json(u16, serde_json::Value),
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

    /// Writes this request's response from the outcomes of its operations, read in the order
    /// [`plan`] listed them; returns its status. `keep_alive: false` answers `Connection: close`.
    pub fn render(&self, outcomes: &mut impl Outcomes, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
        let start = out.len();
        let status = match &self.render {
            Render::Error(_) | Render::Json(..) => render_now(&self.render, keep_alive, out),
            Render::BulkUpdate { keys, keys_only } => {
                let updated: Result<Vec<bool>, Error> = keys
                    .iter()
                    .map(|_| outcomes.next(|outcome| outcome.map(|outcome| matches!(outcome, Outcome::Updated))))
                    .collect();
                match updated {
                    Ok(updated) => render_bulk(keys, &updated, *keys_only, keep_alive, out),
                    Err(error) => render_error(out, &error, keep_alive),
                }
            }
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
    let stale = request.head.query.split('&').any(|pair| pair == "consistency=stale");
    let routed = admin::route(&request)
        .or_else(|| admin::route_cluster(&request, context.args))
        .or_else(|| v1::route(&request, context))
        .or_else(|| compat::route(&request, context.args));
    let (ops, render) = match routed {
        // Until every shard has loaded `--load`, no half-loaded data is served.
        Some(Ok((Ops::One(_) | Ops::Many(_), _))) if !context.ready => (
            Ops::None,
            Render::Error(Error::Unavailable("not ready: still loading data (--load)")),
        ),
        Some(Ok(planned)) => planned,
        Some(Err(error)) => (Ops::None, Render::Error(error)),
        None => (Ops::None, Render::Error(Error::RouteNotFound)),
    };
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
    let json = |out: &mut Vec<u8>, status: u16, body: &[u8]| {
        response::full(out, status, response::JSON, body, keep_alive, &[]);
        status
    };
    match (render, outcome) {
        (Render::Value { head }, Outcome::Found { value, ttl_ms }) => {
            let mut digits = Vec::new();
            let extra: &[(&str, &[u8])] = match ttl_ms {
                Some(ttl_ms) => {
                    response::push_decimal(&mut digits, ttl_ms);
                    &[("X-TTL-Ms", &digits)]
                }
                None => &[],
            };
            response::head(out, 200, response::OCTET_STREAM, value.len(), keep_alive, extra);
            if !head {
                out.extend_from_slice(value);
            }
            200
        }
        (Render::Write, Outcome::Created) => json(out, 201, br#"{"created":true}"#),
        (Render::Write, Outcome::Replaced) => json(out, 200, br#"{"created":false}"#),
        (Render::WriteWithStatus(status), Outcome::Created) => json(out, *status, br#"{"created":true}"#),
        (Render::WriteWithStatus(status), Outcome::Replaced) => json(out, *status, br#"{"created":false}"#),
        (Render::ValueJson, Outcome::Found { value, .. }) => {
            let body = serde_json::json!({ "value": String::from_utf8_lossy(value) });
            response::json(out, 200, &body, keep_alive);
            200
        }
        (Render::Update, Outcome::Updated) => json(out, 200, br#"{"updated":true}"#),
        (Render::Delete, Outcome::Deleted(true)) => json(out, 200, br#"{"deleted":true}"#),
        (Render::Delete, Outcome::Deleted(false)) => json(out, 200, br#"{"deleted":false}"#),
        (_, Outcome::Missing) => render_error(out, &Error::KeyNotFound, keep_alive),
        (_, Outcome::Rejected(limit)) => render_error(out, &Error::InsufficientStorage(limit), keep_alive),
        _ => internal_error(out, "outcome does not match the request"),
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
        use clap::Parser;
        let crate::config::Command::Serve(args) = crate::config::Cli::parse_from(["corekv", "serve"]).command else {
            unreachable!("`serve` parses to Command::Serve")
        };
        let limit = |method, path| {
            body_limit(
                &HeadInfo {
                    method,
                    path,
                    query: "",
                    json: false,
                },
                &args,
            )
        };
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
