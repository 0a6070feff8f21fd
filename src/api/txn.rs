//! `POST /v1/txn` (etcd's transaction shape, in JSON) and the all-or-nothing bulk update
//! (`PATCH /v1/keys?atomic=true`, seed 000's `/updateBulk?atomic=true`).
//!
//! Owns these routes' JSON, their limits and their answers. The protocol that makes them atomic
//! across shards is [`crate::shard::txn`]'s; like all of [`crate::api`], this never touches a
//! store or a socket.

use base64::Engine;
use serde::Deserialize;

use super::v1::{BulkItem, parse_bulk};
use super::{Ops, Render, check_key, check_value, etag, parse_etag};
use crate::config::ServeArgs;
use crate::error::Error;
use crate::http::response;
use crate::limits::{TXN_OPS_MAX, TXN_RESULT_VALUE_BYTES_MAX};
use crate::shard::message::{Op, Outcome, Record};
use crate::shard::txn::{Compare, Test, Txn, TxnAnswer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    exists: Option<bool>,
    version: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    op: OpKind,
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OpKind {
    Get,
    Set,
    Delete,
}

/// In cluster mode (`--peers`) transactions would bypass the Raft groups: they are refused
/// (501). With `--data-dir` they are logged like any write ([`crate::shard::txn`]).
fn refuse_when_replicated(args: &ServeArgs) -> Result<(), Error> {
    match args.peers {
        Some(_) => Err(Error::NotImplemented(
            "transactions and atomic bulk updates are not replicated yet: they are refused with --peers",
        )),
        None => Ok(()),
    }
}

/// Plans `POST /v1/txn`.
pub fn plan_txn(body: &[u8], args: &ServeArgs) -> Result<(Ops, Render), Error> {
    refuse_when_replicated(args)?;
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::bad_request(
            "body must be a JSON object {\"compare\": [...], \"success\": [...], \"failure\": [...]}",
        ));
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(
            format!("body must be {{\"compare\": [...], \"success\": [...], \"failure\": [...]}}: {e}").into(),
        )
    })?;
    let count = body.compare.len() + body.success.len() + body.failure.len();
    if count > TXN_OPS_MAX {
        return Err(Error::TooManyOps {
            count,
            limit: TXN_OPS_MAX,
        });
    }
    let compares = body
        .compare
        .into_iter()
        .map(|c| compare(c, args))
        .collect::<Result<_, _>>()?;
    let (success, success_keys) = branch(body.success, args)?;
    let (failure, failure_keys) = branch(body.failure, args)?;
    let txn = Txn {
        compares,
        success,
        failure,
    };
    let writes = txn
        .success
        .iter()
        .chain(&txn.failure)
        .any(|op| !matches!(op, Op::Get(_)));
    if writes && args.read_only {
        return Err(Error::ReadOnly { allow: "POST" });
    }
    let render = Render::Txn {
        success: success_keys,
        failure: failure_keys,
    };
    Ok((Ops::Txn(Box::new(txn)), render))
}

fn compare(body: CompareBody, args: &ServeArgs) -> Result<Compare, Error> {
    check_key(body.key.as_bytes(), args)?;
    let test = match (body.exists, body.version, body.value, body.value_base64) {
        (Some(exists), None, None, None) => Test::Exists(exists),
        (None, Some(version), None, None) => {
            let quoted = if version.starts_with('"') {
                version
            } else {
                format!("\"{version}\"")
            };
            // An ETag this server never wrote matches no key.
            Test::Version(parse_etag(quoted.as_bytes()).unwrap_or(u64::MAX))
        }
        (None, None, value, value_base64) if value.is_some() != value_base64.is_some() => {
            Test::Value(value_bytes(value, value_base64, args)?.into_boxed_slice())
        }
        _ => {
            return Err(Error::bad_request(
                "each compare names a key and exactly one of exists, version, value, value_base64",
            ));
        }
    };
    Ok(Compare {
        key: body.key.into_bytes().into_boxed_slice(),
        test,
    })
}

fn value_bytes(value: Option<String>, value_base64: Option<String>, args: &ServeArgs) -> Result<Vec<u8>, Error> {
    let bytes = match (value, value_base64) {
        (Some(value), None) => value.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| Error::BadRequest(format!("value_base64 is not valid base64: {e}").into()))?,
        _ => return Err(Error::bad_request("a set takes exactly one of value, value_base64")),
    };
    check_value(&bytes, args)?;
    Ok(bytes)
}

