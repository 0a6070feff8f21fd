//! The v1 API: `/v1/keys/{key}`, `/v1/keys` (bulk update, and listing: [`super::list`]),
//! `/v1/txn` (planned in [`super::txn`]), `/v1/watch/{key}` and `/v1/watch?prefix=`
//! ([`super::watch`]), `/v1/ping`, `/v1/readiness`.
//!
//! Owns these routes' meaning and their errors, and the planning the seeds' routes share with
//! them ([`plan_get`], [`plan_bulk_update`]). Like all of [`crate::api`], it never touches a
//! store or a socket.

use base64::Engine;
use serde::Deserialize;

use super::{
    Context, Ops, Render, check_key, check_value, check_writable, json_body_limit, percent_decode, ttl_from_query,
    write_condition,
};
use crate::config::ServeArgs;
use crate::error::Error;
use crate::http::request::{BodyLimit, HeadInfo, Method, Request};
use crate::limits::BULK_ITEMS_MAX;
use crate::shard::message::{Op, Record};

const KEY_PREFIX: &str = "/v1/keys/";
const KEY_METHODS: &str = "GET, HEAD, PUT, POST, PATCH, DELETE";
/// What a key route still takes in `--read-only` mode.
const READ_METHODS: &str = "GET, HEAD";

/// The body limit of a v1 key route, or `None` when the path is not one of them (GET, HEAD and
/// DELETE, which take no body, are decided before: see [`super::body_limit`]).
pub fn body_limit(head: &HeadInfo<'_>, args: &ServeArgs) -> Option<BodyLimit> {
    if !head.path.starts_with(KEY_PREFIX) {
        return None;
    }
    Some(match head.method {
        Method::Post if head.json => json_body_limit(args),
        _ => BodyLimit {
            bytes: u64::from(args.value_bytes_max),
            what: "value",
            flag: "--max-value-bytes",
        },
    })
}

/// Plans a v1 request; `None` when the path is not a v1 route.
pub fn route(request: &Request<'_>, context: &Context<'_>) -> Option<Result<(Ops, Render), Error>> {
    let head = &request.head;
    let method = head.method;
    if let Some(encoded) = head.path.strip_prefix(KEY_PREFIX) {
        return Some(key_route(method, encoded, request, context.args));
    }
    if let Some(encoded) = head.path.strip_prefix(super::watch::WATCH_PREFIX) {
        return Some(watch_route(method, Some(encoded), head.query, context));
    }
    Some(match head.path {
        "/v1/keys" => match method {
            Method::Get => super::list::plan(head.query, context).map(|spec| (Ops::None, Render::List(spec))),
            Method::Patch => check_writable(context.args, "GET").and_then(|()| {
                if atomic(request.head.query)? {
                    super::txn::plan_atomic_bulk(&request.body, context.args, false)
                } else {
                    plan_bulk_update(&request.body, context.args, false)
                }
            }),
            _ => Err(Error::MethodNotAllowed { allow: "GET, PATCH" }),
        },
        "/v1/watch" => watch_route(method, None, head.query, context),
        "/v1/txn" => match method {
            Method::Post => super::txn::plan_txn(&request.body, context.args),
            _ => Err(Error::MethodNotAllowed { allow: "POST" }),
        },
        "/v1/ping" => match method {
            Method::Get | Method::Head => Ok((Ops::None, Render::Json(200, serde_json::json!({ "status": "ok" })))),
            _ => Err(Error::MethodNotAllowed { allow: READ_METHODS }),
        },
        "/v1/readiness" => match method {
            Method::Get | Method::Head => Ok((Ops::None, readiness(context))),
            _ => Err(Error::MethodNotAllowed { allow: READ_METHODS }),
        },
        // Everything under /v1/ belongs to this API, so a typo is a 404, never a seed's key.
        path if path.starts_with("/v1/") => Err(Error::RouteNotFound),
        _ => return None,
    })
}

fn watch_route(method: Method, key: Option<&str>, query: &str, context: &Context<'_>) -> Result<(Ops, Render), Error> {
    match method {
        Method::Get => super::watch::plan(key, query, context).map(|spec| (Ops::None, Render::Watch(spec))),
        _ => Err(Error::MethodNotAllowed { allow: "GET" }),
    }
}

fn readiness(context: &Context<'_>) -> Render {
    let (serving, total) = context.ready_shards;
    if context.ready {
        Render::Json(200, serde_json::json!({ "ready": true, "shards": total }))
    } else {
        Render::Json(
            503,
            serde_json::json!({ "error": format!("not ready: {serving} of {total} shards serving"), "ready": false }),
        )
    }
}

