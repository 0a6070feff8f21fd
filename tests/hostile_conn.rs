//! Attacks on a connection's buffers and on shutdown, against the real binary: each bounded in
//! connections and time, each asserting the bound that stops it (RSS per attacker, latency of
//! a well-behaved client, byte-exact data afterwards).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Conn, Server, encode_request};
use corekv::shard::shard_for;

/// The server's resident memory, in bytes.
fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// How long a fresh `GET /v1/ping` takes, on a new connection.
fn ping_latency(server: &Server) -> Duration {
    let started = Instant::now();
    let response = server.request("GET", "/v1/ping", b"");
    assert_eq!(response.status, 200);
    started.elapsed()
}

/// A key that `shard_for` puts on `shard` of two.
fn key_on_shard(shard: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|key| shard_for(key.as_bytes(), 2) == shard)
        .unwrap()
}

// Goal: a declared Content-Length reserves no memory; only bytes that arrive do.
#[test]
fn declared_lengths_reserve_no_memory() {
    const ATTACKERS: usize = 300;
    let server = Server::start(&[]);
    let sentinel = vec![b's'; 1000];
    assert_eq!(server.request("PUT", "/v1/keys/sentinel", &sentinel).status, 201);
    let before = rss_bytes(&server);
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            let path = if i % 2 == 0 { "/set" } else { "/v1/keys/big" };
            let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n");
            let head = if i % 2 == 0 {
                head.replace("\r\n\r\n", "\r\nContent-Type: application/json\r\n\r\n")
            } else {
                head.replace("POST", "PUT").replace("8388608", "1048576")
            };
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_bytes(&server).saturating_sub(before);
    // Before the fix each attacker held its declared 8 MiB (1,000 of them took 8 GiB).
    let per_attacker = grown / ATTACKERS as u64;
    assert!(
        per_attacker < 96 << 10,
        "RSS grew {grown} bytes for {ATTACKERS} attackers ({per_attacker} each)"
    );
    let latency = ping_latency(&server);
    assert!(latency < Duration::from_secs(1), "ping took {latency:?} under attack");
    drop(attackers);
    assert_eq!(server.request("GET", "/v1/keys/sentinel", b"").body, sentinel);
}

// Goal: pipelined GETs of large values owned by the other shard, from clients that never read,
// hold a bounded reply per connection instead of every value they asked for.
#[test]
fn unread_replies_of_remote_values_are_bounded() {
    const ATTACKERS: usize = 12;
    const GETS_PER_ATTACKER: usize = 128;
    const VALUE_BYTES: usize = 1 << 20;
    let server = Server::start(&[]);
    let keys = [key_on_shard(0, "big"), key_on_shard(1, "big")];
    let values: Vec<Vec<u8>> = (0..2).map(|i| vec![b'a' + i as u8; VALUE_BYTES]).collect();
    for (key, value) in keys.iter().zip(&values) {
        assert_eq!(server.request("PUT", &format!("/v1/keys/{key}"), value).status, 201);
    }
    let before = rss_bytes(&server);
    let mut pipeline = Vec::new();
    for i in 0..GETS_PER_ATTACKER {
        pipeline.extend(encode_request("GET", &format!("/v1/keys/{}", keys[i % 2]), &[], b""));
    }
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream.write_all(&pipeline).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(&server).saturating_sub(before);
    // Half of each attacker's GETs are remote: 64 MiB each without a reply budget.
    let per_attacker = grown / ATTACKERS as u64;
    assert!(
        per_attacker < 16 << 20,
        "RSS grew {grown} bytes for {ATTACKERS} attackers ({per_attacker} each)"
    );
    let latency = ping_latency(&server);
    assert!(latency < Duration::from_secs(1), "ping took {latency:?} under attack");
    drop(attackers);
    for (key, value) in keys.iter().zip(&values) {
        assert_eq!(&server.request("GET", &format!("/v1/keys/{key}"), b"").body, value);
    }
}

