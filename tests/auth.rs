//! Access control against the real binary: `--auth-token-file`, every role against every route
//! class, 401 (with `WWW-Authenticate: Bearer`) versus 403, SIGHUP reloads, `--metrics-open`,
//! open health checks, and tokens never in the log.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Response, Server};

const READ: &str = "tok-read-5b1e0c7d9a";
const WRITE: &str = "tok-write-c83f21aa40";
const ADMIN: &str = "tok-admin-77d0e9b6f2";
const UNKNOWN: &str = "tok-unknown-0d6c4e1b";

/// A token file unique to this test, removed on drop.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str, text: &str) -> TokenFile {
        let path = std::env::temp_dir().join(format!("corekv-auth-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TokenFile(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn all_roles() -> String {
    format!("# test tokens\n{READ} read\n{WRITE} write\n{ADMIN} admin\n")
}

fn send(server: &Server, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Response {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    server.connect().request(method, path, &headers, body)
}

/// One request of each route class: (class, method, path, body).
const ROUTES: &[(&str, &str, &str, &[u8])] = &[
    ("open", "GET", "/v1/ping", b""),
    ("open", "GET", "/v1/readiness", b""),
    ("read", "GET", "/v1/keys/k", b""),
    ("read", "HEAD", "/v1/keys/k", b""),
    ("read", "GET", "/get?key=k", b""),
    ("read", "GET", "/keys/k", b""),
    ("read", "GET", "/v1/openapi.json", b""),
    ("write", "PUT", "/v1/keys/k", b"v"),
    ("write", "PATCH", "/v1/keys", br#"[{"key":"k","value":"w"}]"#),
    ("write", "POST", "/set", br#"{"key":"k","value":"x"}"#),
    ("write", "DELETE", "/v1/keys/gone", b""),
    ("admin", "GET", "/v1/stats", b""),
    ("admin", "GET", "/metrics", b""),
];

/// What a role gets on a class: 0 for "served" (any status the route itself answers).
fn expected(role: Option<&str>, class: &str) -> u16 {
    let rank = |name: &str| ["read", "write", "admin"].iter().position(|r| *r == name);
    match (class, role) {
        ("open", _) => 0,
        (_, None | Some("unknown")) => 401,
        (class, Some(role)) if rank(role) >= rank(class) => 0,
        _ => 403,
    }
}

#[test]
fn every_role_against_every_route_class() {
    // Goal: none/unknown → 401 with WWW-Authenticate, too low → 403, enough → the route's answer.
    let file = TokenFile::new("matrix", &all_roles());
    let server = Server::start(&["--auth-token-file", file.arg()]);
    // The key must exist for the reads to answer 200, so every role sees a real answer.
    assert_eq!(send(&server, "PUT", "/v1/keys/k", Some(WRITE), b"v").status, 201);
    for (role, token) in [
        (None, None),
        (Some("unknown"), Some(UNKNOWN)),
        (Some("read"), Some(READ)),
        (Some("write"), Some(WRITE)),
        (Some("admin"), Some(ADMIN)),
    ] {
        for (class, method, path, body) in ROUTES {
            let response = send(&server, method, path, token, body);
            let what = format!("{role:?} {method} {path}: {} {:?}", response.status, response.body);
            match expected(role, class) {
                0 => assert!((200..300).contains(&response.status), "served expected: {what}"),
                401 => {
                    assert_eq!(response.status, 401, "{what}");
                    assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{what}");
                    if *method != "HEAD" {
                        assert!(response.error().starts_with("unauthorized"), "{what}");
                    }
                }
                status => {
                    assert_eq!(response.status, status, "{what}");
                    assert_eq!(response.header("www-authenticate"), None, "{what}");
                    assert!(response.error().contains("needs"), "{what}");
                }
            }
        }
    }
}

#[test]
fn unknown_routes_and_bad_schemes_are_401_and_keep_alive_works() {
    // Goal: the route's existence is not revealed without a token; a 401 keeps the connection.
    let file = TokenFile::new("routes", &all_roles());
    let server = Server::start(&["--auth-token-file", file.arg()]);
    let mut conn = server.connect();
    for (path, auth) in [
        ("/no/such/route", None),
        ("/v1/keys/k", Some(format!("Basic {READ}"))),
        ("/v1/keys/k", Some(format!("Bearer {READ}x"))),
        ("/v1/keys/k", Some(format!("Bearer{READ}"))),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let response = conn.request("GET", path, &headers, b"");
        assert_eq!(response.status, 401, "{path} {auth:?}");
    }
    let response = conn.request(
        "GET",
        "/v1/keys/k",
        &[("authorization", &format!("bearer {READ}"))],
        b"",
    );
    assert_eq!(response.status, 404, "the scheme is case-insensitive, same connection");
}

#[test]
fn sighup_reloads_the_token_file_and_a_bad_file_keeps_the_old_one() {
    // Goal: SIGHUP changes access at once on every shard; a broken file changes nothing.
    let file = TokenFile::new("reload", &format!("{READ} read\n"));
    let server = Server::start(&["--auth-token-file", file.arg()]);
    assert_eq!(send(&server, "PUT", "/v1/keys/r", Some(READ), b"v").status, 403);
    file.write(&format!("{READ} write\n{ADMIN} admin\n"));
    server.signal(libc::SIGHUP);
    // Many fresh connections land on both shards; each must see the new table.
    wait_for(|| (0..8).all(|_| send(&server, "PUT", "/v1/keys/r", Some(READ), b"v").status / 100 == 2));
    assert_eq!(send(&server, "GET", "/v1/stats", Some(ADMIN), b"").status, 200);
    file.write(&format!("{ADMIN} admin\n{WRITE} bogus-role\n"));
    server.signal(libc::SIGHUP);
    wait_for(|| server.log().contains("previous tokens stay in force"));
    assert_eq!(send(&server, "PUT", "/v1/keys/r", Some(READ), b"v").status / 100, 2);
    file.write(&format!("{ADMIN} admin\n"));
    server.signal(libc::SIGHUP);
    wait_for(|| (0..8).all(|_| send(&server, "GET", "/v1/keys/r", Some(READ), b"").status == 401));
    assert!(server.log().contains(":2: the role must be"), "{}", server.log());
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tokens_never_appear_in_the_log() {
    // Goal: at debug level, with good, unknown and malformed tokens and a bad reload, no token
    // is ever logged.
    let file = TokenFile::new("log", &all_roles());
    let server = Server::start_with_env(&["--auth-token-file", file.arg()], &[("RUST_LOG", "debug")]);
    for token in [READ, WRITE, ADMIN, UNKNOWN] {
        for (_, method, path, body) in ROUTES {
            send(&server, method, path, Some(token), body);
        }
    }
    let mut conn = server.connect();
    conn.send(format!("GET /v1/keys/k HTTP/1.1\r\nAuthorization: Bearer {UNKNOWN}\r\nBad Header\r\n\r\n").as_bytes());
    assert_eq!(conn.read().status, 400);
    file.write(&format!("{READ}\n"));
    server.signal(libc::SIGHUP);
    wait_for(|| server.log().contains("SIGHUP"));
    let log = server.log();
    assert!(log.contains("access control on: 3 tokens"), "{log}");
    for token in [READ, WRITE, ADMIN, UNKNOWN] {
        assert!(!log.contains(token), "{token} is in the log:\n{log}");
    }
}

#[test]
fn metrics_open_opens_metrics_only() {
    // Goal: --metrics-open serves /metrics to a scraper without a token; /v1/stats stays admin.
    let file = TokenFile::new("metrics", &all_roles());
    let server = Server::start(&["--auth-token-file", file.arg(), "--metrics-open"]);
    let metrics = send(&server, "GET", "/metrics", None, b"");
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("corekv_keys"));
    assert_eq!(send(&server, "GET", "/v1/stats", None, b"").status, 401);
    assert_eq!(send(&server, "GET", "/v1/stats", Some(WRITE), b"").status, 403);
    assert_eq!(send(&server, "GET", "/v1/keys/k", None, b"").status, 401);
}

#[test]
fn a_bad_token_file_stops_start_up_without_naming_the_token() {
    // Goal: a malformed file is exit code 1 with FILE:LINE, and the line's token is not shown.
    let file = TokenFile::new("bad", &format!("{READ} read\n{WRITE} superuser\n"));
    let output = std::process::Command::new(common::binary())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--auth-token-file",
            file.arg(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2: the role must be", file.arg())),
        "{stderr}"
    );
    assert!(!stderr.contains(WRITE) && !stderr.contains(READ), "{stderr}");
}

#[test]
fn without_the_flag_nothing_asks_for_a_token() {
    // Goal: behaviour is unchanged without --auth-token-file (every route class served).
    let server = Server::start(&[]);
    for (_, method, path, body) in ROUTES {
        let status = send(&server, method, path, None, body).status;
        assert!(status != 401 && status != 403, "{method} {path}: {status}");
    }
}
