//! One shard's open connections: their read deadlines, the sweeper that enforces them, the
//! coarse clock they are set against, the stop of every read at shutdown, and (held for
//! [`super::conn`]) the [`Pool`] of what they borrow only while busy.
//!
//! Owns the registry and nothing else of a connection: it never reads or writes a socket, it
//! only ends a pending read with `shutdown(SHUT_RD)` (so the read returns end-of-file). It lives
//! on its shard's thread only.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use crate::clock;
use crate::http::conn::Pool;
use crate::limits::TIMEOUT_SWEEP_MS;
use crate::shard::context::ShardContext;

/// The connections of one shard.
pub struct Registry {
    /// One slot per connection, inline, so a sweep reads them in order (a connection's
    /// [`Registration`] names its slot); a closed connection's slot is `FREE` until reused.
    entries: RefCell<Vec<Entry>>,
    /// Free slots of `entries`, the lowest reused first (so that after a wave of connections
    /// closes, the free tail can be cut off: [`Registry::trim`]).
    free: RefCell<BTreeSet<u32>>,
    /// [`clock::now_ms`] as of the sweeper's last tick: deadlines are set against it, so a
    /// read costs no clock read and no timer (timeouts fire up to one tick late).
    now_ms: Cell<u64>,
    /// Set once shutdown has begun: connections that register after it stop reading at once.
    stopping: Cell<bool>,
    /// Buffers and batch bookkeeping the shard's connections take only while busy.
    pool: Pool,
}

/// The `fd` of a free slot.
const FREE: RawFd = -1;

/// A connection's entry, written by the connection and read by the sweeper.
#[derive(Clone, Copy)]
struct Entry {
    /// The connection's socket, or `FREE`.
    fd: RawFd,
    /// A request's head has arrived and its body has not: shutdown lets it finish.
    mid_request: bool,
    /// Set by the sweeper when it ended the read for passing `at_ms`.
    passed: bool,
    /// Its reads were ended by shutdown.
    stopped: bool,
    /// When the pending read must end, in coarse milliseconds; 0 while not reading.
    at_ms: u64,
}

impl Entry {
    const FREE: Entry = Entry {
        fd: FREE,
        mid_request: false,
        passed: false,
        stopped: false,
        at_ms: 0,
    };

    /// The fd belongs to a live connection: its slot is freed (Registration's drop) in the
    /// same synchronous drop that closes the socket, so no sweep sees a closed or reused fd.
    fn stop_reading(&mut self) {
        debug_assert!(self.fd != FREE);
        self.stopped = true;
        crate::os::shutdown_read(self.fd);
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            entries: RefCell::new(Vec::new()),
            free: RefCell::new(BTreeSet::new()),
            now_ms: Cell::new(clock::now_ms()),
            stopping: Cell::new(false),
            pool: Pool::default(),
        }
    }
}

impl Registry {
    /// Registers a connection (counted in `shard`'s open connections); it is forgotten when
    /// the returned registration drops.
    pub fn register(self: &Rc<Self>, fd: RawFd, shard: &Rc<ShardContext>) -> Registration {
        debug_assert!(fd != FREE);
        let mut entries = self.entries.borrow_mut();
        let slot = self.free.borrow_mut().pop_first().unwrap_or_else(|| {
            entries.push(Entry::FREE);
            // At most `CONNECTIONS_PER_SHARD_MAX_CEILING` (10^6) connections are open at once.
            u32::try_from(entries.len() - 1).expect("fewer than 2^32 connections per shard")
        });
        let entry = &mut entries[slot as usize];
        debug_assert!(entry.fd == FREE, "a free slot");
        *entry = Entry { fd, ..Entry::FREE };
        if self.stopping.get() {
            entry.stop_reading();
        }
        shard.counters.count_connection(true);
        Registration {
            registry: Rc::clone(self),
            shard: Rc::clone(shard),
            slot,
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.entries.borrow().len() - self.free.borrow().len()
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
        for entry in self.entries.borrow_mut().iter_mut() {
            if entry.fd != FREE && !entry.mid_request && !entry.stopped {
                entry.stop_reading();
            }
        }
    }

    /// One sweeper tick: refresh the coarse clock, and end the reads of connections whose
    /// deadline has passed.
    fn sweep(&self) {
        let now = clock::now_ms();
        self.now_ms.set(now);
        for entry in self.entries.borrow_mut().iter_mut() {
            // A free slot's `at_ms` is 0.
            if entry.at_ms != 0 && entry.at_ms <= now && !entry.passed {
                entry.passed = true;
                crate::os::shutdown_read(entry.fd);
            }
        }
        self.trim();
    }

    /// Cuts off the free slots at the end of `entries`, and gives back its memory once it is
    /// mostly unused: a sweep's cost and the table's size follow the connections open now, not
    /// the most ever open.
    fn trim(&self) {
        let mut entries = self.entries.borrow_mut();
        let before = entries.len();
        while entries.last().is_some_and(|entry| entry.fd == FREE) {
            entries.pop();
        }
        if entries.len() < before {
            // Every slot past the new end was free: none is named by a registration.
            let _cut = self.free.borrow_mut().split_off(&(entries.len() as u32));
            if entries.capacity() > 2 * entries.len() + 1024 {
                entries.shrink_to_fit();
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
    /// The connection's slot in `registry.entries`.
    slot: u32,
}

impl Registration {
    /// Runs `f` on the connection's entry.
    fn with_entry<R>(&self, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entries = self.registry.entries.borrow_mut();
        let entry = &mut entries[self.slot as usize];
        debug_assert!(entry.fd != FREE, "a registered connection's slot is in use");
        f(entry)
    }

    /// Arms the read deadline at `at_ms` (coarse milliseconds), or disarms it with 0.
    pub fn set_read_deadline(&self, at_ms: u64) {
        self.with_entry(|entry| entry.at_ms = at_ms);
    }

    /// True when the sweeper ended the last read because its deadline passed.
    pub fn deadline_passed(&self) -> bool {
        self.with_entry(|entry| entry.passed)
    }

    /// Marks whether a request's head has arrived without its body (shutdown waits for it).
    pub fn set_mid_request(&self, mid_request: bool) {
        self.with_entry(|entry| entry.mid_request = mid_request);
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
        self.with_entry(|entry| *entry = Entry::FREE);
        self.registry.free.borrow_mut().insert(self.slot);
        self.shard.counters.count_connection(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with `slots` entries, those in `open` live (fds are never used: no sweep
    /// deadline is armed and shutdown is not begun).
    fn registry_with(slots: u32, open: &[u32]) -> Registry {
        let registry = Registry::default();
        for slot in 0..slots {
            let live = open.contains(&slot);
            registry.entries.borrow_mut().push(if live {
                Entry {
                    fd: 1000,
                    ..Entry::FREE
                }
            } else {
                Entry::FREE
            });
            if !live {
                registry.free.borrow_mut().insert(slot);
            }
        }
        registry
    }

    #[test]
    fn trim_cuts_only_the_free_tail() {
        let registry = registry_with(10, &[0, 3]);
        registry.trim();
        assert_eq!(registry.entries.borrow().len(), 4);
        assert_eq!(registry.free.borrow().iter().copied().collect::<Vec<_>>(), vec![1, 2]);
        let registry = registry_with(5, &[4]);
        registry.trim();
        assert_eq!(registry.entries.borrow().len(), 5, "a live last slot keeps the table");
        let registry = registry_with(3000, &[]);
        registry.trim();
        assert!(registry.entries.borrow().is_empty() && registry.free.borrow().is_empty());
        assert!(registry.entries.borrow().capacity() < 1024, "the memory is given back");
    }
}