// Goal: a client that pipelines more remote bytes than one reply carries still gets every
// response, complete and in order (the deferred operations are sent again, writes included).
#[test]
fn pipelines_larger_than_a_reply_are_answered_in_order() {
    const VALUE_BYTES: usize = 300 << 10;
    let server = Server::start(&[]);
    let keys: Vec<String> = (0..8).map(|i| key_on_shard(i % 2, &format!("p{i}"))).collect();
    let mut pipeline = Vec::new();
    let mut expected: Vec<(u16, Vec<u8>)> = Vec::new();
    for round in 0..6u8 {
        for (i, key) in keys.iter().enumerate() {
            let value = vec![b'a' + round + i as u8; VALUE_BYTES + i];
            pipeline.extend(encode_request("PUT", &format!("/v1/keys/{key}"), &[], &value));
            expected.push((if round == 0 { 201 } else { 200 }, Vec::new()));
            pipeline.extend(encode_request("GET", &format!("/v1/keys/{key}"), &[], b""));
            expected.push((200, value));
        }
    }
    let mut conn = Conn::new(server.addr);
    let writer = {
        let mut stream = conn.reader.get_ref().try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&pipeline).unwrap())
    };
    for (at, (status, body)) in expected.iter().enumerate() {
        let response = conn.read();
        assert_eq!(response.status, *status, "response {at}");
        if *status == 200 && !body.is_empty() {
            assert!(response.body == *body, "response {at}: wrong value");
        }
    }
    writer.join().unwrap();
}

// Goal: SIGTERM lets an upload whose head has arrived finish within the grace period, answers
// it with Connection: close, and then closes; idle connections close at once.
#[test]
fn shutdown_lets_an_upload_in_flight_finish() {
    let server = Server::start(&["--shutdown-grace-ms", "5000"]);
    let body = vec![b'u'; 200_000];
    let mut uploader = Conn::new(server.addr);
    let head = format!(
        "PUT /v1/keys/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    uploader.send(head.as_bytes());
    uploader.send(&body[..50_000]);
    let mut idle = Conn::new(server.addr);
    assert_eq!(idle.request("GET", "/v1/ping", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(idle.is_closed(), "an idle connection closes at shutdown");
    uploader.send(&body[50_000..]);
    let response = uploader.read();
    assert_eq!(response.status, 201, "the upload in flight is answered");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(uploader.is_closed(), "and the connection closes after it");
    let status = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

// Goal: a connection whose read buffer grew for a large body gives the memory back and keeps
// serving small requests (the buffer never grows past twice what arrived).
#[test]
fn a_large_body_then_small_requests_on_one_connection() {
    let server = Server::start(&[]);
    let mut conn = Conn::new(server.addr);
    let big = vec![b'b'; 900_000];
    assert_eq!(conn.request("PUT", "/v1/keys/big", &[], &big).status, 201);
    for i in 0..50 {
        let value = format!("v{i}");
        assert!(
            conn.request("PUT", &format!("/v1/keys/k{i}"), &[], value.as_bytes())
                .status
                < 300
        );
    }
    let mut raw = Vec::new();
    conn.reader
        .get_mut()
        .write_all(&encode_request("GET", "/v1/keys/big", &[], b""))
        .unwrap();
    let response = conn.read();
    raw.extend_from_slice(&response.body);
    assert!(raw == big);
    let mut byte = [0u8; 1];
    conn.reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(conn.reader.read(&mut byte).is_err(), "nothing more was sent");
}

// Goal: an idle keep-alive connection costs little user-space memory: it holds no buffers and
// no room for a busy connection's state, whatever it once held (issue 14: ≤ 2 KiB each, as RSS).
#[test]
fn idle_connections_are_cheap() {
    const CONNECTIONS: usize = 4_000;
    let server = Server::start(&["--max-connections", "10000"]);
    let value = vec![b'v'; 100];
    assert_eq!(server.request("PUT", "/v1/keys/idle", &value).status, 201);
    // Warm the allocator with a first wave, so the measured wave pays for itself only.
    let warm: Vec<Conn> = (0..200).map(|_| Conn::new(server.addr)).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_bytes(&server);
    let mut pipeline = Vec::new();
    for _ in 0..8 {
        pipeline.extend(encode_request("GET", "/v1/keys/idle", &[], b""));
    }
    // Every connection pipelines a few GETs once, is answered, then goes idle. One at a time:
    // memory a burst of busy connections took stays with the allocator for the next burst
    // (it is not per idle connection), and would blur the figure.
    let conns: Vec<Conn> = (0..CONNECTIONS)
        .map(|_| {
            let mut conn = Conn::new(server.addr);
            conn.send(&pipeline);
            for _ in 0..8 {
                assert_eq!(conn.read().body, value);
            }
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let per_connection = rss_bytes(&server).saturating_sub(before) / CONNECTIONS as u64;
    eprintln!("idle connection: {per_connection} bytes of RSS each");
    // About 0.95 KiB in a debug build (5.9 KiB while the read buffer, the write buffer, the
    // batch bookkeeping and room for a busy task's future stayed with each connection; 14.4
    // KiB before the buffers shrank on idle). The bound is the goal: room for
    // allocator noise, and it fails if any of those comes back.
    assert!(
        per_connection <= 2 << 10,
        "{per_connection} bytes of RSS per idle connection"
    );
    drop(conns);
}