fn branch(ops: Vec<OpBody>, args: &ServeArgs) -> Result<(Vec<Op>, Vec<String>), Error> {
    let mut planned = Vec::with_capacity(ops.len());
    let mut keys = Vec::with_capacity(ops.len());
    for body in ops {
        check_key(body.key.as_bytes(), args)?;
        let key = body.key.as_bytes();
        let op = match body.op {
            OpKind::Get | OpKind::Delete if body.value.is_some() || body.value_base64.is_some() => {
                return Err(Error::bad_request("get and delete take no value"));
            }
            OpKind::Get => Op::Get(Box::from(key)),
            OpKind::Delete => Op::delete(key),
            OpKind::Set => Op::put(
                Record::new(key, &value_bytes(body.value, body.value_base64, args)?),
                None,
            ),
        };
        planned.push(op);
        keys.push(body.key);
    }
    Ok((planned, keys))
}

/// Plans an all-or-nothing bulk update: a transaction comparing that every key exists, then
/// updating each (keeping TTLs). `keys_only` answers seed 000's plain list on success.
pub fn plan_atomic_bulk(body: &[u8], args: &ServeArgs, keys_only: bool) -> Result<(Ops, Render), Error> {
    refuse_when_replicated(args)?;
    let items = parse_bulk(body, args)?;
    if 2 * items.len() > TXN_OPS_MAX {
        return Err(Error::TooManyOps {
            count: 2 * items.len(),
            limit: TXN_OPS_MAX,
        });
    }
    let compares = (items.iter())
        .map(|item| Compare {
            key: Box::from(item.key.as_bytes()),
            test: Test::Exists(true),
        })
        .collect();
    let success = (items.iter())
        .map(|item| Op::update(Record::new(item.key.as_bytes(), item.value.as_bytes())))
        .collect();
    let keys = items.into_iter().map(|BulkItem { key, .. }| key).collect();
    let txn = Txn {
        compares,
        success,
        failure: Vec::new(),
    };
    Ok((Ops::Txn(Box::new(txn)), Render::AtomicBulk { keys, keys_only }))
}

/// The JSON of one operation's result.
fn result_json(key: &str, outcome: &Outcome<Box<[u8]>>) -> serde_json::Value {
    let version = |version: u64| String::from_utf8_lossy(etag(version).as_bytes()).into_owned();
    match outcome {
        Outcome::Found { value, version: v, .. } => match std::str::from_utf8(value) {
            Ok(text) => serde_json::json!({ "key": key, "value": text, "version": version(*v) }),
            Err(_) => serde_json::json!({
                "key": key,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(value),
                "version": version(*v),
            }),
        },
        Outcome::Missing => serde_json::json!({ "key": key, "found": false }),
        Outcome::Created { version: v } => serde_json::json!({ "key": key, "created": true, "version": version(*v) }),
        Outcome::Replaced { version: v } | Outcome::Updated { version: v } => {
            serde_json::json!({ "key": key, "created": false, "version": version(*v) })
        }
        Outcome::Deleted(deleted) => serde_json::json!({ "key": key, "deleted": deleted }),
        Outcome::Rejected(limit) => {
            serde_json::json!({ "key": key, "error": Error::InsufficientStorage(*limit).to_string() })
        }
        Outcome::Withheld { version: v } => serde_json::json!({
            "key": key,
            "version": version(*v),
            "error": format!(
                "value not returned: the transaction's answer holds at most {TXN_RESULT_VALUE_BYTES_MAX} bytes of values"
            ),
        }),
        Outcome::PreconditionFailed { current } => {
            serde_json::json!({ "key": key, "error": Error::PreconditionFailed { current: *current }.to_string() })
        }
        Outcome::Refused(refusal) => serde_json::json!({ "key": key, "error": Error::from(*refusal).to_string() }),
    }
}