fn key_route(method: Method, encoded: &str, request: &Request<'_>, args: &ServeArgs) -> Result<(Ops, Render), Error> {
    if method == Method::Other {
        return Err(Error::MethodNotAllowed { allow: KEY_METHODS });
    }
    let key = path_key(encoded, args)?;
    if let Method::Get | Method::Head = method {
        return Ok(plan_get(&key, method));
    }
    check_writable(args, READ_METHODS)?;
    let body = &request.body;
    let condition = write_condition(&request.head)?;
    Ok(match method {
        Method::Delete => (
            Ops::One(Op::Delete {
                key: Box::from(&*key),
                condition,
            }),
            Render::Delete,
        ),
        Method::Patch => {
            check_value(body, args)?;
            let record = Record::new(&key, body);
            (Ops::One(Op::Update { record, condition }), Render::Update)
        }
        // PUT, and POST (base64 JSON, or raw bytes like PUT).
        _ => {
            let ttl_ms = ttl_from_query(request.head.query)?;
            let decoded;
            let value: &[u8] = if method == Method::Post && request.head.json {
                decoded = base64_value(body)?;
                &decoded
            } else {
                body
            };
            check_value(value, args)?;
            (
                Ops::One(Op::Put {
                    record: Record::new(&key, value),
                    ttl_ms,
                    condition,
                }),
                Render::Write,
            )
        }
    })
}

/// The `atomic` query parameter of a bulk update: `true` or `false` (absent: `false`).
pub(super) fn atomic(query: &str) -> Result<bool, Error> {
    let mut atomic = false;
    for pair in query.split('&') {
        match pair {
            "atomic=true" => atomic = true,
            "atomic=false" => atomic = false,
            pair if pair.starts_with("atomic=") => return Err(Error::bad_request("atomic must be true or false")),
            _ => {}
        }
    }
    Ok(atomic)
}

/// `{"value": "<base64>"}` → the value's bytes.
fn base64_value(body: &[u8]) -> Result<Vec<u8>, Error> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        value: std::borrow::Cow<'a, str>,
    }
    let parsed: Body<'_> = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body must be {{\"value\": \"<base64>\"}}: {e}").into()))?;
    base64::engine::general_purpose::STANDARD
        .decode(parsed.value.as_bytes())
        .map_err(|e| Error::BadRequest(format!("value is not valid base64: {e}").into()))
}

/// One item of a bulk update.
#[derive(Deserialize)]
pub struct BulkItem {
    pub key: String,
    pub value: String,
}

/// Parses and checks a bulk update body `[{"key": "...", "value": "..."}, ...]`.
pub fn parse_bulk(body: &[u8], args: &ServeArgs) -> Result<Vec<BulkItem>, Error> {
    let items: Vec<BulkItem> = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!("body must be a JSON array of {{\"key\": ..., \"value\": ...}}: {e}").into())
    })?;
    if items.len() > BULK_ITEMS_MAX {
        return Err(Error::TooManyItems {
            count: items.len(),
            limit: BULK_ITEMS_MAX,
        });
    }
    for item in &items {
        check_key(item.key.as_bytes(), args)?;
        check_value(item.value.as_bytes(), args)?;
    }
    Ok(items)
}

/// A key from a path segment: percent-decoded, then checked against the key limits.
pub(super) fn path_key<'a>(encoded: &'a str, args: &ServeArgs) -> Result<std::borrow::Cow<'a, [u8]>, Error> {
    let key = percent_decode(encoded)?;
    check_key(&key, args)?;
    Ok(key)
}

/// A read of one checked key, by `GET` or `HEAD`: its value's bytes, or 404 (v1 and seeds
/// 001 and 004 read keys alike).
pub(super) fn plan_get(key: &[u8], method: Method) -> (Ops, Render) {
    (
        Ops::One(Op::Get(Box::from(key))),
        Render::Value {
            head: method == Method::Head,
        },
    )
}

