//! The map one shard owns: a `hashbrown` table (hashed with `ahash`) of 32-bit handles into a
//! [`Slab`] of size-classed slots, each holding one key's record: version, expiry, LRU links
//! (only when LRU eviction is on), key and value, in one slot (see `slab.rs`).
//!
//! Owns the data, its byte accounting, the capacity budget (reject or evict least recently
//! used), TTL expiry (lazy on access, active through [`Store::expire`]), giving freed memory
//! back to the OS ([`Store::after_expiry_tick`]) and chunked iteration for snapshots
//! ([`Store::scan_from`], [`Store::scan_oldest_first`]). In cluster mode
//! ([`Store::set_replicated`]) nothing it decides depends on its clock or its reads: expiry
//! is the leader's expire entries ([`Store::due_for_expiry`], [`Store::expire_version`]). No locks, no atomics, no I/O: exactly one thread touches a given
//! store (its shard's, or the `locked` design's lock holder), and it must never be shared.
//!
//! [`Store::check_invariants`] states what holds between any two calls; the randomized model
//! test at the end of this file checks it after every step.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashTable;

use super::message::{Condition, Limit, Op, Outcome, Record, ShardStats};
use super::slab::{self, Handle, NIL, Shape, Slab};
use crate::clock;
use crate::limits::{
    EXPIRY_KEYS_PER_WRITE_MAX, KEYS_PER_SHARD_MAX, MEMORY_TRIM_FREED_BYTES_MIN, MEMORY_TRIM_INTERVAL_MS_MIN,
};

/// Table bytes per key: a `u32` handle plus a control byte, at hashbrown's average load (~70%;
/// it swings between 44% and 88% as the table doubles, so 5.7 to 11.4 bytes in fact).
const TABLE_BYTES_PER_KEY: usize = 7;
/// Stale expiry entries tolerated on top of `EXPIRY_HEAP_STALE_FACTOR` times the live ones.
const EXPIRY_HEAP_SLACK_ENTRIES: usize = 4096;
/// Bytes of one pending-expiry heap entry (deadline, node).
const EXPIRY_ENTRY_BYTES: usize = std::mem::size_of::<(u64, u32)>();
/// The expiry heap is rebuilt from live keys when stale entries outnumber them this many times.
const EXPIRY_HEAP_STALE_FACTOR: usize = 2;
/// A trim shrinks the table or the heap when its capacity is over this many times its length.
const SHRINK_SPARE_FACTOR: usize = 4;
/// Capacity (entries) below which the table and heap are never shrunk: not worth a rehash.
const SHRINK_CAPACITY_MIN: usize = 4096;

/// Bookkeeping bytes every key pays besides its key and value: the slot's header (flags,
/// lengths, version) and the table slot. A TTL adds 8 bytes in the slot and a 16-byte heap
/// entry, LRU eviction 8 bytes of links, and the slot's rounding up to its class 0 to 3 bytes
/// (up to 31 for records over 512 bytes).
pub const ENTRY_OVERHEAD_BYTES: usize = slab::HEADER_BYTES + TABLE_BYTES_PER_KEY;

/// What happens when a write would create a key beyond the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Eviction {
    /// Refuse the write (507); replacing or updating existing keys still works.
    Reject,
    /// Evict least recently used keys until the new one fits.
    Lru,
}

/// A store's share of the capacity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub keys_max: Option<u64>,
    pub memory_bytes_max: Option<u64>,
    pub eviction: Eviction,
}

impl Budget {
    /// No limits.
    pub const UNLIMITED: Budget = Budget {
        keys_max: None,
        memory_bytes_max: None,
        eviction: Eviction::Reject,
    };
}

/// What one step of expiry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reclaim {
    /// Removed an expired key.
    Removed,
    /// Dropped a heap entry whose key was rewritten or removed since.
    Stale,
    /// Nothing is due.
    NoneDue,
}

/// A shard's keys and values.
pub struct Store {
    /// Slot handles, keyed by their record's key.
    table: HashTable<Handle>,
    /// The records. A key keeps its slot until removed, or rewritten into another size class.
    /// Each record's deadline is in the store's clock's milliseconds (none: never expires), and
    /// its version changes on every write of the key (the ETag): from `next_version`, or a
    /// restored one.
    slab: Slab,
    /// Most keys the slab may hold: `KEYS_PER_SHARD_MAX`, lower only in tests.
    nodes_max: u32,
    /// In LRU mode, the list of every live key, most recent at the head, linked through the
    /// records. In reject mode records carry no links (8 bytes a key saved) and both are NIL.
    lru_head: Handle,
    lru_tail: Handle,
    /// Pending expiries, earliest first. An entry is live only while its handle names a live
    /// record with that very deadline: a rewritten TTL, a moved or freed record makes it stale,
    /// and a slot reused with the very same deadline is due then anyway.
    expiry: BinaryHeap<Reverse<(u64, Handle)>>,
    /// Live keys that have a TTL.
    ttl_keys: usize,
    /// Process-local hasher for the table (not [`super::key_hash`]: this one needs no stability).
    hasher: ahash::RandomState,
    /// Accounted bytes: each key's slot (and a large record's malloc chunk), its table slot
    /// and its expiry entry. Free slots of partly used pages are not in it (see `slab.rs`).
    memory_bytes: usize,
    budget: Budget,
    /// Milliseconds on a monotonic clock that starts above 0: [`clock::now_ms`] in the server,
    /// a hand-driven one in tests.
    clock: fn() -> u64,
    /// Accounted bytes of keys removed (deleted, expired, evicted) since the last trim.
    freed_bytes_since_trim: usize,
    /// When the last trim ran, on `clock`.
    trimmed_at_ms: u64,
    /// The version the next write gets: above every version assigned or restored so far.
    next_version: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
    /// Records removed since the last [`Store::take_removals`], when tracking is on.
    removals: Option<Vec<(Record, Removal)>>,
    /// Cluster mode (`--peers`, [`Store::set_replicated`]): every change is decided by the
    /// Raft log, so that replicas applying the same entries hold the same keys. Writes never
    /// read the clock (an expired key stays, counted, until the leader's expire entry removes
    /// it: [`Store::expire_version`]); reads hide expired keys without removing them and never
    /// reorder the LRU list; the store never expires on its own ([`Store::expire`] is a
    /// no-op); memory is accounted by a formula of the record's length, not by what malloc
    /// handed out. The one switch between single-node and cluster behaviour.
    replicated: bool,
}

/// Why a key left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A `DELETE`.
    Deleted,
    /// Its TTL ran out (or a restored write's deadline had already passed).
    Expired,
    /// LRU eviction made room for another key.
    Evicted,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Budget::UNLIMITED)
    }
}

impl Store {
    /// An empty store with a budget, on the process's TTL clock.
    pub fn new(budget: Budget) -> Store {
        Store::with_clock(budget, clock::now_ms)
    }

    /// An empty store whose TTLs run on `clock` (milliseconds, monotonic, never 0): for tests
    /// that need to move time by hand.
    pub fn with_clock(budget: Budget, clock: fn() -> u64) -> Store {
        Store {
            table: HashTable::new(),
            slab: Slab::new(budget.eviction == Eviction::Lru),
            nodes_max: KEYS_PER_SHARD_MAX,
            lru_head: NIL,
            lru_tail: NIL,
            expiry: BinaryHeap::new(),
            ttl_keys: 0,
            hasher: ahash::RandomState::new(),
            memory_bytes: 0,
            budget,
            clock,
            freed_bytes_since_trim: 0,
            trimmed_at_ms: 0,
            next_version: 1,
            hits: 0,
            misses: 0,
            evictions: 0,
            expired: 0,
            removals: None,
            replicated: false,
        }
    }

    /// Turns cluster mode on (see the `replicated` field): call it on an empty store, before
    /// any key is loaded, since it changes how memory is accounted.
    pub fn set_replicated(&mut self, on: bool) {
        assert!(self.is_empty(), "the accounting mode changes only on an empty store");
        self.replicated = on;
        self.slab.set_nominal_large(on);
    }

    /// Whether the Raft log decides every change ([`Store::set_replicated`]).
    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// Number of live keys (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Accounted memory in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Counters and sizes, for `/v1/stats`.
    pub fn fill_stats(&self, stats: &mut ShardStats) {
        stats.keys = self.len() as u64;
        stats.memory_bytes = self.memory_bytes as u64;
        stats.hits = self.hits;
        stats.misses = self.misses;
        stats.evictions = self.evictions;
        stats.expired = self.expired;
    }

    /// Bytes a key accounts once `record` is stored for it, with or without a deadline.
    fn entry_bytes(&self, record: &Record, deadline: bool) -> usize {
        let shape = self.slab.shape(record.data_len(), deadline);
        let large = if shape.large {
            self.slab.large_bytes(record) + slab::LARGE_ENTRY_BYTES
        } else {
            0
        };
        shape.slot_bytes + large + TABLE_BYTES_PER_KEY + if deadline { EXPIRY_ENTRY_BYTES } else { 0 }
    }

