//! Prefix listing (`GET /v1/keys?prefix=&limit=&cursor=&values=`) against the real binary with
//! 2 shards: byte order across shards, exact cursors, values, bad parameters, streaming in
//! bounded memory, and 501 where no key index is kept.

mod common;

use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::time::Duration;

use common::{Conn, IO_TIMEOUT, Server, encode_request};
use corekv::client::http::{Want, read_response};

/// Requests sent per pipelined write when filling the store.
const PIPELINE_REQUESTS: usize = 1_000;

/// PUTs `keys` (value: `value_of(key)`), pipelined.
fn put_all(server: &Server, keys: &[String], value_of: impl Fn(&str) -> Vec<u8>) {
    let mut conn = server.connect();
    for chunk in keys.chunks(PIPELINE_REQUESTS) {
        let mut batch = Vec::new();
        for key in chunk {
            batch.extend(encode_request("PUT", &format!("/v1/keys/{key}"), &[], &value_of(key)));
        }
        conn.send(&batch);
        for key in chunk {
            assert_eq!(conn.read().status, 201, "PUT {key}");
        }
    }
}

/// Pages through `query` with `limit`, returning every key (or item) and the pages' count.
fn list_pages(server: &Server, query: &str, limit: usize) -> (Vec<serde_json::Value>, usize) {
    let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut path = format!("/v1/keys?{query}&limit={limit}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = server.request("GET", &path, b"");
        assert_eq!(response.status, 200, "{path}: {}", response.error());
        assert_eq!(response.header("transfer-encoding"), Some("chunked"), "streamed");
        let body = response.json();
        let page = body
            .get("keys")
            .or_else(|| body.get("items"))
            .and_then(|v| v.as_array())
            .unwrap()
            .clone();
        assert!(page.len() <= limit, "a page holds at most its limit");
        pages += 1;
        all.extend(page);
        match body.get("cursor") {
            Some(next) => cursor = Some(next.as_str().unwrap().to_string()),
            None => return (all, pages),
        }
    }
}

#[test]
fn pages_come_in_byte_order_across_shards_and_cursors_resume_exactly() {
    // Goal: paging by cursor yields every matching key once, in byte order, whichever shard owns it.
    let server = Server::start(&["--key-index"]);
    let mut keys: Vec<String> = (0..250).map(|i| format!("user/{}", i * 7)).collect();
    keys.extend(["user", "users/1", "admin/1", "usea"].map(String::from));
    put_all(&server, &keys, |key| key.as_bytes().to_vec());
    let (listed, pages) = list_pages(&server, "prefix=user%2F", 40);
    let mut expected: Vec<&String> = keys.iter().filter(|k| k.starts_with("user/")).collect();
    expected.sort();
    let listed: Vec<&str> = listed.iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(listed, expected);
    assert_eq!(pages, 250usize.div_ceil(40), "the last page has no cursor");
    let (everything, _) = list_pages(&server, "", 1000);
    assert_eq!(everything.len(), keys.len(), "an empty prefix lists every key");
}

#[test]
fn values_come_with_their_keys_and_no_match_is_an_empty_list() {
    // Goal: values=true answers {"items":[{"key","value"}]}; a prefix with no key answers an empty list.
    let server = Server::start(&["--key-index"]);
    let keys: Vec<String> = (0..30).map(|i| format!("v/{i:02}")).collect();
    put_all(&server, &keys, |key| format!("value of {key}").into_bytes());
    let (items, _) = list_pages(&server, "prefix=v/&values=true", 7);
    assert_eq!(items.len(), 30);
    for (item, key) in items.iter().zip(&keys) {
        assert_eq!(item["key"], key.as_str());
        assert_eq!(item["value"], format!("value of {key}"));
    }
    let response = server.request("GET", "/v1/keys?prefix=nothing/", b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), serde_json::json!({ "keys": [] }));
}

#[test]
fn deleted_and_expired_keys_leave_the_listing() {
    // Goal: a DELETE and a TTL take keys out of the index (the store's removals reach it).
    let server = Server::start(&["--key-index"]);
    put_all(&server, &["d/1".into(), "d/2".into(), "d/3".into()], |_| b"v".to_vec());
    assert_eq!(server.request("DELETE", "/v1/keys/d/2", b"").status, 200);
    assert_eq!(server.request("PUT", "/v1/keys/d/4?ttl_ms=100", b"v").status, 201);
    std::thread::sleep(Duration::from_millis(600));
    let response = server.request("GET", "/v1/keys?prefix=d/", b"");
    assert_eq!(response.json(), serde_json::json!({ "keys": ["d/1", "d/3"] }));
    let stats = server.request("GET", "/v1/stats", b"").json();
    let expired: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["expired"].as_u64().unwrap())
        .sum();
    assert_eq!(expired, 1, "the active expiry reclaimed d/4, not the listing: {stats}");
    // A PUT over its own expired (not yet reclaimed) key: the reclaim, then the create.
    for _ in 0..20 {
        assert_eq!(server.request("PUT", "/v1/keys/d/5?ttl_ms=1", b"v").status / 100, 2);
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(server.request("PUT", "/v1/keys/d/5", b"v").status / 100, 2);
    let response = server.request("GET", "/v1/keys?prefix=d/", b"");
    assert_eq!(response.json(), serde_json::json!({ "keys": ["d/1", "d/3", "d/5"] }));
}

