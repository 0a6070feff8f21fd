//! Routes of the servers corekv replaces (`shared/seeds/`), so their clients work unchanged:
//!
//! - seed 000 (Simple KV): `POST /set`, `GET /get?key=K`, `PATCH /update`, `PATCH /updateBulk`,
//!   `DELETE /delete?key=K`;
//! - seed 001 (read-only server): `GET /keys/{key}`;
//! - seed 004 (KV Store API): `POST /{key}`, `POST /{key}/{ttl_ms}`, `GET /{key}`, `DELETE /{key}`,
//!   only for paths no other route owns.
//!
//! (Seed 002's API is `/v1`, in [`super::v1`].) Owns these routes' meaning only; it maps each
//! to the same store operations as v1, and never touches a store or a socket.

use serde::Deserialize;

use super::v1::{path_key, plan_bulk_update, plan_get};
use super::{Ops, Render, check_key, check_value, check_writable, parse_ttl_ms, percent_decode};
use crate::config::ServeArgs;
use crate::error::Error;
use crate::http::request::{Method, Request};
use crate::shard::message::{Op, Record};

/// Plans a request for a seed's route; `None` when no seed route owns the path.
pub fn route(request: &Request<'_>, args: &ServeArgs) -> Option<Result<(Ops, Render), Error>> {
    let method = request.head.method;
    let body = &request.body;
    let query = request.head.query;
    let path = request.head.path;
    Some(
        match path {
            "/set" => only(method, Method::Post, "POST", || {
                let item = json_item(body)?;
                let record = item_record(&item, args)?;
                Ok((Ops::One(Op::put(record, None)), Render::WriteWithStatus(201)))
            }),
            "/get" => only_read(method, || {
                let key = query_key(query)?;
                check_key(&key, args)?;
                Ok((Ops::One(Op::Get(key.into_boxed_slice())), Render::ValueJson))
            }),
            "/update" => only(method, Method::Patch, "PATCH", || {
                let item = json_item(body)?;
                let record = item_record(&item, args)?;
                Ok((Ops::One(Op::update(record)), Render::Update))
            }),
            "/updateBulk" => only(method, Method::Patch, "PATCH", || {
                if super::v1::atomic(query)? {
                    super::txn::plan_atomic_bulk(body, args, true)
                } else {
                    plan_bulk_update(body, args, true)
                }
            }),
            "/delete" => only(method, Method::Delete, "DELETE", || {
                let key = query_key(query)?;
                check_key(&key, args)?;
                Ok((Ops::One(Op::delete(&key)), Render::Delete))
            }),
            _ => {
                if let Some(encoded) = path.strip_prefix("/keys/") {
                    return Some(only_read(method, || Ok(plan_get(&path_key(encoded, args)?, method))));
                }
                return catch_all(request, args);
            }
        }
        .and_then(|planned| {
            if is_write(&planned.0) {
                // These routes each take one write method and nothing else.
                check_writable(args, "").map(|()| planned)
            } else {
                Ok(planned)
            }
        }),
    )
}

/// Seed 004's catch-all: `/{key}` and `/{key}/{ttl_ms}`.
fn catch_all(request: &Request<'_>, args: &ServeArgs) -> Option<Result<(Ops, Render), Error>> {
    let rest = request.head.path.strip_prefix('/')?;
    let (encoded, ttl) = match rest.split_once('/') {
        Some((key, ttl)) if !ttl.contains('/') => (key, Some(ttl)),
        Some(_) => return None,
        None => (rest, None),
    };
    if encoded.is_empty() {
        return None;
    }
    let method = request.head.method;
    Some((|| {
        let key = path_key(encoded, args)?;
        // `/{key}` still reads in `--read-only` mode; `/{key}/{ttl_ms}` only ever writes.
        let read_only_allow = if ttl.is_none() { "GET, HEAD" } else { "" };
        match (method, ttl) {
            (Method::Post, ttl) => {
                check_writable(args, read_only_allow)?;
                let ttl_ms = ttl.map(parse_ttl_ms).transpose()?;
                check_value(&request.body, args)?;
                let record = Record::new(&key, &request.body);
                Ok((Ops::One(Op::put(record, ttl_ms)), Render::WriteWithStatus(200)))
            }
            (Method::Get | Method::Head, None) => Ok(plan_get(&key, method)),
            (Method::Delete, None) => {
                check_writable(args, read_only_allow)?;
                Ok((Ops::One(Op::delete(&key)), Render::Delete))
            }
            (_, None) => Err(Error::MethodNotAllowed {
                allow: "GET, HEAD, POST, DELETE",
            }),
            (_, Some(_)) => Err(Error::MethodNotAllowed { allow: "POST" }),
        }
    })())
}

fn is_write(ops: &Ops) -> bool {
    match ops {
        Ops::One(op) => !matches!(op, Op::Get(_)),
        Ops::Many(_) | Ops::Txn(_) => true,
        Ops::None | Ops::Stats => false,
    }
}