    /// Bytes a live key accounts (what [`Store::entry_bytes`] said when it was written).
    fn live_bytes(&self, handle: Handle) -> usize {
        let expiry = if self.slab.deadline(handle) != 0 {
            EXPIRY_ENTRY_BYTES
        } else {
            0
        };
        self.slab.entry_bytes(handle) + TABLE_BYTES_PER_KEY + expiry
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The most keys this store may hold: the budget's, and never more than the slab allows.
    fn keys_max(&self) -> u64 {
        let slab = u64::from(self.nodes_max);
        self.budget.keys_max.map_or(slab, |max| max.min(slab))
    }

    #[inline(always)]
    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |&handle| self.slab.key(handle) == key).copied()
    }

    fn is_expired(&self, index: u32, now_ms: &mut Option<u64>) -> bool {
        let deadline = self.slab.deadline(index);
        deadline != 0 && deadline <= *now_ms.get_or_insert_with(self.clock)
    }

    /// The value of `key`, its remaining TTL and its version, without touching recency (the
    /// `locked` design's shared-lock read). An expired key reads as absent.
    pub fn peek(&self, key: &[u8]) -> Option<(&[u8], Option<u64>, u64)> {
        let index = self.find(key)?;
        let mut now = None;
        if self.is_expired(index, &mut now) {
            return None;
        }
        let record = self.slab.view(index);
        Some((
            record.key_value().1,
            remaining_ms(record.deadline(), &mut now, self.clock),
            record.version(),
        ))
    }

    /// The value of `key`, its remaining TTL and its version; counts a hit or miss and marks it
    /// recently used.
    /// In cluster mode an expired key reads as absent but stays, and recency is left alone
    /// (reads are not replicated, so they must not decide what is evicted).
    pub fn get(&mut self, key: &[u8]) -> Option<(&[u8], Option<u64>, u64)> {
        let mut now = None;
        // `live_index`, with the deadline read once: a read's cost is mostly the slot lookups.
        let found = self.find(key);
        let deadline = found.map_or(0, |index| self.slab.deadline(index));
        let expired = deadline != 0 && deadline <= *now.get_or_insert_with(self.clock);
        let Some(index) = found.filter(|_| !expired) else {
            if let Some(index) = found
                && !self.replicated
            {
                self.remove_index(index, Removal::Expired);
                self.expired += 1;
            }
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        if !self.replicated {
            self.touch_if_lru(index);
        }
        let record = self.slab.view(index);
        Some((
            record.key_value().1,
            remaining_ms(deadline, &mut now, self.clock),
            record.version(),
        ))
    }

    /// The node of `key` if present and not expired (an expired one is reclaimed now). In
    /// cluster mode, the node of `key` if present: writes never read the clock there.
    fn live_index(&mut self, key: &[u8], now: &mut Option<u64>) -> Option<u32> {
        let index = self.find(key)?;
        if !self.replicated && self.is_expired(index, now) {
            self.remove_index(index, Removal::Expired);
            self.expired += 1;
            return None;
        }
        Some(index)
    }

    /// Creates or replaces `record`; a TTL applies from now, and `None` clears any TTL.
    /// Returns `Created`, `Replaced` or `Rejected`.
    pub fn put(&mut self, record: Record, ttl_ms: Option<u64>) -> Outcome<&[u8]> {
        self.put_if(record, ttl_ms, Condition::NONE)
    }

    /// [`Store::put`] when `condition` holds for the key's current version; otherwise
    /// `PreconditionFailed` and nothing changes.
    pub fn put_if(&mut self, record: Record, ttl_ms: Option<u64>, condition: Condition) -> Outcome<&[u8]> {
        let mut now = None;
        if let Some(current) = self.failed_condition(record.key(), condition, &mut now) {
            return Outcome::PreconditionFailed { current };
        }
        let clock = self.clock;
        let expires_at_ms = ttl_ms.map_or(0, |ttl| now.get_or_insert_with(clock).saturating_add(ttl.max(1)));
        let version = self.take_version();
        self.put_at(record, expires_at_ms, version, &mut now)
    }

    /// `Some(current version)` when `condition` does not hold for `key`. Costs nothing
    /// without a condition.
    fn failed_condition(&mut self, key: &[u8], condition: Condition, now: &mut Option<u64>) -> Option<Option<u64>> {
        if condition == Condition::NONE {
            return None;
        }
        let current = self.live_index(key, now).map(|index| self.slab.version(index));
        (!condition.holds(current)).then_some(current)
    }

    /// The current version of `key` (`None`: absent or expired), without touching recency or
    /// counters: what a transaction's compare reads.
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        self.peek(key).map(|(.., version)| version)
    }

    /// The version the next write gets (a Raft snapshot carries it, so a replica restored
    /// from one numbers later writes as the leader does).
    pub fn next_version(&self) -> u64 {
        self.next_version
    }

    /// Raises the next write's version to at least `next` (a snapshot restore; never lowers
    /// it, and stays below the reserved versions).
    pub fn raise_next_version(&mut self, next: u64) {
        self.next_version = self.next_version.max(next.min(Condition::FIRST_RESERVED - 1));
    }

    /// Empties the store (a Raft snapshot replaces it), keeping its budget, clock, counters
    /// and whether it tracks removals. Removed keys are not reported as removals.
    pub fn clear(&mut self) {
        let mut empty = Store::with_clock(self.budget, self.clock);
        empty.nodes_max = self.nodes_max;
        (empty.hits, empty.misses) = (self.hits, self.misses);
        (empty.evictions, empty.expired) = (self.evictions, self.expired);
        empty.removals = self.removals.as_ref().map(|_| Vec::new());
        empty.replicated = self.replicated;
        // Everything held is freed: the next expiry tick may give the memory back.
        empty.freed_bytes_since_trim = self.freed_bytes_since_trim + self.memory_bytes;
        *self = empty;
    }

    /// A fresh version for a write.
    fn take_version(&mut self) -> u64 {
        let version = self.next_version;
        debug_assert!(version < Condition::FIRST_RESERVED, "versions ran out");
        self.next_version = (version + 1).min(Condition::FIRST_RESERVED - 1);
        version
    }

    /// Creates or replaces `record` with an absolute deadline on this store's clock (`None`:
    /// never expires), as a recovery replaying a snapshot needs. A deadline already past stores
    /// nothing and removes any live value of the key, which would have expired by now:
    /// `Deleted(whether one was removed)`. Otherwise as [`Store::put`].
    pub fn set_with_deadline(&mut self, record: Record, expires_at_ms: Option<u64>) -> Outcome<&[u8]> {
        let version = self.take_version();
        self.set_with_version(record, expires_at_ms, version)
    }

    /// [`Store::set_with_deadline`] keeping a given version (a recovery restoring a key as it
    /// was written); later writes get versions above it. `version` is at least 1 and below
    /// [`Condition::FIRST_RESERVED`] (clamped otherwise). In cluster mode a past deadline is
    /// stored as it is (a Raft snapshot holds the leader's expired keys until its expire
    /// entries remove them).
    pub fn set_with_version(&mut self, record: Record, expires_at_ms: Option<u64>, version: u64) -> Outcome<&[u8]> {
        let version = version.clamp(1, Condition::FIRST_RESERVED - 2);
        self.next_version = self.next_version.max(version + 1);
        let mut now = None;
        let Some(deadline) = expires_at_ms else {
            return self.put_at(record, 0, version, &mut now);
        };
        if !self.replicated && deadline <= *now.get_or_insert_with(self.clock) {
            let removed = self
                .live_index(record.key(), &mut now)
                .map(|index| self.remove_index(index, Removal::Expired));
            return Outcome::Deleted(removed.is_some());
        }
        self.put_at(record, deadline, version, &mut now)
    }

    fn put_at(&mut self, record: Record, expires_at_ms: u64, version: u64, now: &mut Option<u64>) -> Outcome<&[u8]> {
        if let Some(index) = self.live_index(record.key(), now) {
            let index = match self.replace(index, record, expires_at_ms, version) {
                Ok(index) => index,
                Err(limit) => return Outcome::Rejected(limit),
            };
            self.evict_to_budget(index);
            return Outcome::Replaced { version };
        }
        if let Some(limit) = self.make_room(&record, expires_at_ms) {
            return Outcome::Rejected(limit);
        }
        let index = self.insert(record, expires_at_ms, version);
        self.evict_to_budget(index);
        Outcome::Created { version }
    }

    /// Cluster mode's put (a committed entry's): creates or replaces `record` with the
    /// proposer's deadline, put on this store's clock (`expires_at_ms`, at least 1), when
    /// `condition` holds. Stored even if already past: the leader's expire entry removes it.
    pub fn put_until_if(&mut self, record: Record, expires_at_ms: u64, condition: Condition) -> Outcome<&[u8]> {
        let mut now = None;
        if let Some(current) = self.failed_condition(record.key(), condition, &mut now) {
            return Outcome::PreconditionFailed { current };
        }
        let version = self.take_version();
        self.put_at(record, expires_at_ms.max(1), version, &mut now)
    }

    /// Cluster mode's expiry (the leader's expire entry): removes `key` if it still has
    /// `version`, the one the leader saw expire; a key written since (or gone) is left alone.
    /// Returns whether it removed the key.
    pub fn expire_version(&mut self, key: &[u8], version: u64) -> bool {
        let Some(index) = self.find(key).filter(|&index| self.slab.version(index) == version) else {
            return false;
        };
        self.remove_index(index, Removal::Expired);
        self.expired += 1;
        true
    }

    /// Cluster mode, on the leader: up to `keys_max` keys whose deadline has passed on this
    /// store's clock, earliest first, each with its version, for an expire entry. Removes
    /// nothing: the keys stay (and stay due, found again by a later call) until the entry
    /// applies. Stale heap entries met on the way are dropped.
    pub fn due_for_expiry(&mut self, keys_max: usize) -> Vec<(Box<[u8]>, u64)> {
        let now = self.now();
        let mut due: Vec<(Box<[u8]>, u64)> = Vec::new();
        let mut live = Vec::new();
        while due.len() < keys_max {
            let Some(&Reverse((deadline, index))) = self.expiry.peek() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.expiry.pop();
            let fresh = self.slab.is_live(index) && self.slab.deadline(index) == deadline;
            // A key rewritten with the same deadline has two heap entries: they pop together.
            if fresh && live.last() != Some(&Reverse((deadline, index))) {
                due.push((self.slab.key(index).into(), self.slab.version(index)));
                live.push(Reverse((deadline, index)));
            }
        }
        self.expiry.extend(live);
        due
    }

    /// Replaces the value of an existing key, keeping its TTL. `Missing` when absent.
    pub fn update(&mut self, record: Record) -> Outcome<&[u8]> {
        self.update_if(record, Condition::NONE)
    }

    /// [`Store::update`] when `condition` holds (`Missing` first when the key is absent and the
    /// condition does not ask for that).
    pub fn update_if(&mut self, record: Record, condition: Condition) -> Outcome<&[u8]> {
        let mut now = None;
        let Some(index) = self.live_index(record.key(), &mut now) else {
            return match condition {
                Condition::NONE | Condition::IF_EXISTS => Outcome::Missing,
                _ if condition.holds(None) => Outcome::Missing,
                _ => Outcome::PreconditionFailed { current: None },
            };
        };
        let current = self.slab.version(index);
        if !condition.holds(Some(current)) {
            return Outcome::PreconditionFailed { current: Some(current) };
        }
        let expires_at_ms = self.slab.deadline(index);
        let version = self.take_version();
        let index = match self.replace(index, record, expires_at_ms, version) {
            Ok(index) => index,
            Err(limit) => return Outcome::Rejected(limit),
        };
        self.evict_to_budget(index);
        Outcome::Updated { version }
    }

    /// Removes `key` when `condition` holds; `PreconditionFailed` otherwise.
    pub fn delete_if(&mut self, key: &[u8], condition: Condition) -> Outcome<&[u8]> {
        let mut now = None;
        if let Some(current) = self.failed_condition(key, condition, &mut now) {
            return Outcome::PreconditionFailed { current };
        }
        Outcome::Deleted(self.delete(key))
    }

    /// Removes `key`; returns whether a live key was removed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let mut now = None;
        match self.live_index(key, &mut now) {
            Some(index) => {
                self.remove_index(index, Removal::Deleted);
                true
            }
            None => false,
        }
    }

    /// Executes one key operation; a found value is borrowed from the store.
    pub fn apply(&mut self, op: Op) -> Outcome<&[u8]> {
        match op {
            Op::Get(key) => match self.get(&key) {
                Some((value, ttl_ms, version)) => Outcome::Found { value, ttl_ms, version },
                None => Outcome::Missing,
            },
            Op::Put {
                record,
                ttl_ms,
                condition,
            } => self.put_if(record, ttl_ms, condition),
            Op::Update { record, condition } => self.update_if(record, condition),
            Op::Delete { key, condition } => self.delete_if(&key, condition),
        }
    }

    /// Reclaims expired keys, at most `keys_max` of them; returns how many it removed. More
    /// may remain when it returns `keys_max`. In cluster mode it removes nothing: only the
    /// leader's expire entries do ([`Store::due_for_expiry`]).
    pub fn expire(&mut self, keys_max: usize) -> usize {
        if self.replicated {
            return 0;
        }
        let now = self.now();
        let mut removed = 0;
        while removed < keys_max {
            match self.expire_one(now) {
                Reclaim::Removed => removed += 1,
                Reclaim::Stale => {}
                Reclaim::NoneDue => break,
            }
        }
        removed
    }

    /// Takes the earliest heap entry if it is due at `now`, and removes its key if still live.
    fn expire_one(&mut self, now: u64) -> Reclaim {
        let Some(&Reverse((deadline, index))) = self.expiry.peek() else {
            return Reclaim::NoneDue;
        };
        if deadline > now {
            return Reclaim::NoneDue;
        }
        self.expiry.pop();
        if self.slab.is_live(index) && self.slab.deadline(index) == deadline {
            self.remove_index(index, Removal::Expired);
            self.expired += 1;
            Reclaim::Removed
        } else {
            Reclaim::Stale
        }
    }

    /// Milliseconds until the earliest pending expiry, if any.
    pub fn next_expiry_in_ms(&self) -> Option<u64> {
        self.expiry
            .peek()
            .map(|Reverse((deadline, ..))| deadline.saturating_sub(self.now()))
    }

    /// `None` when `record` may be added as a new key; in reject mode the limit it would break
    /// (after reclaiming up to `EXPIRY_KEYS_PER_WRITE_MAX` expired keys; none in cluster mode,
    /// where expired keys count until their expire entry); in LRU mode only when it could
    /// never fit at all.
    fn make_room(&mut self, record: &Record, expires_at_ms: u64) -> Option<Limit> {
        let memory_bytes_max = self.budget.memory_bytes_max;
        let keys_max = self.keys_max();
        let bytes = self.entry_bytes(record, expires_at_ms != 0) as u64;
        if let Some(max) = memory_bytes_max
            && bytes > max
        {
            return Some(Limit::Memory(max));
        }
        if keys_max == 0 {
            return Some(Limit::Keys(0));
        }
        if let Some(limit) = self.slab_full(record, expires_at_ms) {
            return Some(limit);
        }
        if self.budget.eviction == Eviction::Lru {
            // Key budgets are enforced after the insert, but the slab cannot lend a node past
            // its limit even for a moment: make the room first.
            if self.len() as u64 >= u64::from(self.nodes_max) {
                self.evict_lru_tail();
            }
            return None;
        }
        let over = |store: &Store| {
            if store.len() as u64 >= keys_max {
                Some(Limit::Keys(keys_max))
            } else if memory_bytes_max.is_some_and(|max| store.memory_bytes as u64 + bytes > max) {
                memory_bytes_max.map(Limit::Memory)
            } else {
                None
            }
        };
        over(self)?;
        if self.replicated {
            return over(self);
        }
        // Expired keys hold room no one can read: reclaim some before refusing, but a bounded
        // number, so one write never pays for a whole backlog (the expiry tick does that).
        let now = self.now();
        for _ in 0..EXPIRY_KEYS_PER_WRITE_MAX {
            match self.expire_one(now) {
                Reclaim::NoneDue => break,
                Reclaim::Removed if over(self).is_none() => return None,
                Reclaim::Removed | Reclaim::Stale => {}
            }
        }
        over(self)
    }

    /// In LRU mode, evicts least recently used keys (never `keep`) until within budget.
    fn evict_to_budget(&mut self, keep: u32) {
        if self.budget.eviction != Eviction::Lru {
            return;
        }
        loop {
            let over_keys = self.budget.keys_max.is_some_and(|max| self.len() as u64 > max);
            let over_memory = self
                .budget
                .memory_bytes_max
                .is_some_and(|max| self.memory_bytes as u64 > max);
            let victim = self.lru_tail;
            if !(over_keys || over_memory) || victim == NIL || victim == keep {
                break;
            }
            self.evict_lru_tail();
        }
        debug_assert!(self.len() as u64 <= self.keys_max() || self.len() == 1);
        debug_assert!(self.lru_head == keep, "the kept key is the most recently used");
    }

    fn evict_lru_tail(&mut self) {
        let victim = self.lru_tail;
        debug_assert!(victim != NIL, "evicting from an empty store");
        self.remove_index(victim, Removal::Evicted);
        self.evictions += 1;
    }

    /// `Some` when the slab has no slot left for `record` (all `slab::PAGES_MAX` pages in
    /// use, 64 GiB in one shard): refused like a full key budget.
    fn slab_full(&self, record: &Record, expires_at_ms: u64) -> Option<Limit> {
        let shape = self.slab.shape(record.data_len(), expires_at_ms != 0);
        (!self.slab.has_room(shape)).then_some(Limit::Keys(self.len() as u64))
    }

    fn insert(&mut self, record: Record, expires_at_ms: u64, version: u64) -> Handle {
        let len_before = self.table.len();
        let hash = self.hasher.hash_one(record.key());
        let shape = self.slab.shape(record.data_len(), expires_at_ms != 0);
        let index = self.slab.allocate(shape);
        self.slab.write(index, shape, record, version, expires_at_ms);
        self.memory_bytes += self.live_bytes(index);
        self.note_deadline(index, 0, expires_at_ms);
        if self.lru_links() {
            self.push_front(index);
        }
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.table.insert_unique(hash, index, |&i| hasher.hash_one(slab.key(i)));
        debug_assert_eq!(self.table.len(), len_before + 1);
        debug_assert!(self.table.len() == self.slab.len() && self.ttl_keys <= self.table.len());
        index
    }

    /// Rewrites a live key's record: in its slot when the size class stays, otherwise in a
    /// new slot (returned), the table, LRU neighbours and expiry following it. `Err` only when
    /// a move needs a slot the slab cannot give.
    fn replace(&mut self, index: Handle, record: Record, expires_at_ms: u64, version: u64) -> Result<Handle, Limit> {
        debug_assert_eq!(self.slab.key(index), record.key(), "a replace keeps its key");
        let (old_bytes, old_deadline) = (self.live_bytes(index), self.slab.deadline(index));
        let shape = self.slab.shape(record.data_len(), expires_at_ms != 0);
        let index = if shape.slot_bytes == self.slab.slot_bytes(index) {
            self.slab.write(index, shape, record, version, expires_at_ms);
            index
        } else {
            if let Some(limit) = self.slab_full(&record, expires_at_ms) {
                return Err(limit);
            }
            self.relocate(index, shape, record, version, expires_at_ms)
        };
        self.memory_bytes = self.memory_bytes + self.live_bytes(index) - old_bytes;
        self.note_deadline(index, old_deadline, expires_at_ms);
        self.touch_if_lru(index);
        Ok(index)
    }

    /// Moves a key to a new slot of `shape` holding `record`; frees the old one.
    fn relocate(&mut self, old: Handle, shape: Shape, record: Record, version: u64, expires_at_ms: u64) -> Handle {
        let hash = self.hasher.hash_one(record.key());
        let new = self.slab.allocate(shape);
        self.slab.write(new, shape, record, version, expires_at_ms);
        if self.lru_links() {
            let (prev, next) = self.slab.links_of(old);
            self.slab.set_prev(new, prev);
            self.slab.set_next(new, next);
            match prev {
                NIL => self.lru_head = new,
                prev => self.slab.set_next(prev, new),
            }
            match next {
                NIL => self.lru_tail = new,
                next => self.slab.set_prev(next, new),
            }
        }
        let entry = self.table.find_mut(hash, |&i| i == old);
        debug_assert!(entry.is_some(), "a live key is in the table");
        if let Some(entry) = entry {
            *entry = new;
        }
        self.slab.free(old, false);
        new
    }

    /// Counts a key's TTL in `ttl_keys` and queues its new deadline (0: none).
    fn note_deadline(&mut self, index: Handle, old_deadline: u64, expires_at_ms: u64) {
        match (old_deadline != 0, expires_at_ms != 0) {
            (false, true) => self.ttl_keys += 1,
            (true, false) => self.ttl_keys -= 1,
            _ => {}
        }
        if expires_at_ms != 0 {
            self.expiry.push(Reverse((expires_at_ms, index)));
            self.compact_expiry_heap();
        }
    }

    /// Keeps the heap from filling with stale entries when TTL'd keys are rewritten often.
    fn compact_expiry_heap(&mut self) {
        if self.expiry.len() <= EXPIRY_HEAP_STALE_FACTOR * self.ttl_keys + EXPIRY_HEAP_SLACK_ENTRIES {
            return;
        }
        let slab = &self.slab;
        let live: Vec<_> = (slab.handles())
            .filter_map(|index| {
                let deadline = slab.deadline(index);
                (deadline != 0).then_some(Reverse((deadline, index)))
            })
            .collect();
        self.expiry = BinaryHeap::from(live);
        debug_assert_eq!(self.expiry.len(), self.ttl_keys);
    }

    fn remove_index(&mut self, index: Handle, cause: Removal) {
        debug_assert!(self.slab.is_live(index), "removing a free slot");
        let len_before = self.table.len();
        let hash = self.hasher.hash_one(self.slab.key(index));
        let found = self.table.find_entry(hash, |&i| i == index);
        debug_assert!(found.is_ok(), "a live key is in the table");
        if let Ok(entry) = found {
            entry.remove();
        }
        if self.lru_links() {
            self.unlink(index);
        }
        if self.slab.deadline(index) != 0 {
            self.ttl_keys -= 1;
        }
        let bytes = self.live_bytes(index);
        self.memory_bytes -= bytes;
        self.freed_bytes_since_trim += bytes;
        match &mut self.removals {
            Some(removals) => removals.push((self.slab.free_into_record(index), cause)),
            None => drop(self.slab.free(index, false)),
        }
        debug_assert_eq!(self.table.len() + 1, len_before);
    }

    /// Starts (or stops) keeping every removed record, with why it went, until
    /// [`Store::take_removals`] takes them: how a shard's key index and watchers learn of the
    /// removals the store makes on its own (TTL expiry, LRU eviction). Off by default; whoever
    /// turns it on drains it after every operation and expiry step, so it holds at most one
    /// step's removals (`EXPIRY_KEYS_PER_STEP_MAX`, or one write's evictions and reclaims).
    pub fn track_removals(&mut self, on: bool) {
        self.removals = on.then(Vec::new);
    }

    /// Moves the records removed since the last call into `into` (nothing when not tracking).
    pub fn take_removals(&mut self, into: &mut Vec<(Record, Removal)>) {
        if let Some(removals) = &mut self.removals {
            into.append(removals);
        }
    }

    /// Whether records carry LRU links: in LRU mode only.
    fn lru_links(&self) -> bool {
        self.budget.eviction == Eviction::Lru
    }

    fn push_front(&mut self, index: Handle) {
        let head = self.lru_head;
        self.slab.set_prev(index, NIL);
        self.slab.set_next(index, head);
        if head != NIL {
            self.slab.set_prev(head, index);
        } else {
            self.lru_tail = index;
        }
        self.lru_head = index;
    }

    fn unlink(&mut self, index: Handle) {
        let (prev, next) = self.slab.links_of(index);
        debug_assert!(prev == NIL || self.slab.links_of(prev).1 == index, "LRU forward link");
        debug_assert!(next == NIL || self.slab.links_of(next).0 == index, "LRU back link");
        if prev != NIL {
            self.slab.set_next(prev, next);
        } else {
            self.lru_head = next;
        }
        if next != NIL {
            self.slab.set_prev(next, prev);
        } else {
            self.lru_tail = prev;
        }
    }

    /// Marks a key most recently used, in LRU mode. In reject mode the list's order is never
    /// read, so reads and replaces skip relinking it (a measured half of a GET's cost in the
    /// store: see docs/BENCHMARKS.md).
    fn touch_if_lru(&mut self, index: Handle) {
        if self.budget.eviction == Eviction::Lru {
            self.touch(index);
        }
    }

    /// Marks a key most recently used.
    fn touch(&mut self, index: Handle) {
        if self.lru_head != index {
            self.unlink(index);
            self.push_front(index);
        }
    }

    /// Visits live keys in slab order from `cursor` (0 to start), examining at most
    /// `max_entries` slab slots (at least one), so a snapshot can be taken in bounded chunks
    /// between requests. `f` gets the key, the value, and the deadline on this store's clock
    /// (`None`: never expires); keys already expired are skipped (in cluster mode they are
    /// visited: they are still part of the replicated state). Returns the cursor to go on
    /// from, or `None` when the slab is done; a call may visit fewer keys than `max_entries`,
    /// even none, and still return a cursor.
    ///
    /// The store may change between calls: a key live and unwritten for the whole scan is
    /// visited exactly once (it keeps its slot, and slots never move), while keys created,
    /// removed or rewritten meanwhile (a rewrite may move a key to another size class) may be
    /// visited once, twice or not at all; a fuzzy snapshot's log covers exactly those.
    pub fn scan_from(
        &self,
        cursor: u32,
        max_entries: usize,
        mut f: impl FnMut(&[u8], &[u8], Option<u64>, u64),
    ) -> Option<u32> {
        let now = self.now();
        let slab = &self.slab;
        slab.scan(cursor, max_entries, |index| {
            let (key, value) = slab.key_value(index);
            match slab.deadline(index) {
                0 => f(key, value, None, slab.version(index)),
                deadline if deadline > now || self.replicated => f(key, value, Some(deadline), slab.version(index)),
                _ => {}
            }
        })
    }

    /// Like [`Store::scan_from`], but in recency order, least recently used first, so that a
    /// store filled in visiting order ends with the same LRU order (a Raft snapshot: every
    /// replica must evict the same keys). `cursor` is `None` to start; returns where to go on
    /// from, `None` when done. Between calls nothing may write the store (the cursor is a
    /// node on the list); a cursor on a node freed meanwhile ends the walk.
    pub fn scan_oldest_first(
        &self,
        cursor: Option<u32>,
        max_entries: usize,
        mut f: impl FnMut(&[u8], &[u8], Option<u64>, u64),
    ) -> Option<u32> {
        if !self.lru_links() {
            // No recency order is kept (nothing is evicted by it): slot order will do.
            return self.scan_from(cursor.unwrap_or(0), max_entries, f);
        }
        let now = self.now();
        let mut index = cursor.unwrap_or(self.lru_tail);
        for _ in 0..max_entries.max(1) {
            if index == NIL || !self.slab.is_live(index) {
                debug_assert!(index == NIL, "the store changed under a recency scan");
                return None;
            }
            let (key, value) = self.slab.key_value(index);
            let version = self.slab.version(index);
            match self.slab.deadline(index) {
                0 => f(key, value, None, version),
                deadline if deadline > now || self.replicated => f(key, value, Some(deadline), version),
                _ => {}
            }
            index = self.slab.links_of(index).0;
        }
        (index != NIL).then_some(index)
    }

    /// Gives memory back once the store has freed `MEMORY_TRIM_FREED_BYTES_MIN` since the last
    /// time, at most every `MEMORY_TRIM_INTERVAL_MS_MIN`: drops stale expiry entries, shrinks
    /// the table and the expiry heap when they are mostly empty, and asks malloc to return its
    /// free pages to the OS (freed records otherwise stay resident in malloc's free lists).
    /// Meant for the expiry tick; returns whether it trimmed. Costs a compare when not due.
    pub fn after_expiry_tick(&mut self) -> bool {
        if self.freed_bytes_since_trim < MEMORY_TRIM_FREED_BYTES_MIN {
            return false;
        }
        let now = self.now();
        if now.saturating_sub(self.trimmed_at_ms) < MEMORY_TRIM_INTERVAL_MS_MIN {
            return false;
        }
        self.trimmed_at_ms = now;
        self.freed_bytes_since_trim = 0;
        self.compact_expiry_heap();
        if self.expiry.capacity() > SHRINK_SPARE_FACTOR * self.expiry.len().max(SHRINK_CAPACITY_MIN) {
            self.expiry.shrink_to(2 * self.expiry.len());
        }
        if self.table.capacity() > SHRINK_SPARE_FACTOR * self.table.len().max(SHRINK_CAPACITY_MIN) {
            let (slab, hasher) = (&self.slab, &self.hasher);
            self.table
                .shrink_to(2 * self.table.len(), |&i| hasher.hash_one(slab.key(i)));
        }
        release_free_memory();
        true
    }

    /// Walks the whole structure and panics on the first broken invariant. O(keys): for tests,
    /// and for debugging a live store, never for the request path.
    pub fn check_invariants(&self) {
        self.slab.check();
        assert!(self.len() as u64 <= u64::from(self.nodes_max), "slab past its limit");
        assert_eq!(self.table.len(), self.slab.len(), "the table holds every live slot");
        let mut handles = std::collections::HashSet::new();
        let pending: std::collections::HashSet<(u64, Handle)> = self.expiry.iter().map(|entry| entry.0).collect();
        let (mut ttl_keys, mut memory) = (0, 0);
        for &index in self.table.iter() {
            assert!(self.slab.is_live(index), "table entry {index} is not a live slot");
            assert!(handles.insert(index), "slot {index} is in the table twice");
            assert_eq!(
                self.find(self.slab.key(index)),
                Some(index),
                "slot {index} is found by its key"
            );
            let version = self.slab.version(index);
            assert!(
                version != 0 && version < self.next_version,
                "a live key's version was assigned before the next one"
            );
            let deadline = self.slab.deadline(index);
            if deadline != 0 {
                ttl_keys += 1;
                assert!(pending.contains(&(deadline, index)), "deadline without heap entry");
            }
            memory += self.live_bytes(index);
        }
        assert_eq!(ttl_keys, self.ttl_keys, "ttl_keys counts the live keys with a deadline");
        assert_eq!(
            memory, self.memory_bytes,
            "memory_bytes is the sum of what each key accounts"
        );
        if self.lru_links() {
            assert_eq!(self.check_lru_list(), self.len(), "the LRU list covers every key");
        } else {
            assert_eq!((self.lru_head, self.lru_tail), (NIL, NIL), "no LRU list in reject mode");
        }
        if self.budget.eviction == Eviction::Lru {
            let within_memory = self
                .budget
                .memory_bytes_max
                .is_none_or(|max| self.memory_bytes as u64 <= max);
            assert!(self.len() as u64 <= self.keys_max(), "LRU mode holds its key budget");
            assert!(within_memory || self.len() == 1, "LRU mode holds its memory budget");
        }
    }

    /// Walks the LRU list head to tail checking its links; returns its length.
    fn check_lru_list(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let (mut prev, mut index) = (NIL, self.lru_head);
        while index != NIL {
            assert!(self.slab.is_live(index), "LRU link {index} is not a live slot");
            assert!(seen.insert(index), "LRU list loops at {index}");
            let (back, next) = self.slab.links_of(index);
            assert_eq!(back, prev, "LRU back link of {index}");
            (prev, index) = (index, next);
        }
        assert_eq!(self.lru_tail, prev, "LRU tail");
        seen.len()
    }
}

