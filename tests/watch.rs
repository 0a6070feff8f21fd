//! Watches (`GET /v1/watch/{key}`, `GET /v1/watch?prefix=`) against the real binary with 2
//! shards: events in order, prefix watches across shards, resuming and `compacted`, a slow
//! consumer dropped without slowing writers, and 1,000 watchers of one key.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Conn, IO_TIMEOUT, Server, encode_request};

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    name: String,
    id: Option<String>,
    data: serde_json::Value,
}

/// A watch's response, read event by event.
struct Watch {
    reader: BufReader<TcpStream>,
}

impl Watch {
    /// Opens `path` and reads the head (200, an event stream) and the `ready` event.
    fn open(server: &Server, path: &str) -> (Watch, Event) {
        Watch::open_at(server.addr, path)
    }

    /// [`Watch::open`] for a server's address (threads hold no `Server`).
    fn open_at(addr: SocketAddr, path: &str) -> (Watch, Event) {
        let mut watch = Watch::start_at(addr, path);
        let ready = watch.next().expect("a ready event");
        assert_eq!(ready.name, "ready", "{ready:?}");
        (watch, ready)
    }

    /// Sends the request and reads the response head only.
    fn start(server: &Server, path: &str) -> Watch {
        Watch::start_at(server.addr, path)
    }

    fn start_at(addr: SocketAddr, path: &str) -> Watch {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut watch = Watch {
            reader: BufReader::new(stream),
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: corekv-test\r\n\r\n");
        watch.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        watch.reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200 "), "{path}: {status}");
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            watch.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            headers.push_str(&line);
        }
        assert!(headers.contains("Content-Type: text/event-stream"), "{headers}");
        watch
    }

    /// The next event (comments skipped); `None` once the server closed the stream.
    fn next(&mut self) -> Option<Event> {
        let (mut name, mut id, mut data) = (None, None, None);
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let Some(name) = name.take() {
                    let data = serde_json::from_str(data.as_deref().unwrap_or("null")).unwrap();
                    return Some(Event { name, id, data });
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_string());
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.to_string());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value.to_string());
            }
        }
    }
}

