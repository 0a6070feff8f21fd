//! Latency under light load (issue #14, goal 5): one client, one connection, one request at a
//! time, against the real `corekv` binary with two shards, each pinned to its own CPU. A GET
//! for a key the connection's own shard owns ("local") against one for a key the other shard
//! owns ("remote": one hop over the channel mesh and back). With one request in flight both
//! shards run out of work between requests, so what the remote GET pays on top is mostly the
//! wake-up of a sleeping executor.
//!
//! The client thread is pinned to CPU 0 and keeps a connection that shard 1 (CPU 1) accepted,
//! so the local path never competes with the client for a CPU; the remote hop goes to shard 0,
//! whose CPU the client leaves free while it waits. Besides criterion's estimates, it prints
//! p50/p99 of an interleaved pass and the server's CPU per request, and the server's CPU over
//! an idle second (spinning must cost nothing when there is no work).
//!
//!   cargo bench --bench light_load
//!   COREKV_SERVE_FLAGS="--eviction lru" cargo bench --bench light_load   # more serve flags
//!
//! Talks only to 127.0.0.1; the server is killed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// Requests of each kind in the interleaved percentile pass.
const PASS_REQUESTS: usize = 20_000;
/// Fresh connections tried until the kernel's SO_REUSEPORT hash gives one to shard 1.
const CONNECT_ATTEMPTS_MAX: usize = 200;
/// The CPU the client runs on (shard 0's; shard 1 has CPU 1 to itself).
const CLIENT_CPU: usize = 0;

/// The server under test, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let extra = std::env::var("COREKV_SERVE_FLAGS").unwrap_or_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(["serve", "--addr", "127.0.0.1:0", "--shards", "2", "--cpus", "0,1"])
        .args(extra.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corekv");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (mut addr, mut log) = (None, String::new());
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        log.push_str(&line);
        log.push('\n');
    }
    let addr = addr.unwrap_or_else(|| panic!("corekv did not start:\n{log}"));
    Server { child, addr }
}

/// One keep-alive connection, answering one request at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Sends `request` and reads one response (Content-Length framed); returns its body.
    fn round_trip(&mut self, request: &[u8]) -> &[u8] {
        self.stream.write_all(request).expect("send");
        let mut have = 0;
        loop {
            let n = self.stream.read(&mut self.buf[have..]).expect("receive");
            assert!(n > 0, "the server closed the connection");
            have += n;
            let Some(head_end) = self.buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..head_end]).expect("ASCII head");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse())
                })
                .expect("Content-Length")
                .expect("a number");
            if have >= head_end + 4 + length {
                return &self.buf[head_end + 4..head_end + 4 + length];
            }
        }
    }

    /// The shard that serves this connection: the only one with an open connection.
    fn shard(&mut self) -> usize {
        let body = self.round_trip(b"GET /v1/stats HTTP/1.1\r\nHost: b\r\n\r\n");
        let stats: serde_json::Value = serde_json::from_slice(body).expect("stats JSON");
        let open: Vec<u64> = stats["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|s| s["connections"].as_u64().expect("connections"))
            .collect();
        assert_eq!(open.iter().sum::<u64>(), 1, "only this connection is open: {open:?}");
        open.iter().position(|&n| n == 1).expect("one shard holds it")
    }
}

/// A connection that shard 1 accepted.
fn connection_on_shard_1(addr: &str) -> Conn {
    for _ in 0..CONNECT_ATTEMPTS_MAX {
        let mut conn = Conn::open(addr);
        if conn.shard() == 1 {
            return conn;
        }
        drop(conn);
        // Let the server see the close before the next connection counts connections.
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no connection landed on shard 1 in {CONNECT_ATTEMPTS_MAX} attempts");
}

fn key_on(shard: usize) -> String {
    (0..)
        .map(|i| format!("light-{i}"))
        .find(|k| corekv::shard::shard_for(k.as_bytes(), 2) == shard)
        .expect("some key hashes to every shard")
}

fn get_request(key: &str) -> Vec<u8> {
    format!("GET /v1/keys/{key} HTTP/1.1\r\nHost: b\r\n\r\n").into_bytes()
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit(')').next().expect("fields").split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf only reads a configuration value.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

/// The interleaved pass: p50/p99 per kind, the server's CPU per request, then idle CPU.
fn report(server: &Server, conn: &mut Conn, local: &[u8], remote: &[u8]) {
    let mut times = [Vec::with_capacity(PASS_REQUESTS), Vec::with_capacity(PASS_REQUESTS)];
    let cpu_before = cpu_seconds(server.child.id());
    for _ in 0..PASS_REQUESTS {
        for (kind, request) in [local, remote].into_iter().enumerate() {
            let start = Instant::now();
            conn.round_trip(request);
            times[kind].push(start.elapsed());
        }
    }
    let cpu_us = (cpu_seconds(server.child.id()) - cpu_before) * 1e6 / (2 * PASS_REQUESTS) as f64;
    for t in &mut times {
        t.sort_unstable();
    }
    let (l50, r50) = (percentile(&times[0], 0.5), percentile(&times[1], 0.5));
    println!(
        "light_load: local GET p50 {l50:.1} µs p99 {:.1} µs | remote GET p50 {r50:.1} µs p99 {:.1} µs | remote/local p50 {:.2}× | server CPU {cpu_us:.1} µs/req",
        percentile(&times[0], 0.99),
        percentile(&times[1], 0.99),
        r50 / l50,
    );
    let idle_before = cpu_seconds(server.child.id());
    std::thread::sleep(Duration::from_secs(2));
    let idle = (cpu_seconds(server.child.id()) - idle_before) / 2.0;
    println!("light_load: server CPU while idle {:.2}% of one CPU", idle * 100.0);
}

fn bench_light_load(c: &mut Criterion) {
    let server = start_server();
    // Pinned after the spawn: the server would inherit the mask.
    core_affinity::set_for_current(core_affinity::CoreId { id: CLIENT_CPU });
    let mut conn = connection_on_shard_1(&server.addr);
    let (local_key, remote_key) = (key_on(1), key_on(0));
    for key in [&local_key, &remote_key] {
        let put = format!(
            "PUT /v1/keys/{key} HTTP/1.1\r\nHost: b\r\nContent-Length: 64\r\n\r\n{}",
            "v".repeat(64)
        );
        conn.round_trip(put.as_bytes());
    }
    let (local, remote) = (get_request(&local_key), get_request(&remote_key));
    assert_eq!(conn.round_trip(&local).len(), 64);
    assert_eq!(conn.round_trip(&remote).len(), 64);
    report(&server, &mut conn, &local, &remote);
    let mut group = c.benchmark_group("light_load");
    group.bench_function("get/local", |b| b.iter(|| conn.round_trip(&local).len()));
    group.bench_function("get/remote", |b| b.iter(|| conn.round_trip(&remote).len()));
    group.finish();
}

criterion_group!(benches, bench_light_load);
criterion_main!(benches);