fn remaining_ms(expires_at_ms: u64, now: &mut Option<u64>, clock: fn() -> u64) -> Option<u64> {
    (expires_at_ms != 0).then(|| expires_at_ms.saturating_sub(*now.get_or_insert_with(clock)))
}

/// Asks the C allocator to hand the free pages of every arena back to the OS. glibc only.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own arenas, under their
    // locks; it is thread-safe and may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &mut Store, key: &str, value: &str) -> Outcome<Vec<u8>> {
        store
            .put(Record::new(key.as_bytes(), value.as_bytes()), None)
            .map(|v| v.to_vec())
            .without_versions()
    }

    fn value(store: &mut Store, key: &str) -> Option<Vec<u8>> {
        store.get(key.as_bytes()).map(|(v, ..)| v.to_vec())
    }

    #[test]
    fn the_memory_benchmarks_key_accounts_99_bytes() {
        // Memory per key is a product decision (docs/BENCHMARKS.md): an 11-byte key with a
        // 64-byte value takes a 92-byte slot and 7 table bytes; LRU links add 8, a TTL 8 in
        // the slot and a 16-byte heap entry. Growing any of it is a deliberate change.
        let record = Record::new(b"key:0000000", &[b'v'; 64]);
        assert_eq!(Store::default().entry_bytes(&record, false), 99);
        let lru = Store::new(Budget {
            eviction: Eviction::Lru,
            ..Budget::UNLIMITED
        });
        assert_eq!(lru.entry_bytes(&record, false), 107);
        assert_eq!(Store::default().entry_bytes(&record, true), 99 + 8 + 16);
    }

    #[test]
    fn every_write_changes_the_version_and_conditions_guard_writes() {
        // Goal: versions grow on every write (put, update, re-create after delete) and a
        // conditional put/update/delete runs only when its condition holds, changing nothing
        // otherwise.
        let mut store = Store::default();
        let created = match store.put(Record::new(b"k", b"1"), None) {
            Outcome::Created { version } => version,
            other => panic!("{other:?}"),
        };
        assert_eq!(store.version_of(b"k"), Some(created));
        let stale = Condition::if_version(created);
        let Outcome::Replaced { version: replaced } = store.put_if(Record::new(b"k", b"2"), None, stale) else {
            panic!("a matching If-Match writes")
        };
        assert!(replaced > created);
        assert_eq!(
            store.put_if(Record::new(b"k", b"3"), None, stale),
            Outcome::PreconditionFailed {
                current: Some(replaced)
            }
        );
        assert_eq!(
            store.get(b"k").map(|(v, _, version)| (v.to_vec(), version)),
            Some((b"2".to_vec(), replaced))
        );
        assert_eq!(
            store.put_if(Record::new(b"k", b"3"), None, Condition::IF_ABSENT),
            Outcome::PreconditionFailed {
                current: Some(replaced)
            }
        );
        assert_eq!(
            store.update_if(Record::new(b"k", b"3"), stale),
            Outcome::PreconditionFailed {
                current: Some(replaced)
            }
        );
        let Outcome::Updated { version: updated } =
            store.update_if(Record::new(b"k", b"3"), Condition::if_version(replaced))
        else {
            panic!("a matching update writes")
        };
        assert!(updated > replaced);
        assert_eq!(
            store.delete_if(b"k", stale),
            Outcome::PreconditionFailed { current: Some(updated) }
        );
        assert_eq!(
            store.delete_if(b"k", Condition::if_version(updated)),
            Outcome::Deleted(true)
        );
        assert_eq!(
            store.delete_if(b"k", Condition::IF_EXISTS),
            Outcome::PreconditionFailed { current: None }
        );
        assert_eq!(
            store.update_if(Record::new(b"k", b"4"), Condition::IF_EXISTS),
            Outcome::Missing
        );
        let Outcome::Created { version: again } = store.put_if(Record::new(b"k", b"5"), None, Condition::IF_ABSENT)
        else {
            panic!("create-only of an absent key writes")
        };
        assert!(again > updated, "a re-created key never reuses an old version");
        store.check_invariants();
    }

    #[test]
    fn restored_versions_are_kept_and_later_writes_go_above_them() {
        // Goal: a recovery can restore a key's version, and the counter resumes above it.
        let mut store = Store::default();
        assert!(matches!(
            store.set_with_version(Record::new(b"a", b"v"), None, 1000),
            Outcome::Created { version: 1000 }
        ));
        assert!(matches!(
            store.set_with_version(Record::new(b"b", b"v"), None, 10),
            Outcome::Created { version: 10 }
        ));
        let Outcome::Created { version } = store.put(Record::new(b"c", b"v"), None) else {
            panic!()
        };
        assert!(version > 1000, "{version}");
        assert_eq!(store.version_of(b"b"), Some(10));
        store.check_invariants();
    }

    #[test]
    fn a_reused_node_is_not_expired_by_its_previous_keys_deadline() {
        let mut store = Store::default();
        store.put(Record::new(b"old", b"v"), Some(1));
        store.delete(b"old");
        store.put(Record::new(b"new", b"v"), Some(60_000)); // reuses the freed node
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.expire(usize::MAX), 0);
        assert!(store.get(b"new").is_some());
    }

    #[test]
    fn put_get_update_delete_round_trip() {
        let mut store = Store::default();
        assert_eq!(put(&mut store, "k", "one"), Outcome::Created { version: 0 });
        assert_eq!(put(&mut store, "k", "two"), Outcome::Replaced { version: 0 });
        assert_eq!(value(&mut store, "k").unwrap(), b"two");
        assert_eq!(
            store.update(Record::new(b"k", b"three")).without_versions(),
            Outcome::Updated { version: 0 }
        );
        assert_eq!(value(&mut store, "k").unwrap(), b"three");
        assert_eq!(
            store.update(Record::new(b"absent", b"x")),
            Outcome::Missing,
            "update never creates"
        );
        assert_eq!(value(&mut store, "absent"), None);
        assert!(store.delete(b"k"));
        assert!(!store.delete(b"k"), "delete is idempotent");
        assert!(store.is_empty());
        assert_eq!(store.memory_bytes(), 0, "every byte accounted is given back");
    }

    #[test]
    fn memory_accounting_follows_every_write() {
        let mut store = Store::default();
        put(&mut store, "ab", "1234");
        let small = store.memory_bytes();
        assert!(small >= ENTRY_OVERHEAD_BYTES + 6);
        put(&mut store, "ab", &"x".repeat(1000));
        assert!(store.memory_bytes() >= ENTRY_OVERHEAD_BYTES + 1002);
        store.update(Record::new(b"ab", b"1234"));
        assert_eq!(store.memory_bytes(), small);
        store.put(Record::new(b"t", b"v"), Some(60_000));
        store.delete(b"t");
        store.delete(b"ab");
        assert_eq!(store.memory_bytes(), 0);
    }

    #[test]
    fn many_keys_survive_resizes_and_slot_reuse() {
        let mut store = Store::default();
        for i in 0..20_000u32 {
            store.put(Record::new(&i.to_le_bytes(), &i.to_be_bytes()), None);
        }
        for i in (0..20_000u32).step_by(2) {
            assert!(store.delete(&i.to_le_bytes()));
        }
        for i in 20_000..30_000u32 {
            store.put(Record::new(&i.to_le_bytes(), &i.to_be_bytes()), None);
        }
        assert_eq!(store.len(), 20_000);
        for i in 0..30_000u32 {
            let expected = (i >= 20_000 || i % 2 == 1).then(|| i.to_be_bytes().to_vec());
            assert_eq!(
                store.get(&i.to_le_bytes()).map(|(v, ..)| v.to_vec()),
                expected,
                "key {i}"
            );
        }
    }

    #[test]
    fn reject_mode_refuses_new_keys_at_the_limit_but_allows_replacing() {
        let mut store = Store::new(Budget {
            keys_max: Some(2),
            memory_bytes_max: None,
            eviction: Eviction::Reject,
        });
        assert_eq!(put(&mut store, "a", "1"), Outcome::Created { version: 0 });
        assert_eq!(put(&mut store, "b", "1"), Outcome::Created { version: 0 });
        assert_eq!(put(&mut store, "c", "1"), Outcome::Rejected(Limit::Keys(2)));
        assert_eq!(value(&mut store, "c"), None);
        assert_eq!(put(&mut store, "a", "22"), Outcome::Replaced { version: 0 });
        assert_eq!(
            store.update(Record::new(b"b", b"33")).without_versions(),
            Outcome::Updated { version: 0 }
        );
        store.delete(b"a");
        assert_eq!(put(&mut store, "c", "1"), Outcome::Created { version: 0 });
    }

    #[test]
    fn reject_mode_counts_memory() {
        let one = {
            let mut scratch = Store::default();
            put(&mut scratch, "k0", "v");
            scratch.memory_bytes() as u64
        };
        let budget = Budget {
            keys_max: None,
            memory_bytes_max: Some(3 * one),
            eviction: Eviction::Reject,
        };
        let mut store = Store::new(budget);
        let mut created = 0;
        for i in 0..10 {
            match put(&mut store, &format!("k{i}"), "v") {
                Outcome::Created { .. } => created += 1,
                Outcome::Rejected(Limit::Memory(max)) => assert_eq!(max, 3 * one),
                other => panic!("{other:?}"),
            }
        }
        // Accounting uses the allocator's real chunk sizes, and glibc sometimes hands out a
        // slightly larger chunk than asked (it does not split off remainders below its minimum),
        // so the third key may not fit; the budget itself is never exceeded.
        assert!((2..=3).contains(&created), "{created}");
        assert!(store.memory_bytes() as u64 <= 3 * one);
    }

    #[test]
    fn lru_mode_evicts_the_least_recently_used() {
        let mut store = Store::new(Budget {
            keys_max: Some(3),
            memory_bytes_max: None,
            eviction: Eviction::Lru,
        });
        for key in ["a", "b", "c"] {
            put(&mut store, key, "v");
        }
        value(&mut store, "a"); // a is now the most recent; b the least
        put(&mut store, "d", "v");
        assert_eq!(value(&mut store, "b"), None, "b was least recently used");
        store.update(Record::new(b"c", b"w")); // a write counts as use: a is least recent now
        put(&mut store, "e", "v");
        assert_eq!(value(&mut store, "a"), None);
        assert!(value(&mut store, "c").is_some() && value(&mut store, "d").is_some());
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        assert_eq!((stats.keys, stats.evictions), (3, 2));
    }

    #[test]
    fn lru_mode_evicts_to_the_memory_budget_and_refuses_what_never_fits() {
        let budget = Budget {
            keys_max: None,
            memory_bytes_max: Some(4096),
            eviction: Eviction::Lru,
        };
        let mut store = Store::new(budget);
        for i in 0..100 {
            assert_eq!(
                put(&mut store, &format!("k{i}"), &"x".repeat(100)),
                Outcome::Created { version: 0 }
            );
            assert!(store.memory_bytes() <= 4096);
        }
        assert!(value(&mut store, "k99").is_some());
        assert_eq!(value(&mut store, "k0"), None);
        assert_eq!(
            put(&mut store, "huge", &"x".repeat(5000)),
            Outcome::Rejected(Limit::Memory(4096))
        );
    }

    #[test]
    fn ttl_hides_expired_keys_and_plain_put_clears_it() {
        let mut store = Store::default();
        store.put(Record::new(b"t", b"v"), Some(1));
        store.put(Record::new(b"keep", b"v"), Some(60_000));
        let (_, ttl, _) = store.get(b"keep").unwrap();
        assert!(ttl.unwrap() > 59_000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(value(&mut store, "t"), None, "expired keys are never returned");
        store.put(Record::new(b"keep", b"w"), None);
        assert_eq!(store.get(b"keep").unwrap().1, None, "a plain put clears the TTL");
        store.put(Record::new(b"p", b"v"), Some(60_000));
        store.update(Record::new(b"p", b"w"));
        assert!(store.get(b"p").unwrap().1.is_some(), "update keeps the TTL");
    }

    #[test]
    fn active_expiry_reclaims_without_reads_and_in_bounded_steps() {
        let mut store = Store::default();
        for i in 0..100u32 {
            store.put(Record::new(&i.to_le_bytes(), b"v"), Some(1));
        }
        store.put(Record::new(b"forever", b"v"), None);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.expire(30), 30, "bounded work per call");
        assert_eq!(store.expire(usize::MAX), 70);
        assert_eq!(store.len(), 1);
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        assert_eq!(stats.expired, 100);
        assert_eq!(store.next_expiry_in_ms(), None);
    }

    #[test]
    fn rewriting_ttl_keys_does_not_grow_the_heap_without_bound() {
        let mut store = Store::default();
        for round in 0..50_000u32 {
            store.put(Record::new(b"hot", &round.to_le_bytes()), Some(3_600_000));
        }
        assert!(
            store.expiry.len() <= 2 * EXPIRY_HEAP_SLACK_ENTRIES,
            "{}",
            store.expiry.len()
        );
        assert_eq!(store.expire(usize::MAX), 0, "nothing is due, stale entries are skipped");
        assert_eq!(store.len(), 1);
    }

    use super::model_tests::{set_test_clock, test_clock};

    fn limited(keys_max: Option<u64>, memory_bytes_max: Option<u64>, eviction: Eviction) -> Store {
        set_test_clock(1);
        Store::with_clock(
            Budget {
                keys_max,
                memory_bytes_max,
                eviction,
            },
            test_clock,
        )
    }

    #[test]
    fn a_full_slab_refuses_new_keys_instead_of_panicking() {
        // Goal: past the node limit a new key is a 507 (reject) or an eviction (LRU), never
        // an assert that would take the server down; existing keys stay writable.
        let mut store = limited(None, None, Eviction::Reject);
        store.nodes_max = 3;
        for key in ["a", "b", "c"] {
            assert_eq!(put(&mut store, key, "v"), Outcome::Created { version: 0 });
        }
        assert_eq!(put(&mut store, "d", "v"), Outcome::Rejected(Limit::Keys(3)));
        assert_eq!(put(&mut store, "a", "w"), Outcome::Replaced { version: 0 });
        store.delete(b"b");
        assert_eq!(
            put(&mut store, "d", "v"),
            Outcome::Created { version: 0 },
            "a freed node is reused"
        );
        store.check_invariants();

        let mut store = limited(Some(10), None, Eviction::Lru);
        store.nodes_max = 3;
        for key in ["a", "b", "c", "d", "e"] {
            assert_eq!(put(&mut store, key, "v"), Outcome::Created { version: 0 });
            store.check_invariants();
        }
        assert_eq!((store.len(), store.slab.len()), (3, 3));
        assert_eq!(value(&mut store, "b"), None, "the least recently used made room");
        assert!(value(&mut store, "e").is_some());
    }

    #[test]
    fn a_write_reclaims_a_bounded_number_of_expired_keys() {
        // Goal: in reject mode a write reclaims expired keys to fit, but never more than
        // EXPIRY_KEYS_PER_WRITE_MAX of them; past that it is refused until expiry catches up.
        let keys = 2 * EXPIRY_KEYS_PER_WRITE_MAX as u64;
        let mut store = limited(Some(keys), None, Eviction::Reject);
        for i in 0..keys {
            store.put(Record::new(format!("t{i}").as_bytes(), b"v"), Some(10));
        }
        set_test_clock(20);
        assert_eq!(
            put(&mut store, "new", "v"),
            Outcome::Created { version: 0 },
            "one expired key made room"
        );
        assert_eq!(store.len() as u64, keys, "and only as many as needed were reclaimed");
        store.check_invariants();

        let small = Record::new(b"s0000", b"v");
        let one = Store::default().entry_bytes(&small, true) as u64;
        let mut store = limited(None, Some(keys * one), Eviction::Reject);
        // glibc may hand a record a slightly larger chunk than its twin: fill until full.
        for i in 0..keys {
            if store
                .put(Record::new(format!("s{i:04}").as_bytes(), b"v"), Some(10))
                .without_versions()
                != (Outcome::Created { version: 0 })
            {
                break;
            }
        }
        let filled = store.len();
        // (How full depends on the chunk sizes malloc hands out; more than enough either way.)
        assert!(filled as u64 > keys * 6 / 10, "{filled}");
        set_test_clock(20);
        // Needs the room of about 1.5 * EXPIRY_KEYS_PER_WRITE_MAX small keys.
        let big = "x".repeat((one as usize) * EXPIRY_KEYS_PER_WRITE_MAX * 3 / 2);
        assert!(matches!(
            put(&mut store, "big", &big),
            Outcome::Rejected(Limit::Memory(_))
        ));
        assert_eq!(store.len(), filled - EXPIRY_KEYS_PER_WRITE_MAX, "bounded work");
        store.check_invariants();
        store.expire(usize::MAX);
        assert_eq!(
            put(&mut store, "big", &big),
            Outcome::Created { version: 0 },
            "fits once expiry caught up"
        );
    }

    #[test]
    fn scan_from_visits_every_key_live_throughout_exactly_once() {
        // Goal: a chunked scan, with writes and deletes between chunks, sees each key that
        // lived through it once, with its value and deadline, and never an expired key.
        let mut store = limited(None, None, Eviction::Reject);
        for i in 0..10_000u32 {
            let ttl = (i % 3 == 0).then_some(60_000);
            store.put(Record::new(format!("stable{i}").as_bytes(), &i.to_le_bytes()), ttl);
        }
        store.put(Record::new(b"expired", b"v"), Some(5));
        set_test_clock(10);
        let mut seen = std::collections::HashMap::new();
        let (mut cursor, mut chunks, mut churn) = (Some(0), 0, 0u32);
        while let Some(from) = cursor {
            cursor = store.scan_from(from, 333, |key, value, deadline, _version| {
                let first = seen.insert(key.to_vec(), (value.to_vec(), deadline));
                assert!(first.is_none(), "visited twice: {}", String::from_utf8_lossy(key));
            });
            for _ in 0..50 {
                let key = format!("churn{churn}");
                store.put(Record::new(key.as_bytes(), b"c"), None);
                if churn % 2 == 0 {
                    store.delete(key.as_bytes());
                }
                churn += 1;
            }
            chunks += 1;
        }
        assert!(chunks > 20, "{chunks} chunks");
        assert!(!seen.contains_key(&b"expired"[..]));
        for i in 0..10_000u32 {
            let deadline = (i % 3 == 0).then_some(60_001);
            let want = (i.to_le_bytes().to_vec(), deadline);
            assert_eq!(seen.get(format!("stable{i}").as_bytes()), Some(&want), "stable{i}");
        }
        assert_eq!(store.scan_from(u32::MAX, 10, |_, _, _, _| panic!("past the end")), None);
    }

    #[test]
    fn set_with_deadline_restores_absolute_deadlines() {
        // Goal: recovery can put back a key with the deadline a snapshot recorded, and a
        // deadline already past leaves the key absent.
        let mut store = limited(None, None, Eviction::Reject);
        set_test_clock(100);
        assert_eq!(
            store
                .set_with_deadline(Record::new(b"k", b"v"), Some(150))
                .without_versions(),
            Outcome::Created { version: 0 }
        );
        assert_eq!(store.get(b"k").unwrap().1, Some(50));
        assert_eq!(
            store
                .set_with_deadline(Record::new(b"k", b"w"), None)
                .without_versions(),
            Outcome::Replaced { version: 0 }
        );
        assert_eq!(store.get(b"k").map(|(v, t, _)| (v, t)).unwrap(), (&b"w"[..], None));
        assert_eq!(
            store.set_with_deadline(Record::new(b"k", b"x"), Some(100)),
            Outcome::Deleted(true)
        );
        assert_eq!(store.get(b"k"), None);
        assert_eq!(
            store.set_with_deadline(Record::new(b"k", b"x"), Some(1)),
            Outcome::Deleted(false)
        );
        assert!(store.is_empty());
        store.check_invariants();
    }

    #[test]
    fn after_a_big_delete_the_tick_trims_once_then_waits() {
        // Goal: the expiry tick gives memory back once enough was freed, shrinks the table
        // and heap, and is rate-limited (and free when nothing was freed).
        let mut store = limited(None, None, Eviction::Reject);
        set_test_clock(10_000);
        let value = [7u8; 200];
        for i in 0..100_000u32 {
            store.put(Record::new(&i.to_le_bytes(), &value), Some(1_000));
        }
        assert!(!store.after_expiry_tick(), "nothing freed yet");
        let table_capacity = store.table.capacity();
        set_test_clock(20_000);
        assert_eq!(store.expire(usize::MAX), 100_000);
        let started = std::time::Instant::now();
        assert!(
            store.after_expiry_tick(),
            "freed {} bytes",
            store.freed_bytes_since_trim
        );
        eprintln!("trim after freeing 100k keys took {:?}", started.elapsed());
        assert!(
            store.table.capacity() < table_capacity / 4,
            "{}",
            store.table.capacity()
        );
        assert!(
            store.expiry.capacity() <= 2 * SHRINK_CAPACITY_MIN,
            "{}",
            store.expiry.capacity()
        );
        for i in 0..100_000u32 {
            store.put(Record::new(&i.to_le_bytes(), &value), None);
        }
        for i in 0..100_000u32 {
            store.delete(&i.to_le_bytes());
        }
        assert!(!store.after_expiry_tick(), "rate-limited");
        set_test_clock(20_000 + MEMORY_TRIM_INTERVAL_MS_MIN);
        assert!(store.after_expiry_tick());
        store.check_invariants();
    }

    fn replicated(keys_max: Option<u64>, memory_bytes_max: Option<u64>, eviction: Eviction) -> Store {
        let mut store = limited(keys_max, memory_bytes_max, eviction);
        store.set_replicated(true);
        store
    }

    fn keys_oldest_first(store: &Store) -> Vec<Vec<u8>> {
        let (mut keys, mut cursor) = (Vec::new(), None);
        loop {
            cursor = store.scan_oldest_first(cursor, 2, |key, _, _, _| keys.push(key.to_vec()));
            if cursor.is_none() {
                return keys;
            }
        }
    }

    #[test]
    fn in_cluster_mode_reads_hide_expired_keys_and_nothing_removes_them_but_an_expire() {
        // Goal: on a replica, an expired key reads as absent but stays (counted, listed in a
        // snapshot scan) through reads, the expiry tick and writes' room-making; only an expire
        // of the version it has removes it, and one of an older version leaves a rewrite alone.
        let mut store = replicated(Some(2), None, Eviction::Reject);
        store.put_until_if(Record::new(b"t", b"v"), 10, Condition::NONE);
        store.put(Record::new(b"keep", b"v"), None);
        set_test_clock(20);
        assert_eq!(store.get(b"t"), None, "hidden");
        assert_eq!(store.peek(b"t"), None);
        assert_eq!(store.expire(usize::MAX), 0, "the tick never expires on a replica");
        assert_eq!(
            put(&mut store, "new", "v"),
            Outcome::Rejected(Limit::Keys(2)),
            "an expired key still counts: the leader has not expired it yet"
        );
        assert_eq!(store.len(), 2);
        let mut scanned = Vec::new();
        store.scan_from(0, 10, |key, _, deadline, _| scanned.push((key.to_vec(), deadline)));
        assert!(scanned.contains(&(b"t".to_vec(), Some(10))), "{scanned:?}");
        let due = store.due_for_expiry(10);
        let version = store.find(b"t").map(|index| store.slab.version(index)).unwrap();
        assert_eq!(due, vec![(b"t".to_vec().into_boxed_slice(), version)]);
        assert_eq!(
            store.due_for_expiry(10),
            due,
            "still due until the expire entry applies"
        );
        // A rewrite (no TTL) lands before the leader's expire: the expire must not touch it.
        store.put(Record::new(b"t", b"again"), None);
        assert!(!store.expire_version(b"t", version), "a rewritten key survives");
        assert_eq!(store.get(b"t").map(|(v, ..)| v.to_vec()), Some(b"again".to_vec()));
        assert!(store.due_for_expiry(10).is_empty());
        store.put_until_if(Record::new(b"t", b"v"), 15, Condition::NONE);
        let version = store.version_of(b"t");
        assert_eq!(version, None, "expired at once on this clock");
        let (_, version) = store.due_for_expiry(10).pop().unwrap();
        assert!(store.expire_version(b"t", version));
        assert!(!store.expire_version(b"t", version), "an expire applies once");
        assert_eq!(put(&mut store, "new", "v"), Outcome::Created { version: 0 });
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        assert_eq!((stats.keys, stats.expired), (2, 1));
        store.check_invariants();
    }

    #[test]
    fn in_cluster_mode_reads_never_reorder_eviction() {
        // Goal: under LRU in cluster mode only writes move a key's recency, so two replicas
        // that applied the same writes but served different reads evict the same keys.
        let mut quiet = replicated(Some(3), None, Eviction::Lru);
        let mut busy = replicated(Some(3), None, Eviction::Lru);
        for store in [&mut quiet, &mut busy] {
            for key in ["a", "b", "c"] {
                put(store, key, "v");
            }
        }
        assert!(value(&mut busy, "a").is_some(), "a read on one replica only");
        for store in [&mut quiet, &mut busy] {
            store.update(Record::new(b"b", b"w"));
            put(store, "d", "v");
            store.check_invariants();
        }
        assert_eq!(keys_oldest_first(&quiet), keys_oldest_first(&busy));
        assert_eq!(keys_oldest_first(&busy), [b"c".to_vec(), b"b".to_vec(), b"d".to_vec()]);
        assert_eq!(value(&mut busy, "a"), None, "the oldest write went, read or not");
    }

    #[test]
    fn in_cluster_mode_memory_is_accounted_by_length() {
        // Goal: --max-memory decisions depend on the keys' lengths only, not on what each
        // process's malloc handed out, so every replica refuses the same write: a slot's class
        // is a function of the length already; a large record counts its nominal glibc chunk.
        let mut store = replicated(None, None, Eviction::Reject);
        store.put(Record::new(b"k", &[1u8; 100]), None);
        let slot = store.slab.shape(101, false).slot_bytes;
        assert_eq!(store.memory_bytes(), slot + TABLE_BYTES_PER_KEY);
        store.put(Record::new(b"k", &[1u8; 5_000]), Some(60_000));
        let slot = store.slab.shape(5_001, true).slot_bytes;
        let large = slab::nominal_chunk_bytes(5_001) + slab::LARGE_ENTRY_BYTES;
        assert_eq!(
            store.memory_bytes(),
            slot + large + TABLE_BYTES_PER_KEY + EXPIRY_ENTRY_BYTES
        );
        store.check_invariants();
        store.delete(b"k");
        assert_eq!(store.memory_bytes(), 0);
        assert_eq!(
            [0, 1, 24, 25, 100].map(slab::nominal_chunk_bytes),
            [0, 32, 32, 48, 112],
            "glibc's chunk sizes"
        );
        let slot = store.slab.shape(32, false).slot_bytes;
        let budget = 3 * (slot + TABLE_BYTES_PER_KEY) as u64;
        let mut store = replicated(None, Some(budget), Eviction::Reject);
        for i in 0..3 {
            assert!(matches!(
                store.put(Record::new(format!("k{i}").as_bytes(), &[0; 30]), None),
                Outcome::Created { .. }
            ));
        }
        assert_eq!(put(&mut store, "k3", "v"), Outcome::Rejected(Limit::Memory(budget)));
        store.check_invariants();
    }

    #[test]
    fn a_recency_scan_rebuilds_the_same_lru_order() {
        // Goal: filling a store in the order scan_oldest_first visits gives the same LRU
        // order and keys (a Raft snapshot), expired keys included in cluster mode.
        let mut store = replicated(None, None, Eviction::Lru);
        let mut copy = replicated(None, None, Eviction::Lru);
        for key in ["a", "b", "c", "d", "e"] {
            put(&mut store, key, "v");
        }
        store.delete(b"b");
        store.put_until_if(Record::new(b"x", b"v"), 5, Condition::NONE);
        store.update(Record::new(b"a", b"w"));
        set_test_clock(10);
        let order = keys_oldest_first(&store);
        assert_eq!(order, [b"c", b"d", b"e", b"x", b"a"].map(|k| k.to_vec()));
        let mut cursor = None;
        loop {
            cursor = store.scan_oldest_first(cursor, 3, |key, value, deadline, version| {
                copy.set_with_version(Record::new(key, value), deadline, version);
            });
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(keys_oldest_first(&copy), order);
        assert_eq!(copy.len(), 5, "the expired key is restored, still hidden");
        assert_eq!(copy.peek(b"x"), None);
        copy.check_invariants();
        assert!(store.scan_oldest_first(None, 10, |_, _, _, _| {}).is_none());
        copy.clear();
        assert_eq!(copy.scan_oldest_first(None, 10, |_, _, _, _| panic!("empty")), None);
    }

    thread_local! {
        /// A second replica's clock: the test clock plus a skew. Its deadlines are put 7 ms
        /// later than the first's (as `storage::unix_to_mono_ms` moves them onto its clock) and
        /// its clock runs 10 ms later: it applies each entry 3 ms after the first does.
        static SKEW_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn skewed_clock() -> u64 {
        test_clock() + SKEW_MS.with(std::cell::Cell::get)
    }

    /// A write both replicas apply, as a committed entry's command.
    fn replica_write(store: &mut Store, rng: &mut u64, key: &[u8], skew: u64) -> Outcome<Vec<u8>> {
        let pick = |rng: &mut u64, n: u64| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng % n
        };
        let value = vec![b'v'; pick(rng, 90) as usize];
        let condition = match pick(rng, 6) {
            0 => Condition::IF_ABSENT,
            1 => Condition::IF_EXISTS,
            2 => Condition::if_version(1 + pick(rng, 40)),
            _ => Condition::NONE,
        };
        let outcome = match pick(rng, 5) {
            0 | 1 => {
                let deadline = test_clock() + pick(rng, 40) + skew;
                store.put_until_if(Record::new(key, &value), deadline, condition)
            }
            2 => store.put_if(Record::new(key, &value), None, condition),
            3 => store.update_if(Record::new(key, &value), condition),
            _ => store.delete_if(key, condition),
        };
        outcome.map(|v| v.to_vec())
    }

    #[test]
    fn replicas_applying_the_same_commands_stay_identical_whatever_they_read_and_their_clocks() {
        // Goal: two cluster-mode stores with skewed clocks that apply the same writes and the
        // same leader's expires, one of them also serving random reads and restored once from
        // the other's recency scan (a snapshot), answer every write alike and hold the same
        // keys, versions, LRU order and accounted bytes after every step, in every budget mode.
        let budgets = [
            (Some(12), None, Eviction::Lru),
            (None, Some(1_500), Eviction::Lru),
            (Some(12), None, Eviction::Reject),
            (None, Some(1_500), Eviction::Reject),
        ];
        for (keys_max, memory_bytes_max, eviction) in budgets {
            let mut leader = replicated(keys_max, memory_bytes_max, eviction);
            SKEW_MS.with(|skew| skew.set(10));
            let budget = leader.budget;
            let mut follower = Store::with_clock(budget, skewed_clock);
            follower.set_replicated(true);
            let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ keys_max.unwrap_or(3);
            for step in 0..4_000u64 {
                let key = format!("k{}", (step * 7 + rng % 11) % 30).into_bytes();
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                match rng >> 61 {
                    _ if step % 1_000 == 999 => {
                        follower.clear();
                        let mut cursor = None;
                        loop {
                            cursor = leader.scan_oldest_first(cursor, 5, |key, value, deadline, version| {
                                follower.set_with_version(Record::new(key, value), deadline.map(|d| d + 7), version);
                            });
                            if cursor.is_none() {
                                break;
                            }
                        }
                        follower.raise_next_version(leader.next_version());
                    }
                    0..=3 => {
                        let mut twin = rng;
                        let led = replica_write(&mut leader, &mut rng, &key, 0);
                        assert_eq!(replica_write(&mut follower, &mut twin, &key, 7), led, "step {step}");
                    }
                    4 => {
                        for (key, version) in leader.due_for_expiry(3) {
                            assert_eq!(
                                leader.expire_version(&key, version),
                                follower.expire_version(&key, version)
                            );
                        }
                    }
                    6 => set_test_clock(test_clock() + rng % 9),
                    _ => drop((follower.get(&key), leader.get(b"k3"))),
                }
                // Without eviction by recency no order is kept: the same keys, in any order.
                let keys = |store: &Store| {
                    let mut keys = keys_oldest_first(store);
                    if eviction == Eviction::Reject {
                        keys.sort_unstable();
                    }
                    keys
                };
                assert_eq!(keys(&leader), keys(&follower), "step {step}");
                assert_eq!(leader.memory_bytes(), follower.memory_bytes(), "step {step}");
                assert_eq!(leader.next_version(), follower.next_version(), "step {step}");
                for key in keys_oldest_first(&leader) {
                    let version = |store: &Store| store.find(&key).map(|index| store.slab.version(index));
                    assert_eq!(version(&leader), version(&follower), "step {step}");
                }
            }
            leader.check_invariants();
            follower.check_invariants();
        }
    }

    // Goal: clear (a Raft snapshot restore) empties keys, memory and TTLs, keeps the hit
    // counters and removal tracking, and never lowers the next version when raised again.
    #[test]
    fn clear_empties_the_store_and_keeps_its_counters() {
        let mut store = Store::default();
        store.track_removals(true);
        store.put(Record::new(b"a", b"1"), Some(60_000));
        store.put(Record::new(b"b", b"2"), None);
        assert!(store.get(b"a").is_some());
        let next = store.next_version();
        store.clear();
        store.check_invariants();
        assert_eq!((store.len(), store.memory_bytes()), (0, 0));
        assert!(store.get(b"a").is_none() && store.get(b"b").is_none());
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        assert_eq!((stats.hits, stats.misses), (1, 2));
        let mut removed = Vec::new();
        store.take_removals(&mut removed);
        assert!(removed.is_empty(), "a clear reports no removals");
        store.raise_next_version(next);
        store.raise_next_version(1);
        assert_eq!(store.next_version(), next);
        assert!(matches!(store.put(Record::new(b"c", b"3"), None), Outcome::Created { version } if version == next));
    }
}