fn only(
    method: Method,
    allowed: Method,
    allow: &'static str,
    plan: impl FnOnce() -> Result<(Ops, Render), Error>,
) -> Result<(Ops, Render), Error> {
    if method == allowed {
        plan()
    } else {
        Err(Error::MethodNotAllowed { allow })
    }
}

fn only_read(method: Method, plan: impl FnOnce() -> Result<(Ops, Render), Error>) -> Result<(Ops, Render), Error> {
    match method {
        Method::Get | Method::Head => plan(),
        _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
    }
}

/// `{"key": "...", "value": ...}`: a string value is stored as its text, any other JSON value
/// as its JSON text.
#[derive(Deserialize)]
struct Item {
    key: String,
    value: serde_json::Value,
}

fn json_item(body: &[u8]) -> Result<Item, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body must be {{\"key\": \"...\", \"value\": \"...\"}}: {e}").into()))
}

fn item_record(item: &Item, args: &ServeArgs) -> Result<Record, Error> {
    check_key(item.key.as_bytes(), args)?;
    let text;
    let value = match &item.value {
        serde_json::Value::String(value) => value.as_bytes(),
        other => {
            text = other.to_string();
            text.as_bytes()
        }
    };
    check_value(value, args)?;
    Ok(Record::new(item.key.as_bytes(), value))
}

/// The `key` query parameter, form-decoded (`+` is a space, as Go's `URL.Query` reads it).
fn query_key(query: &str) -> Result<Vec<u8>, Error> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("key=") {
            return Ok(percent_decode(&value.replace('+', " "))?.into_owned());
        }
    }
    Err(Error::bad_request("missing query parameter `key`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::HeadInfo;
    use std::borrow::Cow;

    fn args(extra: &[&str]) -> ServeArgs {
        ServeArgs::from_flags(extra)
    }

    fn plan(method: Method, target: &str, body: &[u8], extra: &[&str]) -> Option<Result<(Ops, Render), Error>> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            head: HeadInfo {
                query,
                json: true,
                ..HeadInfo::of(method, path)
            },
            body: Cow::Borrowed(body),
            keep_alive: true,
        };
        route(&request, &args(extra))
    }

    #[test]
    fn seed_000_routes_map_to_store_operations() {
        let Some(Ok((
            Ops::One(Op::Put {
                record, ttl_ms: None, ..
            }),
            Render::WriteWithStatus(201),
        ))) = plan(Method::Post, "/set", br#"{"key":"k","value":"v"}"#, &[])
        else {
            panic!()
        };
        assert_eq!((record.key(), record.value()), (&b"k"[..], &b"v"[..]));
        let Some(Ok((Ops::One(Op::Get(key)), Render::ValueJson))) = plan(Method::Get, "/get?key=a+b%21", b"", &[])
        else {
            panic!()
        };
        assert_eq!(&*key, b"a b!");
        assert_eq!(plan(Method::Get, "/get", b"", &[]).unwrap().unwrap_err().status(), 400);
        assert_eq!(plan(Method::Get, "/set", b"", &[]).unwrap().unwrap_err().status(), 405);
        let Some(Ok((Ops::One(Op::Put { record, .. }), _))) =
            plan(Method::Post, "/set", br#"{"key":"n","value":5}"#, &[])
        else {
            panic!()
        };
        assert_eq!(record.value(), b"5", "non-string values are stored as JSON text");
    }

    #[test]
    fn seed_004_catch_all_takes_a_key_and_an_optional_ttl() {
        let Some(Ok((
            Ops::One(Op::Put {
                record,
                ttl_ms: Some(10),
                ..
            }),
            _,
        ))) = plan(Method::Post, "/9996/10", b"1", &[])
        else {
            panic!()
        };
        assert_eq!((record.key(), record.value()), (&b"9996"[..], &b"1"[..]));
        assert_eq!(
            plan(Method::Post, "/k/notanumber", b"1", &[])
                .unwrap()
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(plan(Method::Put, "/k", b"1", &[]).unwrap().unwrap_err().status(), 405);
        assert!(
            plan(Method::Get, "/a/b/c", b"", &[]).is_none(),
            "deeper paths are not keys"
        );
        assert!(plan(Method::Get, "/", b"", &[]).is_none());
    }

    #[test]
    fn read_only_refuses_every_write_route() {
        for (method, target, body, still_allowed) in [
            (Method::Post, "/set", &br#"{"key":"k","value":"v"}"#[..], ""),
            (Method::Patch, "/update", br#"{"key":"k","value":"v"}"#, ""),
            (Method::Patch, "/updateBulk", b"[]", ""),
            (Method::Delete, "/delete?key=k", b"", ""),
            (Method::Post, "/k", b"v", "GET, HEAD"),
            (Method::Post, "/k/10", b"v", ""),
            (Method::Delete, "/k", b"", "GET, HEAD"),
        ] {
            let error = plan(method, target, body, &["--read-only"]).unwrap().unwrap_err();
            assert_eq!(error, Error::ReadOnly { allow: still_allowed }, "{target}");
        }
        assert!(plan(Method::Get, "/keys/k", b"", &["--read-only"]).unwrap().is_ok());
    }
}
