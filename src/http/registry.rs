//! One shard's open connections: their read deadlines, the sweeper that enforces them, the
//! coarse clock they are set against, the stop of every read at shutdown, and (held for
//! [`super::conn`]) the [`Pool`] of what they borrow only while busy.
//!
//! Owns the registry and nothing else of a connection: it never reads or writes a socket, it
//! only ends a pending read with `shutdown(SHUT_RD)` (so the read returns end-of-file). It lives
//! on its shard's thread only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use crate::clock;
use crate::http::conn::Pool;
use crate::limits::TIMEOUT_SWEEP_MS;
use crate::shard::context::ShardContext;

/// The connections of one shard.
pub struct Registry {
    connections: RefCell<HashMap<u64, Rc<Entry>>>,
    /// [`clock::now_ms`] as of the sweeper's last tick: deadlines are set against it, so a
    /// read costs no clock read and no timer (timeouts fire up to one tick late).
    now_ms: Cell<u64>,
    next_id: Cell<u64>,
    /// Set once shutdown has begun: connections that register after it stop reading at once.
    stopping: Cell<bool>,
    /// Buffers and batch bookkeeping the shard's connections take only while busy.
    pool: Pool,
}

/// A connection's entry, shared between the connection and the sweeper.
struct Entry {
    fd: RawFd,
    /// When the pending read must end, in coarse milliseconds; 0 while not reading.
    at_ms: Cell<u64>,
    /// Set by the sweeper when it ended the read for passing `at_ms`.
    passed: Cell<bool>,
    /// A request's head has arrived and its body has not: shutdown lets it finish.
    mid_request: Cell<bool>,
    /// Its reads were ended by shutdown.
    stopped: Cell<bool>,
}

impl Entry {
    /// The fd belongs to a live connection: its entry leaves the map (Registration's drop)
    /// before the socket is closed.
    fn stop_reading(&self) {
        crate::os::shutdown_read(self.fd);
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            connections: RefCell::new(HashMap::new()),
            now_ms: Cell::new(clock::now_ms()),
            next_id: Cell::new(0),
            stopping: Cell::new(false),
            pool: Pool::default(),
        }
    }
}

impl Registry {
    /// Registers a connection (counted in `shard`'s open connections); it is forgotten when
    /// the returned registration drops.
    pub fn register(self: &Rc<Self>, fd: RawFd, shard: &Rc<ShardContext>) -> Registration {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let entry = Rc::new(Entry {
            fd,
            at_ms: Cell::new(0),
            passed: Cell::new(false),
            mid_request: Cell::new(false),
            stopped: Cell::new(false),
        });
        self.connections.borrow_mut().insert(id, Rc::clone(&entry));
        shard.counters.count_connection(true);
        if self.stopping.get() {
            entry.stopped.set(true);
            entry.stop_reading();
        }
        Registration {
            registry: Rc::clone(self),
            shard: Rc::clone(shard),
            id,
            entry,
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.connections.borrow().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Milliseconds as of the sweeper's last tick.
    pub fn coarse_now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    /// What the shard's connections borrow while busy.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Begins shutdown: ends the pending read of every connection that is not in the middle of
    /// a request (idle keep-alive connections see end-of-file and close). One whose request
    /// head has arrived keeps reading its body, answers, and then closes; call again to catch
    /// connections that have finished a request since.
    pub fn stop_reading_idle(&self) {
        self.stopping.set(true);
        for entry in self.connections.borrow().values() {
            if !entry.mid_request.get() && !entry.stopped.get() {
                entry.stopped.set(true);
                entry.stop_reading();
            }
        }
    }

    /// One sweeper tick: refresh the coarse clock, and end the reads of connections whose
    /// deadline has passed.
    fn sweep(&self) {
        let now = clock::now_ms();
        self.now_ms.set(now);
        for entry in self.connections.borrow().values() {
            let at = entry.at_ms.get();
            if at != 0 && at <= now && !entry.passed.get() {
                entry.passed.set(true);
                entry.stop_reading();
            }
        }
    }

    /// Ends reads past their deadline (header, body and idle timeouts) every
    /// `TIMEOUT_SWEEP_MS`, forever.
    pub async fn sweep_forever(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(Duration::from_millis(TIMEOUT_SWEEP_MS)).await;
            self.sweep();
        }
    }
}

/// Keeps a connection registered with its shard while alive, and carries its read deadline.
pub struct Registration {
    registry: Rc<Registry>,
    shard: Rc<ShardContext>,
    id: u64,
    entry: Rc<Entry>,
}

impl Registration {
    /// Arms the read deadline at `at_ms` (coarse milliseconds), or disarms it with 0.
    pub fn set_read_deadline(&self, at_ms: u64) {
        self.entry.at_ms.set(at_ms);
    }

    /// True when the sweeper ended the last read because its deadline passed.
    pub fn deadline_passed(&self) -> bool {
        self.entry.passed.get()
    }

    /// Marks whether a request's head has arrived without its body (shutdown waits for it).
    pub fn set_mid_request(&self, mid_request: bool) {
        self.entry.mid_request.set(mid_request);
    }

    /// True once shutdown has ended (or will end) this connection's reads.
    pub fn stopping(&self) -> bool {
        self.registry.stopping.get()
    }

    /// Milliseconds as of the sweeper's last tick.
    pub fn coarse_now_ms(&self) -> u64 {
        self.registry.coarse_now_ms()
    }

    /// What the shard's connections borrow while busy.
    pub fn pool(&self) -> &Pool {
        self.registry.pool()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.connections.borrow_mut().remove(&self.id);
        self.shard.counters.count_connection(false);
    }
}