/// A randomized test of the whole store against a plain `HashMap`, on a hand-driven clock.
#[cfg(test)]
mod model_tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    thread_local! {
        /// The test clock: each test thread moves its own.
        static TEST_NOW_MS: Cell<u64> = const { Cell::new(1) };
    }

    pub(super) fn test_clock() -> u64 {
        TEST_NOW_MS.with(Cell::get)
    }

    pub(super) fn set_test_clock(now_ms: u64) {
        TEST_NOW_MS.with(|now| now.set(now_ms));
    }

    /// Deterministic xorshift64*: the same seed replays the same run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    struct Entry {
        value: Vec<u8>,
        /// 0: never expires.
        deadline: u64,
        /// When last used (a counter): the LRU order.
        used: u64,
        /// What the store accounts for it: slot (large record), table slot, heap entry.
        bytes: usize,
    }

    /// What the store should hold. Expired keys stay in it until the store reclaims them too.
    struct Model {
        entries: HashMap<Vec<u8>, Entry>,
        budget: Budget,
        keys_max: u64,
        nodes_max: u64,
        tick: u64,
        evictions: u64,
        expired: u64,
        hits: u64,
        misses: u64,
    }

    fn is_due(entry: &Entry, now: u64) -> bool {
        entry.deadline != 0 && entry.deadline <= now
    }

    impl Model {
        fn memory(&self) -> usize {
            self.entries.values().map(|e| e.bytes).sum()
        }

        /// Like `Store::live_index`: a due key is reclaimed when touched.
        fn live(&mut self, key: &[u8], now: u64) -> bool {
            match self.entries.get(key) {
                Some(entry) if is_due(entry, now) => {
                    self.entries.remove(key);
                    self.expired += 1;
                    false
                }
                Some(_) => true,
                None => false,
            }
        }

        fn used(&mut self) -> u64 {
            self.tick += 1;
            self.tick
        }

        fn set(&mut self, key: &[u8], value: &[u8], bytes: usize, deadline: u64) {
            let used = self.used();
            let entry = Entry {
                value: value.to_vec(),
                deadline,
                used,
                bytes,
            };
            self.entries.insert(key.to_vec(), entry);
        }

        fn evict_lru(&mut self) {
            let victim = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            self.entries.remove(&victim.unwrap());
            self.evictions += 1;
        }

        /// Like `Store::evict_to_budget`: the written key is the most recent, evicted never.
        fn evict_to_budget(&mut self) {
            if self.budget.eviction != Eviction::Lru {
                return;
            }
            while self.entries.len() > 1 {
                let over_keys = self.budget.keys_max.is_some_and(|max| self.entries.len() as u64 > max);
                let over_memory = self
                    .budget
                    .memory_bytes_max
                    .is_some_and(|max| self.memory() as u64 > max);
                if !(over_keys || over_memory) {
                    return;
                }
                self.evict_lru();
            }
        }

        /// The limit a new key of `record_bytes` breaks in reject mode, as things stand.
        fn over(&self, record_bytes: usize) -> Option<Limit> {
            if self.entries.len() as u64 >= self.keys_max {
                Some(Limit::Keys(self.keys_max))
            } else {
                let max = self.budget.memory_bytes_max?;
                (self.memory() as u64 + record_bytes as u64 > max).then_some(Limit::Memory(max))
            }
        }

        /// Drops the due keys the store has reclaimed on its own (bounded reclaim in a write,
        /// or a bounded `expire`), whose choice among equal deadlines the model cannot know.
        /// Returns the deadlines dropped.
        fn sync_reclaimed(&mut self, store: &Store, now: u64) -> Vec<u64> {
            let gone: Vec<Vec<u8>> = (self.entries.iter())
                .filter(|(key, entry)| is_due(entry, now) && store.find(key).is_none())
                .map(|(key, _)| key.clone())
                .collect();
            let deadlines = gone
                .iter()
                .map(|key| self.entries.remove(key).unwrap().deadline)
                .collect();
            self.expired += gone.len() as u64;
            deadlines
        }
    }

    /// One random write: put (with or without TTL), update, or an absolute-deadline set.
    fn step_write(store: &mut Store, model: &mut Model, rng: &mut Rng, key: &[u8], now: u64) {
        // Mostly small values; now and then one that takes a large slot (or moves between).
        let len = if rng.below(12) == 0 {
            900 + rng.below(300)
        } else {
            rng.below(120)
        };
        let value = vec![b'a' + rng.below(26) as u8; len as usize];
        let record = Record::new(key, &value);
        let (plain_bytes, ttl_bytes) = (store.entry_bytes(&record, false), store.entry_bytes(&record, true));
        let bytes_with = |deadline: u64| if deadline != 0 { ttl_bytes } else { plain_bytes };
        let (deadline, via_deadline) = match rng.below(8) {
            0..=3 => (0, false),
            4..=5 => (now + 1 + rng.below(60), false),
            6 => {
                let outcome = store.update(record).map(|_| ()).without_versions();
                let expected = if model.live(key, now) {
                    let deadline = model.entries[key].deadline;
                    model.set(key, &value, bytes_with(deadline), deadline);
                    model.evict_to_budget();
                    Outcome::Updated { version: 0 }
                } else {
                    Outcome::Missing
                };
                assert_eq!(outcome, expected, "update");
                return;
            }
            _ => ((now + rng.below(60)).saturating_sub(20).max(1), true),
        };
        let outcome = if via_deadline {
            store
                .set_with_deadline(record, Some(deadline))
                .map(|_| ())
                .without_versions()
        } else {
            let ttl = (deadline != 0).then(|| deadline - now);
            store.put(record, ttl).map(|_| ()).without_versions()
        };
        let record_bytes = bytes_with(deadline);
        if via_deadline && deadline <= now {
            assert_eq!(
                outcome,
                Outcome::Deleted(model.live(key, now) && model.entries.remove(key).is_some())
            );
            return;
        }
        if model.live(key, now) {
            model.set(key, &value, record_bytes, deadline);
            model.evict_to_budget();
            assert_eq!(outcome, Outcome::Replaced { version: 0 }, "put of a live key");
            return;
        }
        let max = model.budget.memory_bytes_max;
        if let Some(max) = max.filter(|&max| record_bytes as u64 > max) {
            return assert_eq!(outcome, Outcome::Rejected(Limit::Memory(max)));
        }
        if model.budget.eviction == Eviction::Lru {
            if model.entries.len() as u64 >= model.nodes_max {
                model.evict_lru();
            }
        } else if model.over(record_bytes).is_some() {
            // The store reclaimed some due keys, possibly not all: learn which, then judge.
            model.sync_reclaimed(store, now);
            match (&outcome, model.over(record_bytes)) {
                (Outcome::Rejected(limit), Some(over)) => return assert_eq!(*limit, over),
                (Outcome::Created { version: 0 }, None) => {}
                (outcome, over) => panic!("store said {outcome:?}, model over {over:?}"),
            }
        }
        model.set(key, &value, record_bytes, deadline);
        model.evict_to_budget();
        assert_eq!(outcome, Outcome::Created { version: 0 }, "put of a new key");
    }

    /// One random read or delete.
    fn step_read(store: &mut Store, model: &mut Model, rng: &mut Rng, key: &[u8], now: u64) {
        let expected = |model: &Model| {
            model.entries.get(key).filter(|e| !is_due(e, now)).map(|e| {
                let ttl = (e.deadline != 0).then(|| e.deadline - now);
                (e.value.clone(), ttl)
            })
        };
        match rng.below(3) {
            0 => {
                let want = expected(model);
                assert_eq!(store.peek(key).map(|(v, t, _)| (v.to_vec(), t)), want, "peek");
            }
            1 => {
                let got = store.get(key).map(|(v, t, _)| (v.to_vec(), t));
                let live = model.live(key, now);
                if live {
                    model.hits += 1;
                    let used = model.used();
                    model.entries.get_mut(key).unwrap().used = used;
                } else {
                    model.misses += 1;
                }
                assert_eq!(got, expected(model), "get");
            }
            _ => {
                let removed = model.live(key, now) && model.entries.remove(key).is_some();
                assert_eq!(store.delete(key), removed, "delete");
            }
        }
    }

    /// A bounded `expire`: it must take the earliest deadlines first.
    fn step_expire(store: &mut Store, model: &mut Model, rng: &mut Rng, now: u64) {
        let keys_max = [1, 3, usize::MAX][rng.below(3) as usize];
        let removed = store.expire(keys_max);
        let dropped = model.sync_reclaimed(store, now);
        assert_eq!(removed, dropped.len(), "expire reports what it removed");
        let due_left = model.entries.values().filter(|e| is_due(e, now)).map(|e| e.deadline);
        if removed < keys_max {
            assert_eq!(due_left.count(), 0, "an unfinished expire leaves nothing due");
        } else if let (Some(latest), Some(earliest)) = (dropped.iter().max(), due_left.min()) {
            assert!(*latest <= earliest, "expired out of deadline order");
        }
    }

    /// Store and model hold the same keys, values, deadlines, counters, and (LRU) order.
    fn compare(store: &Store, model: &Model, now: u64) {
        assert_eq!(store.len(), model.entries.len(), "key count");
        assert_eq!(store.memory_bytes(), model.memory(), "accounted bytes");
        for (key, entry) in &model.entries {
            let index = store.find(key).expect("a model key is in the store");
            assert_eq!(
                (store.slab.key_value(index).1, store.slab.deadline(index)),
                (&entry.value[..], entry.deadline)
            );
        }
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        let counters = (stats.evictions, stats.expired, stats.hits, stats.misses);
        assert_eq!(counters, (model.evictions, model.expired, model.hits, model.misses));
        if model.budget.eviction == Eviction::Lru {
            let mut order: Vec<_> = model.entries.iter().collect();
            order.sort_by_key(|(_, e)| Reverse(e.used));
            let (mut index, mut position) = (store.lru_head, 0);
            while index != NIL {
                assert_eq!(store.slab.key(index), &order[position].0[..], "LRU order");
                (index, position) = (store.slab.links_of(index).1, position + 1);
            }
        }
        let mut scanned = HashMap::new();
        let mut cursor = Some(0);
        while let Some(from) = cursor {
            cursor = store.scan_from(from, 7, |key, value, deadline, _version| {
                assert!(
                    scanned
                        .insert(key.to_vec(), (value.to_vec(), deadline.unwrap_or(0)))
                        .is_none()
                );
            });
        }
        let live: HashMap<_, _> = (model.entries.iter())
            .filter(|(_, e)| !is_due(e, now))
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.deadline)))
            .collect();
        assert_eq!(scanned, live, "a scan visits every live key once");
    }

    fn run_model(seed: u64, budget: Budget, nodes_max: u32, steps: usize) {
        set_test_clock(1);
        let mut store = Store::with_clock(budget, test_clock);
        store.nodes_max = nodes_max;
        let mut model = Model {
            entries: HashMap::new(),
            budget,
            keys_max: budget.keys_max.unwrap_or(u64::MAX).min(u64::from(nodes_max)),
            nodes_max: u64::from(nodes_max),
            tick: 0,
            evictions: 0,
            expired: 0,
            hits: 0,
            misses: 0,
        };
        let mut rng = Rng(seed);
        for step in 0..steps {
            let now = test_clock();
            let key = format!("k{}", rng.below(48)).into_bytes();
            match rng.below(20) {
                0..=8 => step_write(&mut store, &mut model, &mut rng, &key, now),
                9..=16 => step_read(&mut store, &mut model, &mut rng, &key, now),
                17 => step_expire(&mut store, &mut model, &mut rng, now),
                18 => set_test_clock(now + rng.below(30)),
                _ => assert!(!store.after_expiry_tick(), "nothing worth trimming in a small store"),
            }
            store.check_invariants();
            if step % 16 == 0 {
                compare(&store, &model, test_clock());
            }
        }
        compare(&store, &model, test_clock());
    }

    const MODEL_STEPS: usize = 6_000;

    #[test]
    fn the_store_matches_a_hashmap_model_in_every_mode() {
        // Goal: every operation, in both eviction modes and under key, memory and slab
        // limits, leaves the store exactly where a plain HashMap model says (values, TTLs,
        // LRU order, counters), with every structural invariant intact after every step.
        let budgets = [
            (Budget::UNLIMITED, KEYS_PER_SHARD_MAX),
            (
                Budget {
                    keys_max: Some(20),
                    memory_bytes_max: None,
                    eviction: Eviction::Reject,
                },
                KEYS_PER_SHARD_MAX,
            ),
            (
                Budget {
                    keys_max: None,
                    memory_bytes_max: Some(3_000),
                    eviction: Eviction::Reject,
                },
                KEYS_PER_SHARD_MAX,
            ),
            (
                Budget {
                    keys_max: Some(20),
                    memory_bytes_max: None,
                    eviction: Eviction::Lru,
                },
                KEYS_PER_SHARD_MAX,
            ),
            (
                Budget {
                    keys_max: None,
                    memory_bytes_max: Some(3_000),
                    eviction: Eviction::Lru,
                },
                KEYS_PER_SHARD_MAX,
            ),
            (
                Budget {
                    keys_max: Some(30),
                    memory_bytes_max: Some(2_500),
                    eviction: Eviction::Lru,
                },
                KEYS_PER_SHARD_MAX,
            ),
            (Budget::UNLIMITED, 17),
            (
                Budget {
                    keys_max: None,
                    memory_bytes_max: None,
                    eviction: Eviction::Lru,
                },
                17,
            ),
        ];
        for (case, (budget, nodes_max)) in budgets.into_iter().enumerate() {
            for seed in [0x9e37_79b9_7f4a_7c15, 42 + case as u64] {
                run_model(seed, budget, nodes_max, MODEL_STEPS);
            }
        }
    }
}
