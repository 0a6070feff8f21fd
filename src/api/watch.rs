//! `GET /v1/watch/{key}?from=SEQ` and `GET /v1/watch?prefix=P&from=S0,S1,...`: what a watch
//! request's parameters mean, and its Server-Sent Events, rendered one at a time.
//!
//! Owns the parameters' checks (400 for a bad one), the event format and the resume point's
//! format: a key watch resumes from its owner's change number (`seq`); a prefix watch, which
//! hears from every shard, from one number per shard in shard order (the SSE `id` of every
//! event it got). It never performs I/O: [`crate::http::stream::watch`] writes what it renders.

use super::{Context, check_key, percent_decode};
use crate::config::Design;
use crate::error::Error;
use crate::shard::message::{Change, WatchTarget};

/// A checked watch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub target: WatchTarget,
    /// Resume after these change numbers: one for a key watch, one per shard for a prefix.
    pub from: Option<Vec<u64>>,
}

pub const WATCH_PREFIX: &str = "/v1/watch/";

/// Plans a watch of one key (`key`: the path after `/v1/watch/`) or, with `key: None`, of a
/// prefix; 501 in the locked design.
pub fn plan(key: Option<&str>, query: &str, context: &Context<'_>) -> Result<WatchSpec, Error> {
    let args = context.args;
    if args.design == Design::Locked {
        return Err(Error::NotImplemented(
            "watching keys in --design locked (its one store numbers no changes)",
        ));
    }
    let nr_shards = context.ready_shards.1;
    let (mut prefix, mut from) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, text) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "prefix" if key.is_none() => prefix = Some(percent_decode(text)?.into_owned()),
            "from" => from = Some(parse_from(text)?),
            _ => {
                return Err(Error::bad_request(if key.is_some() {
                    "unknown watch parameter: a key watch takes from"
                } else {
                    "unknown watch parameter: a prefix watch takes prefix and from"
                }));
            }
        }
    }
    let target = match key {
        Some(encoded) => {
            let key = percent_decode(encoded)?;
            check_key(&key, args)?;
            if from.as_ref().is_some_and(|from| from.len() != 1) {
                return Err(Error::bad_request("from must be one change number for a key watch"));
            }
            WatchTarget::Key(key.into_owned().into())
        }
        None => {
            let prefix = prefix.ok_or_else(|| Error::bad_request("a watch needs a key (/v1/watch/KEY) or ?prefix="))?;
            if prefix.len() > args.key_bytes_max as usize {
                return Err(Error::UriTooLong {
                    size: prefix.len(),
                    limit: args.key_bytes_max as usize,
                });
            }
            if from.as_ref().is_some_and(|from| from.len() != nr_shards) {
                return Err(Error::BadRequest(
                    format!(
                        "from must be {nr_shards} comma-separated change numbers (one per shard) for a prefix watch"
                    )
                    .into(),
                ));
            }
            WatchTarget::Prefix(prefix.into())
        }
    };
    Ok(WatchSpec { target, from })
}

fn parse_from(text: &str) -> Result<Vec<u64>, Error> {
    text.split(',')
        .map(|n| n.parse::<u64>().ok().filter(|_| n.bytes().all(|b| b.is_ascii_digit())))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| Error::bad_request("from must be change numbers (the id of the last event received)"))
}

/// The head of a watch response: an event stream that ends when the connection closes.
pub fn head(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
    );
}

/// The SSE `id` of a watch at this point: the last change number heard from each source.
fn push_id(out: &mut Vec<u8>, seqs: &[u64]) {
    out.extend_from_slice(b"id: ");
    for (at, seq) in seqs.iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        out.extend_from_slice(seq.to_string().as_bytes());
    }
    out.push(b'\n');
}

/// `event: ready`: the watcher is registered; changes after `seqs` follow.
pub fn ready(out: &mut Vec<u8>, seqs: &[u64]) {
    out.extend_from_slice(b"event: ready\n");
    push_id(out, seqs);
    out.extend_from_slice(b"data: {}\n\n");
}

/// One change; `shard` is named for prefix watches (`seqs` holds every source's last number).
pub fn change(out: &mut Vec<u8>, change: &Change, shard: Option<usize>, seqs: &[u64]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(change.kind.name().as_bytes());
    out.push(b'\n');
    push_id(out, seqs);
    let mut data = serde_json::json!({
        "key": String::from_utf8_lossy(change.record.key()),
        "seq": change.seq,
    });
    if change.value_omitted {
        data["value_omitted"] = true.into();
    } else if change.kind == crate::shard::message::ChangeKind::Set {
        data["value"] = String::from_utf8_lossy(change.record.value()).into();
    }
    if change.kind == crate::shard::message::ChangeKind::Set {
        data["version"] = String::from_utf8_lossy(super::etag(change.version).as_bytes()).into();
    }
    if let Some(shard) = shard {
        data["shard"] = shard.into();
    }
    out.extend_from_slice(b"data: ");
    // Serialising a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, &data);
    out.extend_from_slice(b"\n\n");
}

/// The last event of a watch that cannot go on, with why.
pub fn last(out: &mut Vec<u8>, event: &str, why: &str, extra: Option<(&str, u64)>) {
    let mut data = serde_json::json!({ "error": why });
    if let Some((name, value)) = extra {
        data[name] = value.into();
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *out, &data);
    out.extend_from_slice(b"\n\n");
}

/// A comment line that keeps an idle stream alive.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn plan_with(key: Option<&str>, query: &str, flags: &[&str]) -> Result<WatchSpec, Error> {
        let args = ServeArgs::from_flags(flags);
        let context = Context {
            args: &args,
            ready: true,
            ready_shards: (2, 2),
            tokens: None,
        };
        plan(key, query, &context)
    }

    #[test]
    fn parameters_are_strict() {
        let spec = plan_with(Some("a%2Fb"), "from=7", &[]).unwrap();
        assert_eq!(spec.target, WatchTarget::Key(Box::from(&b"a/b"[..])));
        assert_eq!(spec.from, Some(vec![7]));
        let spec = plan_with(None, "prefix=user/&from=3,4", &[]).unwrap();
        assert_eq!(spec.target, WatchTarget::Prefix(Box::from(&b"user/"[..])));
        for (key, query) in [
            (Some("k"), "from=x"),
            (Some("k"), "from=1,2"),
            (Some("k"), "prefix=a"),
            (Some(""), ""),
            (None, ""),
            (None, "prefix=a&from=1"),
            (None, "prefix=a&from=1,,2"),
            (None, "prefix=%zz"),
        ] {
            assert_eq!(plan_with(key, query, &[]).unwrap_err().status(), 400, "{key:?} {query}");
        }
        assert_eq!(
            plan_with(Some("k"), "", &["--design", "locked"]).unwrap_err().status(),
            501
        );
    }

    #[test]
    fn events_are_sse_with_json_data() {
        let mut out = Vec::new();
        let set = Change {
            seq: 5,
            kind: crate::shard::message::ChangeKind::Set,
            record: crate::shard::message::Record::new(b"k", b"v\n1"),
            value_omitted: false,
            version: 3,
            at: None,
        };
        change(&mut out, &set, Some(1), &[4, 5]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: set\nid: 4,5\ndata: {"), "{text}");
        assert!(
            text.ends_with("}\n\n") && text.matches('\n').count() == 4,
            "a newline in a value is escaped: {text}"
        );
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"key": "k", "seq": 5, "value": "v\n1", "version": "\"3\"", "shard": 1})
        );
    }
}