/// Writes `/v1/txn`'s answer: 200 `{"succeeded", "results"}` whichever branch ran.
pub fn render_txn(
    answer: &TxnAnswer,
    success: &[String],
    failure: &[String],
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> u16 {
    let keys = if answer.succeeded { success } else { failure };
    let results: Vec<serde_json::Value> = keys
        .iter()
        .zip(&answer.results)
        .map(|(k, o)| result_json(k, o))
        .collect();
    let body = serde_json::json!({ "succeeded": answer.succeeded, "results": results });
    response::json(out, 200, &body, keep_alive);
    200
}

/// Writes an atomic bulk update's answer: 200 with every key updated, or 409 naming the
/// missing keys, none updated.
pub fn render_atomic_bulk(
    answer: &TxnAnswer,
    keys: &[String],
    keys_only: bool,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> u16 {
    if answer.succeeded {
        let body = if keys_only {
            serde_json::json!(keys)
        } else {
            serde_json::json!({ "updated": keys, "missing": [] })
        };
        response::json(out, 200, &body, keep_alive);
        return 200;
    }
    let missing: Vec<&str> = answer
        .failed
        .iter()
        .filter_map(|&at| keys.get(at))
        .map(String::as_str)
        .collect();
    let body = serde_json::json!({
        "error": format!("{} of {} keys do not exist; nothing was updated", missing.len(), keys.len()),
        "missing": missing,
        "updated": [],
    });
    response::json(out, 409, &body, keep_alive);
    409
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::from_flags(&["--max-key-bytes", "8", "--max-value-bytes", "4"])
    }

    #[test]
    fn a_transaction_body_becomes_compares_and_branches() {
        let body = br#"{"compare":[{"key":"a","exists":true},{"key":"b","version":"\"2a\""},{"key":"c","value_base64":"eA=="}],
            "success":[{"op":"set","key":"a","value":"1"},{"op":"delete","key":"b"},{"op":"get","key":"c"}],
            "failure":[{"op":"get","key":"a"}]}"#;
        let (Ops::Txn(txn), Render::Txn { success, failure }) = plan_txn(body, &args()).unwrap() else {
            panic!()
        };
        assert_eq!(
            txn.compares.iter().map(|c| c.test.clone()).collect::<Vec<_>>(),
            [
                Test::Exists(true),
                Test::Version(0x2a),
                Test::Value(Box::from(&b"x"[..]))
            ]
        );
        assert_eq!(txn.success[0], Op::put(Record::new(b"a", b"1"), None));
        assert_eq!(txn.success[1], Op::delete(b"b"));
        assert_eq!((success.len(), failure), (3, vec!["a".to_string()]));
    }

    #[test]
    fn bad_transactions_get_their_4xx() {
        let status = |body: &str| plan_txn(body.as_bytes(), &args()).unwrap_err().status();
        assert_eq!(status("{"), 400);
        assert_eq!(status("[]"), 400, "the body is an object");
        assert_eq!(status(r#"{"compare":[{"key":"a"}]}"#), 400, "a compare needs a test");
        assert_eq!(status(r#"{"compare":[{"key":"a","exists":true,"value":"x"}]}"#), 400);
        assert_eq!(
            status(r#"{"success":[{"op":"set","key":"a"}]}"#),
            400,
            "a set needs a value"
        );
        assert_eq!(status(r#"{"success":[{"op":"get","key":"a","value":"x"}]}"#), 400);
        assert_eq!(status(r#"{"success":[{"op":"put","key":"a","value":"x"}]}"#), 400);
        assert_eq!(status(r#"{"oops":[]}"#), 400);
        assert_eq!(status(r#"{"success":[{"op":"get","key":""}]}"#), 400);
        assert_eq!(status(r#"{"success":[{"op":"get","key":"123456789"}]}"#), 414);
        assert_eq!(status(r#"{"success":[{"op":"set","key":"a","value":"12345"}]}"#), 413);
        let many = vec![r#"{"op":"get","key":"k"}"#; TXN_OPS_MAX + 1].join(",");
        assert_eq!(status(&format!(r#"{{"success":[{many}]}}"#)), 413);
    }

    #[test]
    fn atomic_bulk_names_the_missing_keys_with_409() {
        let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let answer = TxnAnswer {
            succeeded: false,
            results: vec![],
            failed: vec![0, 2],
        };
        let mut out = Vec::new();
        assert_eq!(render_atomic_bulk(&answer, &keys, false, true, &mut out), 409);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""missing":["a","c"]"#), "{text}");
    }
}
