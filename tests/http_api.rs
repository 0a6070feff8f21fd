//! The v1 HTTP API against the real server (2 shards, ephemeral port), for both designs:
//! every endpoint, every error status, and the framing rules of the HTTP/1.1 front end.

mod common;

use common::{Conn, Server, encode_request};
use std::io::Write;
use std::time::{Duration, Instant};

/// Runs each check against `--design sharded` and `--design locked`.
macro_rules! both_designs {
    ($($name:ident),* $(,)?) => {
        mod sharded { $( #[test] fn $name() { super::$name(&["--design", "sharded"]); } )* }
        mod locked { $( #[test] fn $name() { super::$name(&["--design", "locked"]); } )* }
    };
}

both_designs!(
    crud_round_trip_with_exact_bytes,
    post_takes_base64_json_or_raw_bytes,
    head_reports_length_without_body,
    patch_updates_only_existing_keys,
    bulk_update_spans_shards_and_reports_missing,
    encoded_and_plain_slashes_name_the_same_key,
    errors_have_the_right_status_and_a_json_body,
    pipelined_batch_mixing_shards_answers_in_order,
    writes_are_visible_on_other_connections,
    concurrent_writers_to_one_key_leave_one_whole_value,
    chunked_and_expect_continue_bodies_are_accepted,
);

fn put(server: &Server, key: &str, value: &[u8]) -> u16 {
    server.request("PUT", &format!("/v1/keys/{key}"), value).status
}

// Goal: PUT creates (201) then replaces (200); GET returns the exact bytes; DELETE is idempotent.
fn crud_round_trip_with_exact_bytes(design: &[&str]) {
    let server = Server::start(design);
    let value: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(put(&server, "bin", &value), 201);
    let got = server.request("GET", "/v1/keys/bin", b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(got.body, value);
    assert_eq!(put(&server, "bin", b"second"), 200);
    assert_eq!(server.request("GET", "/v1/keys/bin", b"").body, b"second");
    let deleted = server.request("DELETE", "/v1/keys/bin", b"");
    assert_eq!((deleted.status, deleted.json()["deleted"].as_bool()), (200, Some(true)));
    let again = server.request("DELETE", "/v1/keys/bin", b"");
    assert_eq!((again.status, again.json()["deleted"].as_bool()), (200, Some(false)));
    let missing = server.request("GET", "/v1/keys/bin", b"");
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("not found"));
    assert_eq!(put(&server, "empty", b""), 201, "an empty value is a value");
    let empty = server.request("GET", "/v1/keys/empty", b"");
    assert_eq!((empty.status, empty.body.len()), (200, 0));
}

// Goal: POST with JSON carries base64; without JSON it is a raw PUT; statuses match PUT's.
fn post_takes_base64_json_or_raw_bytes(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let json = [("Content-Type", "application/json")];
    let created = conn.request("POST", "/v1/keys/p", &json, br#"{"value": "AAEC/w=="}"#);
    assert_eq!(created.status, 201);
    assert_eq!(conn.request("GET", "/v1/keys/p", &[], b"").body, [0, 1, 2, 255]);
    let replaced = conn.request("POST", "/v1/keys/p", &[], b"raw bytes");
    assert_eq!(replaced.status, 200);
    assert_eq!(conn.request("GET", "/v1/keys/p", &[], b"").body, b"raw bytes");
    let bad = conn.request("POST", "/v1/keys/p", &json, br#"{"value": "not base64!"}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("base64"), "{}", bad.error());
    let mut conn = server.connect();
    let bad = conn.request("POST", "/v1/keys/p", &json, b"{nope");
    assert_eq!(bad.status, 400);
    assert_eq!(
        server.request("GET", "/v1/keys/p", b"").body,
        b"raw bytes",
        "a failed write loses nothing"
    );
}

// Goal: HEAD answers GET's status and Content-Length with no body, on a reusable connection.
fn head_reports_length_without_body(design: &[&str]) {
    let server = Server::start(design);
    put(&server, "h", b"12345");
    let mut conn = server.connect();
    let head = conn.request("HEAD", "/v1/keys/h", &[], b"");
    assert_eq!((head.status, head.header("content-length")), (200, Some("5")));
    assert!(head.body.is_empty());
    assert_eq!(conn.request("HEAD", "/v1/keys/none", &[], b"").status, 404);
    let ping = conn.request("HEAD", "/v1/ping", &[], b"");
    assert_eq!(ping.status, 200);
    assert_ne!(
        ping.header("content-length"),
        Some("0"),
        "HEAD reports the GET's length"
    );
    assert_eq!(conn.request("HEAD", "/v1/stats", &[], b"").status, 200);
    assert_eq!(
        conn.request("GET", "/v1/keys/h", &[], b"").body,
        b"12345",
        "stream still in sync"
    );
}

// Goal: PATCH of one key updates an existing key (200) and never creates one (404).
fn patch_updates_only_existing_keys(design: &[&str]) {
    let server = Server::start(design);
    assert_eq!(server.request("PATCH", "/v1/keys/ghost", b"v").status, 404);
    assert_eq!(
        server.request("GET", "/v1/keys/ghost", b"").status,
        404,
        "PATCH created a key"
    );
    put(&server, "real", b"old");
    assert_eq!(server.request("PATCH", "/v1/keys/real", b"new").status, 200);
    assert_eq!(server.request("GET", "/v1/keys/real", b"").body, b"new");
}

// Goal: a bulk update across both shards updates existing keys, creates none, 200 vs 206.
fn bulk_update_spans_shards_and_reports_missing(design: &[&str]) {
    let server = Server::start(design);
    let keys: Vec<String> = (0..40).map(|i| format!("bulk-{i}")).collect();
    for key in &keys {
        put(&server, key, b"before");
    }
    let body: Vec<_> = keys
        .iter()
        .map(|k| serde_json::json!({"key": k, "value": format!("after-{k}")}))
        .collect();
    let all = server.request("PATCH", "/v1/keys", serde_json::to_string(&body).unwrap().as_bytes());
    assert_eq!(all.status, 200);
    assert_eq!(all.json()["updated"].as_array().unwrap().len(), 40);
    assert_eq!(all.json()["missing"], serde_json::json!([]));
    for key in &keys {
        assert_eq!(
            server.request("GET", &format!("/v1/keys/{key}"), b"").body,
            format!("after-{key}").as_bytes()
        );
    }
    let partial = server.request(
        "PATCH",
        "/v1/keys",
        br#"[{"key":"bulk-1","value":"x"},{"key":"nobody","value":"y"},{"key":"bulk-2","value":"z"}]"#,
    );
    assert_eq!(partial.status, 206);
    assert_eq!(partial.json()["updated"], serde_json::json!(["bulk-1", "bulk-2"]));
    assert_eq!(partial.json()["missing"], serde_json::json!(["nobody"]));
    assert_eq!(
        server.request("GET", "/v1/keys/nobody", b"").status,
        404,
        "bulk update created a key"
    );
    assert_eq!(server.request("PATCH", "/v1/keys", b"[]").status, 200);
}

// Goal: `a/b/c` and `a%2Fb%2Fc` are one key; other escapes decode too.
fn encoded_and_plain_slashes_name_the_same_key(design: &[&str]) {
    let server = Server::start(design);
    assert_eq!(put(&server, "a/b/c", b"slashes"), 201);
    assert_eq!(server.request("GET", "/v1/keys/a%2Fb%2Fc", b"").body, b"slashes");
    assert_eq!(put(&server, "a%2fb%2Fc", b"again"), 200, "same key, so a replace");
    assert_eq!(put(&server, "sp%20ace%00", b"x"), 201);
    assert_eq!(server.request("GET", "/v1/keys/sp%20ace%00", b"").body, b"x");
}

// Goal: each client mistake gets its 4xx/5xx status, a JSON error naming the cause, and the
// server keeps serving other connections.
fn errors_have_the_right_status_and_a_json_body(design: &[&str]) {
    let server = Server::start(&[design, &["--max-value-bytes", "1000", "--header-timeout-ms", "300"]].concat());
    let check = |raw: &[u8], status: u16, needle: &str| {
        let mut conn = server.connect();
        conn.send(raw);
        let response = conn.read();
        assert_eq!(response.status, status, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(response.header("content-type"), Some("application/json"));
        let message = response.error();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        response
    };
    check(b"GET /v1/keys/a%zz HTTP/1.1\r\n\r\n", 400, "percent");
    check(b"GET /v1/keys/ HTTP/1.1\r\n\r\n", 400, "empty key");
    check(
        b"PATCH /v1/keys HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}",
        400,
        "JSON array",
    );
    check(b"GET /v1/nowhere HTTP/1.1\r\n\r\n", 404, "no such route");
    check(b"GET /a/b/c HTTP/1.1\r\n\r\n", 404, "no such route");
    let not_allowed = check(b"PUT /v1/ping HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "GET");
    assert_eq!(not_allowed.header("allow"), Some("GET, HEAD"));
    let not_allowed = check(b"OPTIONS /v1/keys/k HTTP/1.1\r\n\r\n", 405, "allowed");
    assert!(not_allowed.header("allow").unwrap().contains("PATCH"));
    check(b"PUT /v1/keys/k HTTP/1.1\r\n\r\n", 411, "Content-Length");
    check(
        b"PUT /v1/keys/k HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
        413,
        "limit is 1000 bytes",
    );
    let long_key = "k".repeat(251);
    check(
        format!("GET /v1/keys/{long_key} HTTP/1.1\r\n\r\n").as_bytes(),
        414,
        "250",
    );
    let mut huge_head = b"GET /v1/ping HTTP/1.1\r\n".to_vec();
    huge_head.extend_from_slice(format!("X-Big: {}\r\n\r\n", "h".repeat(20_000)).as_bytes());
    check(&huge_head, 431, "too large");
    let mut many = b"GET /v1/ping HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    check(&many, 431, "headers");
    check(b"GET /v1/ping HTTP/2.0\r\n\r\n", 505, "HTTP/1.1");
    check(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, "malformed");
    let started = Instant::now();
    check(b"GET /v1/ping HTTP/1.1\r\nHost: slow", 408, "300 ms");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing above harmed the server.
    assert_eq!(server.request("GET", "/v1/ping", b"").status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

// Goal: one write of many pipelined requests over keys on both shards is answered in order,
// and a PUT then GET of the same key in one batch reads its own write.
fn pipelined_batch_mixing_shards_answers_in_order(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode_request(
            "PUT",
            &format!("/v1/keys/pipe-{i}"),
            &[],
            format!("v{i}").as_bytes(),
        ));
        batch.extend(encode_request("GET", &format!("/v1/keys/pipe-{i}"), &[], b""));
    }
    batch.extend(encode_request("GET", "/v1/keys/pipe-missing", &[], b""));
    conn.send(&batch);
    for i in 0..100 {
        assert_eq!(conn.read().status, 201, "PUT {i}");
        let got = conn.read();
        assert_eq!((got.status, got.body), (200, format!("v{i}").into_bytes()), "GET {i}");
    }
    assert_eq!(conn.read().status, 404);
    // Over the per-batch limit (256) still answers everything, in order.
    let mut long_batch = Vec::new();
    for i in 0..600 {
        long_batch.extend(encode_request("GET", &format!("/v1/keys/pipe-{}", i % 100), &[], b""));
    }
    conn.send(&long_batch);
    for i in 0..600 {
        assert_eq!(conn.read().body, format!("v{}", i % 100).into_bytes());
    }
}

// Goal: a key written through one connection is read through others (any shard accepts).
fn writes_are_visible_on_other_connections(design: &[&str]) {
    let server = Server::start(design);
    let mut writer = server.connect();
    let mut readers: Vec<Conn> = (0..8).map(|_| server.connect()).collect();
    for i in 0..50 {
        let key = format!("/v1/keys/shared-{i}");
        assert_eq!(writer.request("PUT", &key, &[], format!("{i}").as_bytes()).status, 201);
        for reader in &mut readers {
            assert_eq!(reader.request("GET", &key, &[], b"").body, format!("{i}").into_bytes());
        }
    }
}

// Goal: many connections writing one key at once leave exactly one of the written values.
fn concurrent_writers_to_one_key_leave_one_whole_value(design: &[&str]) {
    let server = Server::start(design);
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                let value = vec![b'a' + t as u8; 3000];
                for _ in 0..100 {
                    let status = conn.request("PUT", "/v1/keys/contended", &[], &value).status;
                    assert!(status == 200 || status == 201);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let value = server.request("GET", "/v1/keys/contended", b"").body;
    assert_eq!(value.len(), 3000);
    assert!(value.iter().all(|&b| b == value[0]), "a torn value");
}

// Goal: chunked request bodies decode, and Expect: 100-continue gets `100 Continue` first.
fn chunked_and_expect_continue_bodies_are_accepted(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    conn.send(
        b"PUT /v1/keys/chunky HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(conn.read().status, 201);
    assert_eq!(conn.request("GET", "/v1/keys/chunky", &[], b"").body, b"hello world");
    conn.send(b"PUT /v1/keys/polite HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = conn.read();
    assert_eq!(interim.status, 100);
    conn.send(b"body");
    assert_eq!(conn.read().status, 201);
    assert_eq!(conn.request("GET", "/v1/keys/polite", &[], b"").body, b"body");
    // Too large with Expect: refused at once, before the body is sent.
    conn.send(b"PUT /v1/keys/huge HTTP/1.1\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(conn.read().status, 413);
}

// Goal: an upload far over the limit gets its 413 while the client is still sending it, and
// nothing is stored. (The server also drains input before closing so that, on real networks, an
// RST cannot discard the response; loopback delivers at once, so that race cannot show here.)
#[test]
fn an_oversized_upload_still_reads_its_413() {
    let server = Server::start(&["--max-value-bytes", "1000"]);
    for _ in 0..5 {
        let mut conn = server.connect();
        let mut writer = conn.reader.get_ref().try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(b"PUT /v1/keys/big HTTP/1.1\r\nContent-Length: 3000000\r\n\r\n");
            let _ = writer.write_all(&vec![b'x'; 3_000_000]);
        });
        let response = conn.read();
        assert_eq!(response.status, 413);
        assert!(response.error().contains("limit is 1000 bytes"));
        sender.join().unwrap();
    }
    assert_eq!(server.request("GET", "/v1/keys/big", b"").status, 404);
}

// Goal: connections spraying garbage, half-requests and hostile framing never harm a
// well-behaved client on the same server, and the server never panics.
#[test]
fn hostile_connections_do_not_harm_others() {
    let server = Server::start(&["--header-timeout-ms", "500"]);
    let addr = server.addr;
    let hostile: Vec<_> = (0..40u64)
        .map(|seed| {
            std::thread::spawn(move || {
                let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut random = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                for _ in 0..20 {
                    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    let payload: Vec<u8> = match random() % 4 {
                        0 => (0..random() % 4096).map(|_| random() as u8).collect(),
                        1 => b"PUT /v1/keys/x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
                        2 => b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
                        _ => b"GET /v1/keys/half".to_vec(),
                    };
                    let _ = stream.write_all(&payload);
                    if random() % 2 == 0 {
                        drop(stream); // hang up mid-request
                    }
                }
            })
        })
        .collect();
    let mut good = server.connect();
    for i in 0..300 {
        let key = format!("/v1/keys/good-{i}");
        assert_eq!(good.request("PUT", &key, &[], b"fine").status, 201);
        assert_eq!(good.request("GET", &key, &[], b"").body, b"fine");
    }
    for thread in hostile {
        thread.join().unwrap();
    }
    assert_eq!(server.request("GET", "/v1/ping", b"").status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

// Goal: HTTP/1.0 is answered and closed (even when it asks for keep-alive); Connection: close
// is honoured.
#[test]
fn http_1_0_and_connection_close_end_the_connection() {
    let server = Server::start(&[]);
    let mut conn = server.connect();
    conn.send(b"GET /v1/ping HTTP/1.0\r\n\r\n");
    let response = conn.read();
    assert_eq!((response.status, response.header("connection")), (200, Some("close")));
    assert!(conn.is_closed());
    let mut conn = server.connect();
    conn.send(b"GET /v1/ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(conn.read().header("connection"), Some("close"));
    assert!(conn.is_closed());
    let mut conn = server.connect();
    conn.send(b"GET /v1/ping HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(conn.read().status, 200);
    assert!(conn.is_closed());
}

// Goal: a client trickling a byte at a time is cut off at the header timeout while other
// clients are served at full speed meanwhile.
#[test]
fn a_slow_client_is_timed_out_without_stalling_others() {
    let server = Server::start(&["--header-timeout-ms", "800"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let mut conn = Conn::new(addr);
        let started = Instant::now();
        for byte in b"GET /v1/ping HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if conn.reader.get_mut().write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    });
    let mut fast = server.connect();
    for i in 0..200 {
        assert_eq!(
            fast.request("PUT", &format!("/v1/keys/fast-{i}"), &[], b"v").status,
            201
        );
    }
    let slow_lasted = slow.join().unwrap();
    assert!(
        slow_lasted < Duration::from_secs(3),
        "slow client lasted {slow_lasted:?}"
    );
}

// Goal: an idle keep-alive connection is closed after --idle-timeout-ms.
#[test]
fn idle_connections_are_closed() {
    let server = Server::start(&["--idle-timeout-ms", "300"]);
    let mut conn = server.connect();
    assert_eq!(conn.request("GET", "/v1/ping", &[], b"").status, 200);
    let started = Instant::now();
    assert!(conn.is_closed());
    assert!(started.elapsed() < Duration::from_secs(5));
}

// Goal: 1,000 connections open at once are all served, spread over both shards.
#[test]
fn a_thousand_open_connections_are_all_served() {
    raise_fd_limit();
    let server = Server::start(&[]);
    let mut conns: Vec<Conn> = (0..1000).map(|_| server.connect()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.send(&encode_request(
            "PUT",
            &format!("/v1/keys/c{i}"),
            &[],
            format!("{i}").as_bytes(),
        ));
    }
    for conn in &mut conns {
        assert_eq!(conn.read().status, 201);
    }
    let stats = server.request("GET", "/v1/stats", b"").json();
    for shard in stats["shards"].as_array().unwrap() {
        let open = shard["connections"].as_u64().unwrap();
        assert!(
            open >= 100,
            "SO_REUSEPORT left shard {} with {open} of 1,000 connections",
            shard["id"]
        );
    }
    for (i, conn) in conns.iter_mut().enumerate().rev() {
        let key = format!("/v1/keys/c{}", (i + 1) % 1000);
        assert_eq!(
            conn.request("GET", &key, &[], b"").body,
            format!("{}", (i + 1) % 1000).into_bytes()
        );
    }
}

// Goal: past --max-connections a new connection gets 503 and the others keep working.
#[test]
fn connections_over_the_limit_get_503() {
    let server = Server::start(&["--shards", "1", "--max-connections", "3"]);
    // Connections closed by earlier probes are torn down asynchronously: poll on one kept-alive
    // connection until it is the only one open, then hold it as the first of three.
    let mut held = vec![server.connect()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while held[0].request("GET", "/v1/stats", &[], b"").json()["shards"][0]["connections"] != 1 {
        assert!(Instant::now() < deadline, "probe connections never closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    held.extend((0..2).map(|_| server.connect()));
    for conn in &mut held {
        assert_eq!(conn.request("GET", "/v1/ping", &[], b"").status, 200);
    }
    let mut extra = server.connect();
    let refused = extra.read();
    assert_eq!(refused.status, 503);
    assert!(refused.error().contains("--max-connections"));
    assert_eq!(held[0].request("GET", "/v1/ping", &[], b"").status, 200);
}

// Goal: SIGTERM finishes in-flight work and exits 0 within a few seconds, idle clients included.
#[test]
fn sigterm_drains_and_exits_zero() {
    let server = Server::start(&[]);
    let mut idle = server.connect();
    assert_eq!(idle.request("PUT", "/v1/keys/t", &[], b"v").status, 201);
    let status = server
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(5))
        .expect("exited in time");
    assert_eq!(status.code(), Some(0));
    assert!(idle.is_closed());
}

// Goal: values never appear in the log, even at trace level; keys may.
#[test]
fn values_never_appear_in_logs() {
    let server = Server::start_with_env(&[], &[("RUST_LOG", "trace")]);
    let secret = "s3cr3t-value-d0-not-log";
    put(&server, "logged-key", secret.as_bytes());
    server.request("PATCH", "/v1/keys/logged-key", secret.as_bytes());
    server.request("PUT", "/v1/keys/bad%zz", secret.as_bytes());
    server.request("GET", "/v1/keys/logged-key", b"");
    drop(server.connect());
    let log = server.log();
    assert!(!log.contains(secret), "value leaked into the log:\n{log}");
}

// Goal: readiness is 200 with the shard count once serving; ping is 200.
#[test]
fn ping_and_readiness() {
    let server = Server::start(&["--shards", "3"]);
    let ready = server.request("GET", "/v1/readiness", b"");
    assert_eq!((ready.status, ready.json()["shards"].as_u64()), (200, Some(3)));
    assert_eq!(server.request("GET", "/v1/ping", b"").status, 200);
}

// Goal: curl, the tool users reach for, works for every endpoint (skipped when not installed).
#[test]
fn curl_drives_every_endpoint() {
    if !common::have_curl() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let server = Server::start(&[]);
    let base = format!("http://{}", server.addr);
    let curl = |args: &[&str]| {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/stderr", "-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("run curl");
        (String::from_utf8(output.stdout).unwrap(), output.stderr)
    };
    let big = vec![b'z'; 200_000];
    let file = std::env::temp_dir().join(format!("corekv-curl-{}", std::process::id()));
    std::fs::write(&file, &big).unwrap();
    let upload = format!("@{}", file.display());
    assert_eq!(
        curl(&["-X", "PUT", "--data-binary", &upload, &format!("{base}/v1/keys/big")]).0,
        "201"
    );
    assert_eq!(curl(&[&format!("{base}/v1/keys/big")]), ("200".into(), big));
    std::fs::remove_file(&file).unwrap();
    let json = ["-H", "Content-Type: application/json"];
    assert_eq!(
        curl(&[&json[..], &["-d", r#"{"value":"aGk="}"#, &format!("{base}/v1/keys/c")]].concat()).0,
        "201"
    );
    assert_eq!(curl(&[&format!("{base}/v1/keys/c")]), ("200".into(), b"hi".to_vec()));
    assert_eq!(curl(&["-I", &format!("{base}/v1/keys/c")]).0, "200");
    assert_eq!(
        curl(&["-X", "PATCH", "-d", "ho", &format!("{base}/v1/keys/c")]).0,
        "200"
    );
    let bulk = r#"[{"key":"c","value":"x"},{"key":"nope","value":"y"}]"#;
    assert_eq!(curl(&["-X", "PATCH", "-d", bulk, &format!("{base}/v1/keys")]).0, "206");
    assert_eq!(
        curl(&["-X", "DELETE", &format!("{base}/v1/keys/c")]),
        ("200".into(), br#"{"deleted":true}"#.to_vec())
    );
    assert_eq!(curl(&[&format!("{base}/v1/ping")]).0, "200");
    assert_eq!(curl(&[&format!("{base}/v1/readiness")]).0, "200");
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}
