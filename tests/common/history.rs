//! Records histories of key-value operations against real servers, for the linearizability
//! checker (`corekv::check::linearizability`): every operation's invoke and return times on one
//! clock, and `Pending` for every answer that cannot be trusted. Self-contained: speaks
//! `/v1/keys/KEY` over plain TCP with the shared request encoder and response reader.
//!
//! How answers are recorded (sound for any server: `Pending` only ever widens what is allowed):
//! - `GET`: 200 is the value, 404 is absent; anything else (5xx, timeout, a closed or reset
//!   connection) observed nothing and is left out.
//! - `PUT` / `DELETE`: 2xx is done; a 4xx was refused before it could take effect and is left
//!   out; a 5xx, a timeout or a broken connection is `Pending` (it may have taken effect: a 503
//!   "no quorum" from a replicated node may still commit later).
//! - `PUT` with `If-None-Match: *` (create): the same, except that 412 is `Refused` (the key
//!   was present: an observation, like a read).
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::io::BufReader;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv::check::linearizability::Operation;

use super::{Response, encode_request, read_final};

/// How long one operation may take before it is recorded as unanswered.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The history shared by every client of one test.
pub struct Recorder {
    /// Time zero of the history: every invoke and return is nanoseconds since it.
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        })
    }

    /// Nanoseconds since time zero of the history, on the clock every operation is stamped on.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, operation: Operation) {
        self.operations.lock().unwrap().push(operation);
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Operation> {
        self.operations.lock().unwrap().clone()
    }
}

/// One client: a keep-alive connection to `addr`, opened again after any failure, recording
/// every operation it issues.
pub struct HistoryClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    recorder: Arc<Recorder>,
    /// True when the last operation got no success (an error status, a timeout, a broken
    /// connection): a client loop backs off on it instead of spinning on instant 503s.
    last_failed: bool,
}

impl HistoryClient {
    pub fn new(addr: SocketAddr, recorder: &Arc<Recorder>) -> HistoryClient {
        HistoryClient {
            addr,
            conn: None,
            recorder: Arc::clone(recorder),
            last_failed: false,
        }
    }

    /// True when the last operation got no success (see the field).
    pub fn last_failed(&self) -> bool {
        self.last_failed
    }

    /// Sends one request; `None` when no trustworthy answer came (the connection is dropped).
    fn request(&mut self, method: &str, key: &str, body: &[u8]) -> Option<Response> {
        self.request_path(method, &format!("/v1/keys/{key}"), &[], body)
    }

    /// Like [`HistoryClient::request`], to any path (a query string included), with headers.
    fn request_path(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Response> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, OPERATION_TIMEOUT).ok()?;
            stream.set_read_timeout(Some(OPERATION_TIMEOUT)).ok()?;
            stream.set_nodelay(true).ok()?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut()?;
        let request = encode_request(method, path, headers, body);
        let answer = conn
            .get_mut()
            .write_all(&request)
            .ok()
            .and_then(|()| read_final(conn).ok());
        if answer.is_none() {
            self.conn = None;
        }
        answer
    }

    /// `GET key`, recorded when answered 200 or 404.
    pub fn get(&mut self, key: &str) {
        self.get_path(key, &format!("/v1/keys/{key}"));
    }

    /// `GET key?consistency=stale`, recorded like [`HistoryClient::get`]: a replica's local
    /// answer, which a linearizability check must catch when it is behind.
    pub fn get_stale(&mut self, key: &str) {
        self.get_path(key, &format!("/v1/keys/{key}?consistency=stale"));
    }

    fn get_path(&mut self, key: &str, path: &str) {
        let invoked_ns = self.recorder.now_ns();
        let answer = self.request_path("GET", path, &[], b"");
        let returned_ns = self.recorder.now_ns();
        self.last_failed = !matches!(answer, Some(Response { status: 200 | 404, .. }));
        match answer.map(|response| (response.status, response.body)) {
            Some((200, value)) => {
                self.recorder
                    .record(Operation::get(key.as_bytes(), Some(&value), invoked_ns, returned_ns))
            }
            Some((404, _)) => self
                .recorder
                .record(Operation::get(key.as_bytes(), None, invoked_ns, returned_ns)),
            _ => {}
        }
    }

    /// `PUT key value`.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        let invoked_ns = self.recorder.now_ns();
        let status = self.request("PUT", key, value).map(|response| response.status);
        let returned_ns = self.recorder.now_ns();
        self.last_failed = !matches!(status, Some(200..=299));
        match status {
            Some(200..=299) => self
                .recorder
                .record(Operation::put(key.as_bytes(), value, invoked_ns, returned_ns)),
            Some(400..=499) => {}
            _ => self
                .recorder
                .record(Operation::put_pending(key.as_bytes(), value, invoked_ns)),
        }
    }

    /// `PUT key value` with `If-None-Match: *` (create only): 2xx is `Done`, 412 (the key was
    /// there) is `Refused`, another 4xx is left out, anything else is `Pending`.
    pub fn create(&mut self, key: &str, value: &[u8]) {
        let invoked_ns = self.recorder.now_ns();
        let path = format!("/v1/keys/{key}");
        let answer = self.request_path("PUT", &path, &[("If-None-Match", "*")], value);
        let status = answer.map(|response| response.status);
        let returned_ns = self.recorder.now_ns();
        self.last_failed = !matches!(status, Some(200..=299 | 412));
        let key = key.as_bytes();
        match status {
            Some(200..=299) => self
                .recorder
                .record(Operation::create(key, value, invoked_ns, returned_ns)),
            Some(412) => self
                .recorder
                .record(Operation::create_refused(key, value, invoked_ns, returned_ns)),
            Some(400..=499) => {}
            _ => self.recorder.record(Operation::create_pending(key, value, invoked_ns)),
        }
    }

    /// `DELETE key`.
    pub fn delete(&mut self, key: &str) {
        let invoked_ns = self.recorder.now_ns();
        let status = self.request("DELETE", key, b"").map(|response| response.status);
        let returned_ns = self.recorder.now_ns();
        self.last_failed = !matches!(status, Some(200..=299));
        match status {
            Some(200..=299) => self
                .recorder
                .record(Operation::delete(key.as_bytes(), invoked_ns, returned_ns)),
            Some(400..=499) => {}
            _ => self
                .recorder
                .record(Operation::delete_pending(key.as_bytes(), invoked_ns)),
        }
    }
}
