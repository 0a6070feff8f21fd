//! `GET /v1/keys?prefix=P&limit=N&cursor=C&values=true`: what a prefix listing's parameters
//! mean, and its body's JSON, rendered one item at a time.
//!
//! Owns the parameters' checks (400 for a bad one, 414 for a prefix longer than a key), the
//! cursor's encoding (the last key returned, base64url without padding) and the body's shape:
//! `{"keys": [...], "cursor": "..."}`, or `{"items": [{"key", "value"}], "cursor"}` with
//! values. It never performs I/O: [`crate::http::stream`] writes what it renders.

use base64::Engine;

use super::{Context, percent_decode};
use crate::config::Design;
use crate::error::Error;
use crate::limits::LIST_LIMIT_MAX;

/// A checked listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSpec {
    pub prefix: Box<[u8]>,
    /// Keys after this one only (the decoded cursor).
    pub after: Option<Box<[u8]>>,
    /// Most keys in this response; `None`: all of them.
    pub limit: Option<u64>,
    pub values: bool,
}

const CURSOR: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Plans a listing from the query string; 501 where no key index is kept.
pub fn plan(query: &str, context: &Context<'_>) -> Result<ListSpec, Error> {
    let args = context.args;
    if args.design == Design::Locked {
        return Err(Error::NotImplemented(
            "listing keys in --design locked (it keeps no ordered key index)",
        ));
    }
    if !args.key_index {
        return Err(Error::NotImplemented(
            "listing keys needs the key index: start the server with --key-index",
        ));
    }
    parse(query, args.key_bytes_max as usize)
}

/// Parses `prefix`, `limit`, `cursor` and `values`; any other parameter is a 400.
fn parse(query: &str, key_bytes_max: usize) -> Result<ListSpec, Error> {
    let mut spec = ListSpec {
        prefix: Box::default(),
        after: None,
        limit: None,
        values: false,
    };
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, text) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "prefix" => {
                let prefix = percent_decode(text)?;
                if prefix.len() > key_bytes_max {
                    return Err(Error::UriTooLong {
                        size: prefix.len(),
                        limit: key_bytes_max,
                    });
                }
                spec.prefix = prefix.into_owned().into();
            }
            "limit" => spec.limit = Some(parse_limit(text)?),
            "cursor" => spec.after = Some(decode_cursor(text, key_bytes_max)?),
            "values" => {
                spec.values = match text {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(Error::bad_request("values must be true or false")),
                }
            }
            _ => {
                return Err(Error::bad_request(
                    "unknown listing parameter: the listing takes prefix, limit, cursor and values",
                ));
            }
        }
    }
    Ok(spec)
}

fn parse_limit(text: &str) -> Result<u64, Error> {
    text.parse::<u64>()
        .ok()
        .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit) && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::BadRequest(format!("limit must be a whole number from 1 to {LIST_LIMIT_MAX}").into()))
}

fn decode_cursor(text: &str, key_bytes_max: usize) -> Result<Box<[u8]>, Error> {
    let bad = || Error::bad_request("cursor is not one this server returned");
    let key = CURSOR.decode(text.as_bytes()).map_err(|_| bad())?;
    if key.is_empty() || key.len() > key_bytes_max {
        return Err(bad());
    }
    Ok(key.into())
}

/// A listing body rendered piece by piece: [`ListBody::open`], an [`ListBody::item`] per key,
/// then [`ListBody::close`].
pub struct ListBody {
    values: bool,
    items: u64,
}

impl ListBody {
    pub fn new(values: bool) -> ListBody {
        ListBody { values, items: 0 }
    }

    /// Keys rendered so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    pub fn open(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.values { b"{\"items\":[" } else { b"{\"keys\":[" });
    }

    /// One key (and its value): JSON strings, invalid UTF-8 replaced by U+FFFD (the cursor
    /// keeps the exact bytes).
    pub fn item(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        if self.items > 0 {
            out.push(b',');
        }
        self.items += 1;
        if self.values {
            out.extend_from_slice(b"{\"key\":");
            push_string(out, key);
            out.extend_from_slice(b",\"value\":");
            push_string(out, value);
            out.push(b'}');
        } else {
            push_string(out, key);
        }
    }

    /// Ends the body; `cursor_key` (the last key sent) when more keys remain.
    pub fn close(&self, out: &mut Vec<u8>, cursor_key: Option<&[u8]>) {
        out.push(b']');
        if let Some(key) = cursor_key {
            out.extend_from_slice(b",\"cursor\":\"");
            out.extend_from_slice(CURSOR.encode(key).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
}

fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_strict() {
        let spec = parse("prefix=user%2F&limit=10&values=true", 8).unwrap();
        assert_eq!(
            spec,
            ListSpec {
                prefix: Box::from(&b"user/"[..]),
                after: None,
                limit: Some(10),
                values: true
            }
        );
        assert_eq!(parse("", 8).unwrap().prefix.len(), 0);
        let cursor = CURSOR.encode(b"user/1");
        assert_eq!(
            parse(&format!("cursor={cursor}"), 8).unwrap().after.as_deref(),
            Some(&b"user/1"[..])
        );
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=x",
            "limit=",
            "values=yes",
            "cursor=!!",
            "cursor=",
            "prefix=%zz",
            "sort=desc",
        ] {
            assert_eq!(parse(bad, 8).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(parse("prefix=123456789", 8).unwrap_err().status(), 414);
    }

    #[test]
    fn bodies_are_json_with_a_cursor_only_when_more_remain() {
        let render = |values: bool, cursor: Option<&[u8]>| {
            let mut out = Vec::new();
            let mut body = ListBody::new(values);
            body.open(&mut out);
            body.item(&mut out, b"a\"1", b"v1");
            body.item(&mut out, b"\xff", b"v2");
            body.close(&mut out, cursor);
            assert_eq!(body.items(), 2);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let keys = render(false, None);
        assert_eq!(keys, serde_json::json!({"keys": ["a\"1", "\u{fffd}"]}));
        let items = render(true, Some(b"\xff"));
        assert_eq!(items["items"][0], serde_json::json!({"key": "a\"1", "value": "v1"}));
        let cursor = items["cursor"].as_str().unwrap();
        assert_eq!(
            &*decode_cursor(cursor, 8).unwrap(),
            b"\xff",
            "the cursor keeps the bytes"
        );
    }
}
