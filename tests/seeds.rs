//! Each seed system's documented examples, replayed against corekv (2 shards, real HTTP), plus
//! loading a `<key> <value>` file at start-up and read-only mode.

mod common;

use common::Server;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn json(server: &Server, method: &str, path: &str, body: &str) -> common::Response {
    server
        .connect()
        .request(method, path, &[("Content-Type", "application/json")], body.as_bytes())
}

fn data_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("corekv-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// `POST /set` of one key, as seed 000's clients send it; returns the status.
fn set(server: &Server, key: &str, value: &str) -> u16 {
    let body = serde_json::json!({"key": key, "value": value}).to_string();
    json(server, "POST", "/set", &body).status
}

/// `GET /get?key=KEY`.
fn get(server: &Server, key: &str) -> common::Response {
    server.request("GET", &format!("/get?key={key}"), b"")
}

// Goal: seed 000's set answers 201 (again on a repeat) and get answers {"value"}, or 404 for a missing key.
#[test]
fn seed_000_set_answers_201_and_get_the_value() {
    let server = Server::start(&[]);
    assert_eq!(set(&server, "exampleKey", "exampleValue"), 201);
    assert_eq!(set(&server, "exampleKey", "exampleValue"), 201, "a repeated set");
    let got = get(&server, "exampleKey");
    assert_eq!(
        (got.status, got.json()),
        (200, serde_json::json!({"value": "exampleValue"}))
    );
    assert_eq!(get(&server, "nothing").status, 404);
}

// Goal: seed 000's update answers 200 and replaces an existing value, or 404 without creating the key.
#[test]
fn seed_000_update_replaces_existing_keys_only() {
    let server = Server::start(&[]);
    assert_eq!(set(&server, "exampleKey", "exampleValue"), 201);
    assert_eq!(
        json(&server, "PATCH", "/update", r#"{"key": "exampleKey", "value": "v2"}"#).status,
        200
    );
    assert_eq!(get(&server, "exampleKey").json()["value"], "v2");
    assert_eq!(
        json(&server, "PATCH", "/update", r#"{"key": "ghost", "value": "v"}"#).status,
        404
    );
    assert_eq!(get(&server, "ghost").status, 404, "update created a key");
}

// Goal: seed 000's updateBulk answers 200 with the updated keys, or 206 with those found when some are missing.
#[test]
fn seed_000_update_bulk_lists_the_keys_it_updated() {
    let server = Server::start(&[]);
    assert_eq!(set(&server, "exampleKey1", "v"), 201);
    assert_eq!(set(&server, "exampleKey2", "v"), 201);
    let bulk = r#"[{"key": "exampleKey1", "value": "newValue1"}, {"key": "exampleKey2", "value": "newValue2"}]"#;
    let all = json(&server, "PATCH", "/updateBulk", bulk);
    assert_eq!(
        (all.status, all.json()),
        (200, serde_json::json!(["exampleKey1", "exampleKey2"]))
    );
    assert_eq!(get(&server, "exampleKey2").json()["value"], "newValue2");
    let partial = json(
        &server,
        "PATCH",
        "/updateBulk",
        r#"[{"key": "exampleKey1", "value": "x"}, {"key": "nope", "value": "y"}]"#,
    );
    assert_eq!(
        (partial.status, partial.json()),
        (206, serde_json::json!(["exampleKey1"]))
    );
    assert_eq!(get(&server, "nope").status, 404, "bulk update created a key");
}

// Goal: seed 000's delete answers 200 and the key is gone afterwards.
#[test]
fn seed_000_delete_removes_the_key() {
    let server = Server::start(&[]);
    assert_eq!(set(&server, "exampleKey", "exampleValue"), 201);
    assert_eq!(server.request("DELETE", "/delete?key=exampleKey", b"").status, 200);
    assert_eq!(get(&server, "exampleKey").status, 404);
}

// Goal: a missing key parameter or a body that is not JSON is a 400, not a crash or a 5xx.
#[test]
fn seed_000_bad_requests_are_400() {
    let server = Server::start(&[]);
    assert_eq!(
        server.request("GET", "/get", b"").status,
        400,
        "a missing key parameter is a client error"
    );
    assert_eq!(json(&server, "POST", "/set", "not json").status, 400);
}

// Goal: seed 001 (read-only server): load the file named by KV_DATA_FILE_PATH, then
// GET /keys/{key} answers the value (whitespace kept, later duplicates win) or 404.
#[test]
fn seed_001_read_only_file_server() {
    let file = data_file(
        "seed001.data",
        b"alpha first value\nbeta  value with  spaces\tand tab\n\nalpha second value\r\nlast no-newline",
    );
    let server = Server::start_with_env(&["--read-only"], &[("KV_DATA_FILE_PATH", file.to_str().unwrap())]);
    let get = |key: &str| server.request("GET", &format!("/keys/{key}"), b"");
    assert_eq!(get("alpha").body, b"second value", "later duplicates win; CRLF trimmed");
    assert_eq!(get("beta").body, b"value with  spaces\tand tab");
    assert_eq!(get("last").body, b"no-newline");
    assert_eq!(get("gamma").status, 404);
    std::fs::remove_file(file).unwrap();
}

// Goal: seed 002 (kvstore): its /v1 endpoints and documented limits (250-byte keys, 1 MB
// base64 values, keys like a/b/c).
#[test]
fn seed_002_kvstore_endpoints_and_limits() {
    let server = Server::start(&[]);
    assert_eq!(server.request("GET", "/v1/ping", b"").status, 200);
    assert_eq!(server.request("GET", "/v1/readiness", b"").status, 200);
    let megabyte = vec![7u8; 1 << 20];
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&megabyte);
    let body = format!(r#"{{"value": "{encoded}"}}"#);
    assert_eq!(json(&server, "POST", "/v1/keys/a/b/c", &body).status, 201);
    assert_eq!(server.request("GET", "/v1/keys/a%2Fb%2Fc", b"").body, megabyte);
    let too_big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; (1 << 20) + 1]);
    let refused = json(&server, "POST", "/v1/keys/big", &format!(r#"{{"value": "{too_big}"}}"#));
    assert_eq!(refused.status, 413);
    assert!(refused.error().contains("1048576"));
    let key250 = "k".repeat(250);
    assert_eq!(server.request("PUT", &format!("/v1/keys/{key250}"), b"v").status, 201);
    assert_eq!(server.request("PUT", &format!("/v1/keys/{key250}k"), b"v").status, 414);
    assert_eq!(server.request("DELETE", "/v1/keys/a/b/c", b"").status, 200);
    assert_eq!(server.request("GET", "/v1/keys/a/b/c", b"").status, 404);
}

// Goal: seed 004 (KV Store API): POST /{key} stores the JSON body's text (200), POST
// /{key}/{ttl_ms} expires, GET and DELETE /{key}; writes are visible at once.
#[test]
fn seed_004_kv_store_api() {
    let server = Server::start(&[]);
    assert_eq!(json(&server, "POST", "/9996", "1").status, 200);
    assert_eq!(
        server.request("GET", "/9996", b"").body,
        b"1",
        "visible to the next read at once"
    );
    assert_eq!(json(&server, "POST", "/doc", r#"{"a": [1, 2]}"#).status, 200);
    assert_eq!(server.request("GET", "/doc", b"").body, br#"{"a": [1, 2]}"#);
    assert_eq!(json(&server, "POST", "/9997/100", "1").status, 200);
    assert_eq!(server.request("GET", "/9997", b"").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.request("GET", "/9997", b"").status, 404, "the TTL expired");
    assert_eq!(server.request("DELETE", "/9996", b"").status, 200);
    assert_eq!(server.request("GET", "/9996", b"").status, 404);
    assert_eq!(json(&server, "POST", "/k/soon", "1").status, 400);
    // Routes other systems own are not swallowed by the catch-all.
    assert_eq!(server.request("GET", "/v1/ping", b"").status, 200);
    assert_eq!(server.request("POST", "/metrics", b"x").status, 405);
}

// Goal: curl -X POST localhost/9996 -H "Content-Type: application/json" --data 1, exactly as
// seed 004 documents it.
#[test]
fn seed_004_curl_example() {
    if !common::have_curl() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let server = Server::start(&[]);
    let base = format!("http://{}", server.addr);
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("{base}/9996"),
        ])
        .args(["-H", "Content-Type: application/json", "--data", "1"])
        .output()
        .unwrap();
    assert_eq!(status.stdout, b"200");
    assert_eq!(server.request("GET", "/9996", b"").body, b"1");
}

// Goal: --read-only answers every write route with 405 and a JSON error; reads work.
#[test]
fn read_only_mode_refuses_writes() {
    let file = data_file("ro.data", b"k v\n");
    let server = Server::start(&["--read-only", "--load", file.to_str().unwrap()]);
    for (method, path, body) in [
        ("PUT", "/v1/keys/k", "x"),
        ("POST", "/v1/keys/k", "x"),
        ("PATCH", "/v1/keys/k", "x"),
        ("DELETE", "/v1/keys/k", ""),
        ("PATCH", "/v1/keys", r#"[{"key":"k","value":"x"}]"#),
        ("POST", "/set", r#"{"key":"k","value":"x"}"#),
        ("PATCH", "/update", r#"{"key":"k","value":"x"}"#),
        ("PATCH", "/updateBulk", r#"[{"key":"k","value":"x"}]"#),
        ("DELETE", "/delete?key=k", ""),
        ("POST", "/k", "x"),
        ("DELETE", "/k", ""),
    ] {
        let response = json(&server, method, path, body);
        assert_eq!(response.status, 405, "{method} {path}");
        assert!(response.error().contains("read-only"), "{method} {path}");
    }
    assert_eq!(
        server.request("GET", "/v1/keys/k", b"").body,
        b"v",
        "nothing was changed"
    );
    std::fs::remove_file(file).unwrap();
}

// Goal: a large file loads on every shard, every key reads back its own value, and readiness
// is 200 once loading is done.
#[test]
fn load_a_large_file_across_shards() {
    let mut contents = Vec::new();
    for i in 0..200_000 {
        writeln!(contents, "key:{i:07} value-{i} with spaces").unwrap();
    }
    let file = data_file("large.data", &contents);
    let server = Server::start(&["--shards", "3", "--load", file.to_str().unwrap()]);
    let stats = server.request("GET", "/v1/stats", b"").json();
    assert_eq!(stats["keys"].as_u64(), Some(200_000));
    for shard in stats["shards"].as_array().unwrap() {
        assert!(
            shard["keys"].as_u64().unwrap() > 60_000,
            "each shard loaded its share: {shard}"
        );
    }
    for i in (0..200_000).step_by(9973) {
        let got = server.request("GET", &format!("/v1/keys/key:{i:07}"), b"");
        assert_eq!(got.body, format!("value-{i} with spaces").into_bytes());
    }
    assert!(server.log().contains("loaded 200000 lines"), "{}", server.log());
    std::fs::remove_file(file).unwrap();
}

// Goal: a malformed line stops start-up with a non-zero exit naming FILE:LINE and the cause,
// and the server never reports ready.
#[test]
fn a_malformed_line_stops_start_up_with_file_and_line() {
    for (contents, line, why) in [
        (&b"good value\nlonely\n"[..], 2, "has no value"),
        (b"ok v\n\n ok v\n", 3, "no key"),
        (
            &[&b"a b\n"[..], &vec![b'k'; 300], b" v\n"].concat()[..],
            2,
            "--max-key-bytes",
        ),
    ] {
        let file = data_file("bad.data", contents);
        let output = Command::new(common::binary())
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--shards",
                "2",
                "--load",
                file.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run corekv");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("{}:{line}: ", file.display())), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            !stderr.contains("listening on"),
            "a half-loaded server reported ready: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        std::fs::remove_file(file).unwrap();
    }
    let missing = Command::new(common::binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--load", "/nonexistent/corekv.data"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/corekv.data"));
}