#[test]
fn bad_parameters_are_refused() {
    // Goal: every malformed parameter is a 400 (414 for a prefix longer than a key), other methods 405.
    let server = Server::start(&["--key-index", "--max-key-bytes", "16"]);
    for query in [
        "limit=0",
        "limit=-3",
        "limit=ten",
        "values=maybe",
        "cursor=!!!",
        "cursor=",
        "prefix=%zz",
        "order=desc",
    ] {
        let response = server.request("GET", &format!("/v1/keys?{query}"), b"");
        assert_eq!(response.status, 400, "{query}");
        assert!(!response.error().is_empty(), "{query}");
    }
    let response = server.request("GET", "/v1/keys?prefix=12345678901234567", b"");
    assert_eq!(response.status, 414);
    let response = server.request("PUT", "/v1/keys", b"");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, PATCH"));
}

#[test]
fn a_listing_keeps_its_place_among_pipelined_requests() {
    // Goal: a streamed listing between other pipelined requests is answered in request order.
    let server = Server::start(&["--key-index"]);
    let mut conn = Conn::new(server.addr);
    let mut batch = encode_request("PUT", "/v1/keys/pipe/a", &[], b"1");
    batch.extend(encode_request("GET", "/v1/keys?prefix=pipe/", &[], b""));
    batch.extend(encode_request("PUT", "/v1/keys/pipe/b", &[], b"2"));
    batch.extend(encode_request("GET", "/v1/keys?prefix=pipe/", &[], b""));
    conn.send(&batch);
    assert_eq!(conn.read().status, 201);
    assert_eq!(conn.read().json(), serde_json::json!({ "keys": ["pipe/a"] }));
    assert_eq!(conn.read().status, 201);
    assert_eq!(conn.read().json(), serde_json::json!({ "keys": ["pipe/a", "pipe/b"] }));
    assert_eq!(
        conn.request("GET", "/v1/keys/pipe/b", &[], b"").body,
        b"2",
        "keep-alive after"
    );
}

#[test]
fn listing_answers_501_where_no_index_is_kept() {
    // Goal: no --key-index, or --design locked, answer 501 with the reason, and keys still work.
    for flags in [&["--design", "locked", "--key-index"][..], &[][..]] {
        let server = Server::start(flags);
        assert_eq!(server.request("PUT", "/v1/keys/k", b"v").status, 201);
        let response = server.request("GET", "/v1/keys", b"");
        assert_eq!(response.status, 501, "{flags:?}");
        let error = response.error();
        assert!(error.contains("locked") || error.contains("--key-index"), "{error}");
        assert_eq!(server.request("GET", "/v1/keys/k", b"").body, b"v");
    }
}

/// Keys in the large listing, and each value's size: a 50 MB body.
const LARGE_KEYS: usize = 50_000;
const LARGE_VALUE_BYTES: usize = 1_000;
/// How much the server's RSS may grow while it streams the whole listing. Buffering the body
/// would grow it by the body's size (~50 MB); streaming holds one page per shard and a chunk.
const LISTING_RSS_GROWTH_BYTES_MAX: u64 = 20 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Reads from a socket while recording the server's highest RSS, every 256 KiB read.
struct Sampling {
    stream: TcpStream,
    pid: u32,
    since_sample: usize,
    peak: u64,
}

impl Read for Sampling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.stream.read(buf)?;
        self.since_sample += read;
        if self.since_sample >= 256 << 10 {
            self.since_sample = 0;
            self.peak = self.peak.max(rss_bytes(self.pid));
        }
        Ok(read)
    }
}

#[test]
fn a_large_listing_streams_in_bounded_server_memory() {
    // Goal: a 50 MB listing streams (to a reader, and to a client that never reads) while the
    // server's RSS grows far less than the body.
    let server = Server::start(&["--key-index"]);
    let keys: Vec<String> = (0..LARGE_KEYS).map(|i| format!("big/{i:06}")).collect();
    put_all(&server, &keys, |_| vec![b'x'; LARGE_VALUE_BYTES]);
    let before = rss_bytes(server.pid());
    // A client that asks for the whole listing and never reads holds no more than the rest.
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(
        &mut stuck,
        &encode_request("GET", "/v1/keys?prefix=big/&values=true", &[], b""),
    )
    .unwrap();
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    std::io::Write::write_all(
        &mut writer,
        &encode_request("GET", "/v1/keys?prefix=big/&values=true", &[], b""),
    )
    .unwrap();
    let mut reader = BufReader::new(Sampling {
        stream,
        pid: server.pid(),
        since_sample: 0,
        peak: before,
    });
    let response = read_response(&mut reader, Want::Final).unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.body.len() > LARGE_KEYS * LARGE_VALUE_BYTES,
        "the whole body arrived"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), LARGE_KEYS);
    assert!(body.get("cursor").is_none());
    let peak = reader.get_ref().peak.max(rss_bytes(server.pid()));
    drop(stuck);
    let growth = peak.saturating_sub(before);
    eprintln!("RSS {} MiB before the listing, grew {} KiB", before >> 20, growth >> 10);
    assert!(
        growth < LISTING_RSS_GROWTH_BYTES_MAX,
        "RSS grew {} MiB while streaming",
        growth >> 20
    );
}

#[test]
fn the_cli_pages_through_every_key_of_a_prefix() {
    // Goal: `corekv list PREFIX` follows cursors past one page, in order, and `--limit` stops it.
    let server = Server::start(&["--key-index"]);
    let keys: Vec<String> = (0..2_500).map(|i| format!("cli/{i:05}")).collect();
    put_all(&server, &keys, |key| format!("v-{key}").into_bytes());
    put_all(&server, &["other".to_string()], |_| b"v".to_vec());
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(common::binary())
            .args(["list", "--addr", &server.addr.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = run(&["cli/"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), keys, "every key once, in order");
    let limited = run(&["cli/", "--limit", "1500", "--values"]);
    let lines: Vec<&str> = limited.lines().collect();
    assert_eq!(lines.len(), 1500);
    assert_eq!(lines[1499], "cli/01499\tv-cli/01499");
    assert_eq!(run(&[]).lines().count(), 2_501, "no prefix: every key");
}
