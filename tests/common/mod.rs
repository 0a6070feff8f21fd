//! Shared by every integration test: start the real `corekv` binary on an ephemeral port,
//! wait until it is ready, stop it on drop, and speak plain HTTP/1.1 to it over TCP.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv::client::http::{ParseError, Want, read_response};

pub mod history;
pub mod ports;
pub mod proxy;

/// How long a server gets to start listening and report ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any single test read waits before failing the test instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `corekv serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Everything the server wrote to stderr so far (its log).
    log: Arc<Mutex<String>>,
}

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_corekv")
}

impl Server {
    /// Starts `corekv serve --addr 127.0.0.1:0` plus `extra` flags, with `--shards 2` unless
    /// `extra` names another shard count.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--addr", "127.0.0.1:0"]);
        if !extra.contains(&"--shards") {
            cmd.args(["--shards", "2"]);
        }
        cmd.args(extra);
        for (name, value) in env {
            cmd.env(name, value);
        }
        Self::start_command(cmd)
    }

    /// Starts a `corekv serve` command built by the caller (its own `--addr`, rlimits set in
    /// `pre_exec`, ...), logging at `info` unless it sets `RUST_LOG`, and waits until ready.
    pub fn start_command(mut cmd: Command) -> Server {
        if !cmd.get_envs().any(|(name, _)| name == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn corekv");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr: SocketAddr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("corekv did not start listening; log:\n{}", log.lock().unwrap());
            }
        };
        let server = Server { child, addr, log };
        server.wait_ready();
        server
    }

    /// Polls `/v1/readiness` until it answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(mut conn) = TcpStream::connect(self.addr) {
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let asked = conn.write_all(b"GET /v1/readiness HTTP/1.1\r\nHost: t\r\n\r\n").is_ok();
                if asked && read_one(&mut BufReader::new(conn), Want::Final).is_ok_and(|resp| resp.status == 200) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("corekv never became ready; log:\n{}", self.log());
    }

    /// A new keep-alive connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::new(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        self.connect().request(method, path, &[], body)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the server (it keeps running unless the signal stops it).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it touches no memory of ours.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn signal_and_wait(mut self, signal: i32, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; it touches no memory of ours.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response: the library's [`corekv::client::http::Response`] with the tests'
/// JSON helpers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().expect("an error field").to_string()
    }
}

/// A keep-alive client connection.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Reads the next response, interim (`100 Continue`) or final.
    pub fn read(&mut self) -> Response {
        read_one(&mut self.reader, Want::Next).unwrap_or_else(|error| panic!("read response: {error}"))
    }

    /// Reads one response to a HEAD request (no body whatever Content-Length says).
    pub fn read_head(&mut self) -> Response {
        read_one(&mut self.reader, Want::FinalToHead).unwrap_or_else(|error| panic!("read response: {error}"))
    }

    /// Sends one request with a Content-Length body and reads its response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send(&encode_request(method, path, headers, body));
        if method == "HEAD" {
            self.read_head()
        } else {
            self.read()
        }
    }

    /// True when the server has closed the connection: end-of-file or a reset within
    /// `IO_TIMEOUT`. A read that times out (the connection is still open) or returns data is
    /// not a close.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        }
    }
}

/// Encodes one HTTP/1.1 request with a Content-Length body (omitted for body-less methods
/// when the body is empty).
pub fn encode_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: corekv-test\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads one final response (a 1xx is skipped) from `reader`.
pub fn read_final(reader: &mut BufReader<TcpStream>) -> Result<Response, ParseError> {
    read_one(reader, Want::Final)
}

/// Reads one response with the library's reader (`corekv::client::http`, on httparse), the
/// same one the `corekv` client uses, so the tests and the client cannot disagree on HTTP.
fn read_one(reader: &mut BufReader<TcpStream>, want: Want) -> Result<Response, ParseError> {
    read_response(reader, want).map(|response| Response {
        status: response.status,
        headers: response.headers,
        body: response.body,
    })
}

/// True when the `curl` command is installed.
pub fn have_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh, empty folder for one test under `target/<suite>/`, named after it.
pub fn fresh_dir(suite: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(suite)
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a server on data dir `dir` with `--log-segment-bytes segment_bytes` (small segments
/// keep recovery quick in a debug build) and `extra` flags.
pub fn start_on_data_dir(dir: &std::path::Path, segment_bytes: &str, extra: &[&str]) -> Server {
    let mut flags = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--log-segment-bytes",
        segment_bytes,
    ];
    flags.extend_from_slice(extra);
    Server::start(&flags)
}

/// `count` keys named `{tag}{i}` that shard `shard` of `nr_shards` owns, in order.
pub fn keys_on_shard(tag: &str, shard: usize, nr_shards: usize, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}{i}"))
        .filter(|key| corekv::shard::shard_for(key.as_bytes(), nr_shards) == shard)
        .take(count)
        .collect()
}

/// A key named `{tag}-{i}` that shard `shard` of `nr_shards` owns.
pub fn key_in(shard: usize, nr_shards: usize, tag: &str) -> String {
    keys_on_shard(&format!("{tag}-"), shard, nr_shards, 1).remove(0)
}

/// `count` keys named `{tag}{i}`, alternating between shard 0 and shard 1 of 2.
pub fn keys_on_both_shards(tag: &str, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}{i}"))
        .scan([0usize; 2], |taken, key| {
            let shard = corekv::shard::shard_for(key.as_bytes(), 2);
            let wanted = (taken[0] + taken[1]) % 2 == shard;
            taken[shard] += usize::from(wanted);
            Some(wanted.then_some(key))
        })
        .flatten()
        .take(count)
        .collect()
}

/// `POST /v1/txn` with `body` on `conn`.
pub fn txn(conn: &mut Conn, body: &serde_json::Value) -> Response {
    conn.request(
        "POST",
        "/v1/txn",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// One request on a fresh connection; `None` when the server is unreachable or does not
/// answer (a cluster member that is down or cut off).
pub fn try_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.write_all(&encode_request(method, path, &[], body)).ok()?;
    read_final(&mut BufReader::new(stream)).ok()
}

/// Runs `scenario(data_dir, filler)` on a full-disk setup: a 6 MiB tmpfs mounted on a fresh
/// folder of `suite`, holding a 2 MiB `filler` file (delete it to free space) and the data dir
/// path. Unmounts afterwards, whatever the scenario did. Skipped, with a message, when the test
/// cannot mount (not root); returns whether it ran.
pub fn with_small_tmpfs(suite: &str, scenario: impl FnOnce(&std::path::Path, &std::path::Path)) -> bool {
    // SAFETY: geteuid(2) only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return false;
    }
    let mount = fresh_dir(suite, "full-mount");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return false;
    }
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    let dir = mount.join("data");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&dir, &filler)));
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    true
}