/// A bulk update: one `Update` op per item, in order. `keys_only` answers seed 000's plain list
/// of updated keys instead of v1's `{"updated": [...], "missing": [...]}`.
pub(super) fn plan_bulk_update(body: &[u8], args: &ServeArgs, keys_only: bool) -> Result<(Ops, Render), Error> {
    let items = parse_bulk(body, args)?;
    let ops = items
        .iter()
        .map(|item| Op::update(Record::new(item.key.as_bytes(), item.value.as_bytes())))
        .collect();
    let keys = items.into_iter().map(|item| item.key).collect();
    Ok((Ops::Many(ops), Render::BulkUpdate { keys, keys_only }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn args() -> ServeArgs {
        ServeArgs::from_flags(&["--max-key-bytes", "8", "--max-value-bytes", "4"])
    }

    fn run(method: Method, path: &str, json: bool, body: &[u8]) -> Result<(Ops, Render), Error> {
        let args = args();
        let context = Context {
            args: &args,
            ready: true,
            ready_shards: (2, 2),
            tokens: None,
        };
        let request = Request {
            head: HeadInfo {
                json,
                ..HeadInfo::of(method, path)
            },
            body: Cow::Borrowed(body),
            keep_alive: true,
        };
        route(&request, &context).expect("a v1 route")
    }

    #[test]
    fn keys_are_decoded_and_bounded() {
        let (Ops::One(op), _) = run(Method::Get, "/v1/keys/a%2Fb", false, b"").unwrap() else {
            panic!()
        };
        assert_eq!(op, Op::Get(Box::from(&b"a/b"[..])));
        assert_eq!(run(Method::Get, "/v1/keys/", false, b"").unwrap_err().status(), 400);
        assert_eq!(
            run(Method::Get, "/v1/keys/123456789", false, b"").unwrap_err().status(),
            414
        );
        assert_eq!(
            run(Method::Put, "/v1/keys/k", false, b"12345").unwrap_err().status(),
            413
        );
        assert_eq!(run(Method::Other, "/v1/keys/k", false, b"").unwrap_err().status(), 405);
    }

    #[test]
    fn json_post_decodes_base64_and_checks_the_decoded_size() {
        let (
            Ops::One(Op::Put {
                record, ttl_ms: None, ..
            }),
            Render::Write,
        ) = run(Method::Post, "/v1/keys/k", true, br#"{"value":"aGk="}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(record.value(), b"hi");
        assert_eq!(
            run(Method::Post, "/v1/keys/k", true, br#"{"value":"!!"}"#)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run(Method::Post, "/v1/keys/k", true, br#"{"v":1}"#)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run(Method::Post, "/v1/keys/k", true, br#"{"value":"aGVsbG8="}"#)
                .unwrap_err()
                .status(),
            413
        );
    }

    #[test]
    fn bulk_update_becomes_update_ops_in_order() {
        let (Ops::Many(ops), Render::BulkUpdate { keys, .. }) = run(
            Method::Patch,
            "/v1/keys",
            false,
            br#"[{"key":"a","value":"1"},{"key":"b","value":"2"}]"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            ops,
            vec![Op::update(Record::new(b"a", b"1")), Op::update(Record::new(b"b", b"2"))]
        );
        assert_eq!(run(Method::Patch, "/v1/keys", false, b"{}").unwrap_err().status(), 400);
        assert_eq!(
            run(Method::Patch, "/v1/keys", false, br#"[{"key":"","value":"1"}]"#)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(run(Method::Put, "/v1/keys", false, b"").unwrap_err().status(), 405);
        let listing = run(Method::Get, "/v1/keys", false, b"").unwrap_err();
        assert_eq!(
            listing.status(),
            501,
            "GET lists keys, with --key-index only: {listing}"
        );
    }

    #[test]
    fn read_only_405s_name_what_the_route_still_takes() {
        let args = ServeArgs::from_flags(&["--read-only"]);
        let context = Context {
            args: &args,
            ready: true,
            ready_shards: (2, 2),
            tokens: None,
        };
        let refused = |method, path| {
            let request = Request {
                head: HeadInfo::of(method, path),
                body: Cow::Borrowed(b"[]"),
                keep_alive: true,
            };
            route(&request, &context).unwrap().unwrap_err()
        };
        assert_eq!(
            refused(Method::Put, "/v1/keys/k"),
            Error::ReadOnly { allow: "GET, HEAD" }
        );
        assert_eq!(
            refused(Method::Delete, "/v1/keys/k"),
            Error::ReadOnly { allow: "GET, HEAD" }
        );
        assert_eq!(refused(Method::Patch, "/v1/keys"), Error::ReadOnly { allow: "GET" });
    }

    #[test]
    fn too_many_bulk_items_are_counted_in_items() {
        let body = format!("[{}]", vec![r#"{"key":"k","value":"v"}"#; BULK_ITEMS_MAX + 1].join(","));
        let error = run(Method::Patch, "/v1/keys", false, body.as_bytes()).unwrap_err();
        assert_eq!(error.status(), 413);
        let message = error.to_string();
        assert!(message.contains("items") && !message.contains("bytes"), "{message}");
    }

    #[test]
    fn readiness_reflects_the_shards() {
        let args = args();
        let context = Context {
            args: &args,
            ready: false,
            ready_shards: (1, 2),
            tokens: None,
        };
        let Render::Json(status, body) = readiness(&context) else {
            panic!()
        };
        assert_eq!(status, 503);
        assert!(body["error"].as_str().unwrap().contains("1 of 2"));
    }
}