#[test]
fn a_key_watch_sees_every_change_in_order() {
    // Goal: set, update, delete, set with a TTL and its expiry arrive in order with rising
    // seqs, each set carrying the version its write answered as ETag.
    let server = Server::start(&[]);
    let (mut watch, _) = Watch::open(&server, "/v1/watch/k");
    let first = server.request("PUT", "/v1/keys/k", b"1");
    assert_eq!(first.status, 201);
    let second = server.request("PUT", "/v1/keys/k", b"2");
    assert_eq!(second.status, 200);
    assert_eq!(server.request("DELETE", "/v1/keys/k", b"").status, 200);
    assert_eq!(server.request("PUT", "/v1/keys/k?ttl_ms=100", b"3").status, 201);
    assert_eq!(server.request("PUT", "/v1/keys/other", b"x").status, 201);
    let events: Vec<Event> = (0..5).map(|_| watch.next().unwrap()).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["set", "set", "delete", "set", "expired"]);
    let values: Vec<&serde_json::Value> = events.iter().map(|e| &e.data["value"]).collect();
    assert_eq!(values[..2], [&serde_json::json!("1"), &serde_json::json!("2")]);
    let versions: Vec<Option<&str>> = events[..2].iter().map(|e| e.data["version"].as_str()).collect();
    assert_eq!(
        versions,
        [first.header("etag"), second.header("etag")],
        "a set's version is its ETag"
    );
    assert!(first.header("etag").is_some() && first.header("etag") != second.header("etag"));
    assert!(events[2].data.get("version").is_none(), "a delete carries no version");
    let seqs: Vec<u64> = events.iter().map(|e| e.data["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(events.iter().all(|e| e.data["key"] == "k"), "only the watched key");
    assert_eq!(events[4].id.as_deref(), Some(&*seqs[4].to_string()));
}

#[test]
fn a_prefix_watch_hears_from_both_shards() {
    // Goal: a prefix watch registers on every shard and sees keys owned by each, not others.
    let server = Server::start(&[]);
    let (mut watch, ready) = Watch::open(&server, "/v1/watch?prefix=p/");
    assert_eq!(ready.id.as_deref(), Some("0,0"), "one change number per shard");
    assert_eq!(server.request("PUT", "/v1/keys/q/0", b"v").status, 201);
    for i in 0..20 {
        assert_eq!(server.request("PUT", &format!("/v1/keys/p/{i}"), b"v").status, 201);
    }
    let mut shards = std::collections::BTreeSet::new();
    let mut keys = Vec::new();
    for _ in 0..20 {
        let event = watch.next().unwrap();
        assert_eq!(event.name, "set");
        shards.insert(event.data["shard"].as_u64().unwrap());
        keys.push(event.data["key"].as_str().unwrap().to_string());
    }
    assert_eq!(shards.len(), 2, "keys of both shards");
    let expected: Vec<String> = (0..20).map(|i| format!("p/{i}")).collect();
    assert_eq!(keys, expected, "one writer's changes arrive in its order");
}

#[test]
fn a_watch_resumes_from_a_retained_seq_and_says_compacted_for_an_old_one() {
    // Goal: ?from= replays exactly the retained changes after it; one older than the history gets `compacted`.
    let server = Server::start(&["--watch-history-changes", "8"]);
    let (mut watch, _) = Watch::open(&server, "/v1/watch/r");
    for value in ["a", "b"] {
        assert_eq!(server.request("PUT", "/v1/keys/r", value.as_bytes()).status / 100, 2);
    }
    watch.next().unwrap();
    let second = watch.next().unwrap();
    drop(watch);
    for value in ["c", "d"] {
        assert_eq!(server.request("PUT", "/v1/keys/r", value.as_bytes()).status, 200);
    }
    let from = second.id.unwrap();
    let (mut resumed, ready) = Watch::open(&server, &format!("/v1/watch/r?from={from}"));
    assert_eq!(ready.id.as_deref(), Some(&*from));
    let replayed: Vec<serde_json::Value> = (0..2).map(|_| resumed.next().unwrap().data["value"].clone()).collect();
    assert_eq!(replayed, ["c", "d"], "exactly the changes after the resume point");
    for i in 0..20 {
        server.request("PUT", "/v1/keys/r", format!("{i}").as_bytes());
    }
    let mut old = Watch::start(&server, &format!("/v1/watch/r?from={from}"));
    let compacted = old.next().unwrap();
    assert_eq!(compacted.name, "compacted", "{compacted:?}");
    assert!(compacted.data["error"].as_str().unwrap().contains("re-read"));
    assert_eq!(old.next(), None, "the stream ends after it");
}

#[test]
fn bad_watch_requests_are_refused() {
    // Goal: malformed watch parameters are 400, other methods 405, and the locked design 501.
    let server = Server::start(&[]);
    for path in [
        "/v1/watch",
        "/v1/watch?prefix=a&from=1",
        "/v1/watch/k?from=x",
        "/v1/watch/k?color=red",
        "/v1/watch/",
    ] {
        assert_eq!(server.request("GET", path, b"").status, 400, "{path}");
    }
    assert_eq!(server.request("DELETE", "/v1/watch/k", b"").status, 405);
    let locked = Server::start(&["--design", "locked"]);
    let response = locked.request("GET", "/v1/watch/k", b"");
    assert_eq!(response.status, 501);
    assert!(response.error().contains("locked"), "{}", response.error());
}

/// Writes in the slow-consumer test, and each value's size: far more than a watcher's queue
/// and the sockets' buffers hold.
const SLOW_WRITES: usize = 5_000;
const SLOW_VALUE_BYTES: usize = 4_096;
/// Slowest PUT allowed while a watcher is stuck: a writer that waited for the watcher would
/// wait forever (it never reads), so any bound far above a loaded machine's latency works.
const PUT_LATENCY_MAX: Duration = Duration::from_secs(2);

#[test]
fn a_slow_watcher_is_dropped_and_writers_never_wait_for_it() {
    // Goal: a watcher that never reads is cut off with a last `dropped` event while PUTs stay fast.
    let server = Server::start(&[]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.write_all(b"GET /v1/watch/slow HTTP/1.1\r\nHost: corekv-test\r\n\r\n")
        .unwrap();
    // The watcher registers before its response head is written: wait for the head to be sent.
    std::thread::sleep(Duration::from_millis(300));
    let value = vec![b'v'; SLOW_VALUE_BYTES];
    let mut conn = server.connect();
    let mut slowest = Duration::ZERO;
    for _ in 0..SLOW_WRITES {
        let started = Instant::now();
        assert_eq!(conn.request("PUT", "/v1/keys/slow", &[], &value).status / 100, 2);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest PUT while the watcher was stuck: {slowest:?}");
    assert!(slowest < PUT_LATENCY_MAX, "a PUT waited {slowest:?}");
    slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut watch = Watch {
        reader: BufReader::new(slow),
    };
    let mut line = String::new();
    while watch.reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    let mut sets = 0;
    let last = loop {
        let event = watch.next().expect("a last event before the stream ends");
        match event.name.as_str() {
            "ready" => {}
            "set" => sets += 1,
            _ => break event,
        }
    };
    assert_eq!(last.name, "dropped", "{last:?}");
    assert!(
        sets < SLOW_WRITES / 2,
        "the watcher got {sets} of {SLOW_WRITES} changes"
    );
    assert_eq!(watch.next(), None, "the server closed the stream");
}

/// Watchers of one key, and the threads that hold their sockets.
const WATCHERS: usize = 1_000;
const WATCHER_THREADS: usize = 4;

#[test]
fn a_thousand_watchers_of_one_key_all_see_a_write() {
    // Goal: 1,000 watchers of one key, on connections spread over both shards, all get the write.
    let server = Server::start(&[]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let threads: Vec<_> = (0..WATCHER_THREADS)
        .map(|_| {
            let server_addr = server.addr;
            let (ready_tx, go_rx) = (ready_tx.clone(), std::sync::Arc::clone(&go_rx));
            std::thread::spawn(move || {
                let mut watches: Vec<Watch> = (0..WATCHERS / WATCHER_THREADS)
                    .map(|_| Watch::open_at(server_addr, "/v1/watch/shared").0)
                    .collect();
                ready_tx.send(()).unwrap();
                let _ = go_rx.lock().unwrap().recv();
                let mut saw = 0;
                for watch in &mut watches {
                    let event = watch.next().unwrap();
                    saw += usize::from(event.name == "set" && event.data["value"] == "hello");
                }
                saw
            })
        })
        .collect();
    for _ in 0..WATCHER_THREADS {
        ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    assert_eq!(server.request("PUT", "/v1/keys/shared", b"hello").status, 201);
    drop(go_tx);
    let saw: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(saw, WATCHERS);
}

#[test]
fn the_cli_prints_each_change_as_it_happens() {
    // Goal: `corekv watch KEY` prints `ID<TAB>EVENT<TAB>KEY[<TAB>VALUE]` lines as changes happen.
    let server = Server::start(&[]);
    let mut child = std::process::Command::new(common::binary())
        .args(["watch", "cli-key", "--addr", &server.addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The watcher registers when the request arrives; give it a moment before writing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.request("PUT", "/v1/keys/cli-key", b"one").status, 201);
    assert_eq!(server.request("DELETE", "/v1/keys/cli-key", b"").status, 200);
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let first: Vec<&str> = first.split('\t').collect();
    assert_eq!(first[1..], ["set", "cli-key", "one"]);
    let second: Vec<&str> = second.split('\t').collect();
    assert_eq!(second[1..], ["delete", "cli-key"]);
    assert!(
        first[0].parse::<u64>().unwrap() < second[0].parse::<u64>().unwrap(),
        "ids rise"
    );
}

#[test]
fn shutdown_ends_every_watch_with_a_last_event() {
    // Goal: SIGTERM ends open watch streams with `event: shutdown` and the server exits in time.
    let server = Server::start(&["--shutdown-grace-ms", "2000"]);
    let (mut key_watch, _) = Watch::open(&server, "/v1/watch/k");
    let (mut prefix_watch, _) = Watch::open(&server, "/v1/watch?prefix=");
    let status = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    for watch in [&mut key_watch, &mut prefix_watch] {
        assert_eq!(watch.next().map(|e| e.name), Some("shutdown".to_string()));
        assert_eq!(watch.next(), None);
    }
}

// Goal: watchers per shard are bounded (--max-watchers): past the bound a watch is refused
// with 503 and a JSON error while writes and other watchers go on, and a watcher whose client
// left frees its place.
#[test]
fn watchers_past_the_bound_are_refused_and_freed_places_are_reused() {
    let server = Server::start(&["--max-watchers", "3"]);
    // A prefix watch counts on every shard: three fill both shards.
    let mut held: Vec<Watch> = (0..3).map(|_| Watch::open(&server, "/v1/watch?prefix=p/").0).collect();
    let refused = server.request("GET", "/v1/watch?prefix=p/", b"");
    assert_eq!(refused.status, 503, "a fourth prefix watch");
    assert!(refused.error().contains("too many watchers"), "{}", refused.error());
    let refused = server.request("GET", "/v1/watch/p/1", b"");
    assert_eq!(refused.status, 503, "a key watch on a full shard");
    // Writes go on, and every held watcher still hears them.
    assert_eq!(server.request("PUT", "/v1/keys/p/1", b"v").status, 201);
    for watch in &mut held {
        assert_eq!(watch.next().unwrap().data["key"], "p/1");
    }
    // A client that leaves gives its place back to the next watch, once its connection has
    // noticed (the next event or heartbeat written to it fails).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        assert_eq!(server.request("PUT", &format!("/v1/keys/p/{i}"), b"v").status / 100, 2);
        let mut conn = Conn::new(server.addr);
        conn.send(&encode_request("GET", "/v1/watch?prefix=p/", &[], b""));
        let response = conn.read_head();
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503);
        assert!(Instant::now() < deadline, "the freed place was never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}
