//! What shards say to each other: store operations, their outcomes, and the batch that carries
//! them to an owner with a reply slot.
//!
//! Owns the wire between shards and the one allocation layout of a key-value pair
//! ([`Record`]). It never touches a store itself.

use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::ptr::NonNull;

use crate::sync::oneshot;

/// A key and its value in one allocation: `key ++ value`, with both lengths alongside.
///
/// Built once by the HTTP layer straight from the request's bytes, moved to the owning shard,
/// and stored as it is: a write costs one allocation and one copy of the value. A thin pointer
/// and two `u32` lengths keep it at 16 bytes (a `Box<[u8]>` plus a key length would pad to 24),
/// which is 8 bytes less per stored key; every record is far below 4 GiB
/// (`limits::VALUE_BYTES_MAX_CEILING` and `KEY_BYTES_MAX_CEILING`).
///
/// The bytes come from [`System`] (the C library's `malloc`), never from whatever
/// `#[global_allocator]` the binary may install: the store accounts each record by asking
/// `malloc_usable_size` about it ([`Record::allocated_bytes`]), which is only sound on `malloc`'s
/// own pointers.
pub struct Record {
    /// `len` initialised bytes from `System.alloc` (align 1), or dangling when `len == 0`.
    pointer: NonNull<u8>,
    len: u32,
    key_len: u32,
}

// SAFETY: a Record uniquely owns its bytes, like a Box<[u8]>; nothing in it is shared.
unsafe impl Send for Record {}
// SAFETY: shared access only reads the bytes, like &Box<[u8]>.
unsafe impl Sync for Record {}

const _: () = assert!(std::mem::size_of::<Record>() == 16);
const _: () = assert!(
    (crate::limits::VALUE_BYTES_MAX_CEILING as u64 + crate::limits::KEY_BYTES_MAX_CEILING as u64) < u32::MAX as u64,
    "a record's length must fit in u32"
);

impl Record {
    /// Builds a record from a key and a value (both bounded by the limits, so far below 4 GiB).
    pub fn new(key: &[u8], value: &[u8]) -> Record {
        let len = key.len() + value.len();
        assert!(len < u32::MAX as usize, "record over 4 GiB: the limits forbid it");
        if len == 0 {
            return Record::empty();
        }
        let layout = Layout::array::<u8>(len).expect("a length under 4 GiB is a valid layout");
        // SAFETY: `layout` has a non-zero size (len > 0), as `GlobalAlloc::alloc` requires.
        let raw = unsafe { System.alloc(layout) };
        let Some(pointer) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the allocation holds `len` bytes; the sources do not overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), pointer.as_ptr(), key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), pointer.as_ptr().add(key.len()), value.len());
        }
        Record {
            pointer,
            len: len as u32,
            key_len: key.len() as u32,
        }
    }

    /// A record holding nothing (no allocation): the content of a free slab node.
    pub fn empty() -> Record {
        Record {
            pointer: NonNull::dangling(),
            len: 0,
            key_len: 0,
        }
    }

    /// Key and value bytes together, as allocated.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `pointer` holds `len` initialised bytes (or is dangling with len 0, which a
        // slice allows), owned by self for as long as the borrow.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.len as usize) }
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.as_bytes()[..self.key_len as usize]
    }

    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.as_bytes()[self.key_len as usize..]
    }

    /// Bytes of key plus value (what the store accounts as data).
    pub fn data_len(&self) -> usize {
        self.len as usize
    }

    /// Bytes the C allocator really holds for this record: its chunk's usable size plus
    /// glibc's per-chunk header; 0 for an empty record (no allocation).
    pub fn allocated_bytes(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        // SAFETY: `pointer` came from `System.alloc` with align 1 and a non-zero size, which on
        // Unix is a plain `malloc(len)` (std only takes another path for alignments above
        // malloc's minimum or above the size, neither possible for align 1); it is live until
        // `drop` frees it, and `&self` outlives this call.
        let usable = unsafe { libc::malloc_usable_size(self.pointer.as_ptr().cast::<libc::c_void>()) };
        usable + MALLOC_CHUNK_HEADER_BYTES
    }
}

/// glibc malloc's per-chunk header, on top of the usable size.
const MALLOC_CHUNK_HEADER_BYTES: usize = 8;

impl Drop for Record {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `new` by `System` with exactly this layout (`Layout::array`
            // of `len` bytes succeeded there, so it succeeds here), and freed only here, once.
            unsafe {
                System.dealloc(
                    self.pointer.as_ptr(),
                    Layout::array::<u8>(self.len as usize).unwrap_unchecked(),
                )
            };
        }
    }
}

impl Clone for Record {
    fn clone(&self) -> Record {
        let mut copy = Record::new(self.as_bytes(), b"");
        copy.key_len = self.key_len;
        copy
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.key_len == other.key_len && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Record {}

impl std::fmt::Debug for Record {
    // Never prints a value's bytes (values stay out of logs); the key and the value's length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .finish()
    }
}

/// What a write requires of its key's current version before it runs (`If-Match`,
/// `If-None-Match: *`, a transaction's compare). One word: `Op` travels the mesh and sits on the
/// hot path. Versions are assigned from 1 and stay below [`Condition::FIRST_RESERVED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Condition(u64);

impl Condition {
    /// No condition: the write always runs.
    pub const NONE: Condition = Condition(0);
    /// The key must not exist (`If-None-Match: *`).
    pub const IF_ABSENT: Condition = Condition(u64::MAX);
    /// The key must exist, whatever its version (`If-Match: *`).
    pub const IF_EXISTS: Condition = Condition(u64::MAX - 1);
    /// Versions at or above this are never assigned: they encode the conditions above.
    pub const FIRST_RESERVED: u64 = u64::MAX - 1;

    /// The key must exist with exactly this version (`If-Match: "<etag>"`).
    pub fn if_version(version: u64) -> Condition {
        debug_assert!(
            version != 0 && version < Condition::FIRST_RESERVED,
            "not an assignable version"
        );
        Condition(version.clamp(1, Condition::FIRST_RESERVED - 1))
    }

    /// The condition as one word, for a log entry ([`Condition::from_word`] reads it back).
    pub fn to_word(self) -> u64 {
        self.0
    }

    /// The condition a word from [`Condition::to_word`] encodes.
    pub fn from_word(word: u64) -> Condition {
        Condition(word)
    }

    /// Whether a key whose current version is `current` (`None`: absent) passes.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Condition::NONE => true,
            Condition::IF_ABSENT => current.is_none(),
            Condition::IF_EXISTS => current.is_some(),
            Condition(version) => current == Some(version),
        }
    }
}

/// One store operation, addressed to the shard that owns its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read a value.
    Get(Box<[u8]>),
    /// Create or replace; `ttl_ms` sets a time to live, `None` clears any.
    Put {
        record: Record,
        ttl_ms: Option<u64>,
        condition: Condition,
    },
    /// Replace only if the key exists; never create.
    Update { record: Record, condition: Condition },
    /// Remove if present.
    Delete { key: Box<[u8]>, condition: Condition },
}

impl Op {
    /// The key the operation is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get(key) | Op::Delete { key, .. } => key,
            Op::Put { record, .. } | Op::Update { record, .. } => record.key(),
        }
    }

    /// An unconditional `Put`.
    pub fn put(record: Record, ttl_ms: Option<u64>) -> Op {
        Op::Put {
            record,
            ttl_ms,
            condition: Condition::NONE,
        }
    }

    /// An unconditional `Update`.
    pub fn update(record: Record) -> Op {
        Op::Update {
            record,
            condition: Condition::NONE,
        }
    }

    /// An unconditional `Delete`.
    pub fn delete(key: &[u8]) -> Op {
        Op::Delete {
            key: Box::from(key),
            condition: Condition::NONE,
        }
    }
}

/// What an operation did. `V` is `&[u8]` when read in place on the owning shard and
/// `Box<[u8]>` when copied into a reply for another shard. Every write that ran answers the
/// key's new version (the ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V> {
    /// `Get`: the value, its remaining time to live when it has one, and its version.
    Found {
        value: V,
        ttl_ms: Option<u64>,
        version: u64,
    },
    /// `Get` or `Update` of a key that does not exist.
    Missing,
    /// `Put` made a new key.
    Created { version: u64 },
    /// `Put` replaced an existing key.
    Replaced { version: u64 },
    /// `Update` replaced an existing key.
    Updated { version: u64 },
    /// `Delete`: whether a key was removed.
    Deleted(bool),
    /// A write that would create a key beyond the shard's budget, in reject mode.
    Rejected(Limit),
    /// A conditional write whose condition did not hold (412); the key's version, if it exists.
    PreconditionFailed { current: Option<u64> },
    /// A transaction's `Get` whose value did not fit in what its answer may carry
    /// ([`crate::limits::TXN_RESULT_VALUE_BYTES_MAX`]): the key's version, not its value.
    Withheld { version: u64 },
    /// A write the owner's log (`--data-dir`) could not take: not applied, or not durable.
    Refused(Refusal),
}

/// Why the durability layer refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No room on the disk for the log (507): the write was not applied.
    DiskFull,
    /// The log failed (an I/O error; 503): the write was not applied, or is not durable.
    LogFailed,
}

impl Refusal {
    /// The refusal a storage error means for a write.
    pub fn from_storage(error: &crate::storage::StorageError) -> Refusal {
        match error.status() {
            507 => Refusal::DiskFull,
            _ => {
                // The answer sends the operator here; the error names a file, never a value.
                crate::warn_limited!("a write was refused by the write-ahead log: {error}");
                Refusal::LogFailed
            }
        }
    }
}

impl Op {
    /// True for an operation that may change its key.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get(_))
    }

    /// The log bytes this operation appends at most when it changes its key (0 for a read):
    /// a Set record with the new value, or a Delete record.
    pub fn log_bytes(&self) -> usize {
        match self {
            Op::Get(_) => 0,
            Op::Put { record, .. } | Op::Update { record, .. } => {
                crate::storage::set_bytes(record.key().len(), record.value().len())
            }
            Op::Delete { key, .. } => crate::storage::delete_bytes(key.len()),
        }
    }
}

/// The capacity limit a rejected write ran into: the shard's share, in keys or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Keys(u64),
    Memory(u64),
}

/// One shard's numbers, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    pub id: usize,
    pub cpu: usize,
    pub keys: u64,
    pub memory_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expired: u64,
    /// Responses sent by status class: `1xx` to `5xx`.
    pub requests: RequestsByClass,
    /// Batches this shard sent to other shards, and received from them.
    pub messages_sent: u64,
    pub messages_received: u64,
    pub connections: u64,
    /// The shard's write-ahead log (`--data-dir`); all zero without it.
    pub storage: StorageStats,
    /// This shard's Raft group on this node (`--peers`), absent when running alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::GroupStatus>,
}

/// One shard's durability numbers, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageStats {
    /// Record bytes and segments in the log since the newest snapshot.
    pub log_bytes: u64,
    pub segments: u64,
    /// Milliseconds since the newest snapshot finished (`None`: none since start-up).
    pub snapshot_age_ms: Option<u64>,
    pub snapshots: u64,
    /// io_uring writes of log bytes, and the bytes they carried.
    pub writes: u64,
    pub written_bytes: u64,
    /// fdatasyncs of log segments, their total and longest latency in microseconds.
    pub fsyncs: u64,
    pub fsync_us_sum: u64,
    pub fsync_us_max: u64,
    /// Start-up recovery: how long it took (µs) and the records it read and applied.
    pub recovery_us: u64,
    pub recovery_records: u64,
    pub recovery_records_applied: u64,
}

/// Response counts by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestsByClass {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl Outcome<&[u8]> {
    /// Copies a found value so the outcome can travel to another shard.
    pub fn to_owned(&self) -> Outcome<Box<[u8]>> {
        self.map(|value| Box::from(*value))
    }
}

impl<V> Outcome<V> {
    /// The same outcome with every version set to 0: for tests that compare outcomes of
    /// writes whose versions they do not predict.
    pub fn without_versions(self) -> Outcome<V> {
        match self {
            Outcome::Found { value, ttl_ms, .. } => Outcome::Found {
                value,
                ttl_ms,
                version: 0,
            },
            Outcome::Created { .. } => Outcome::Created { version: 0 },
            Outcome::Replaced { .. } => Outcome::Replaced { version: 0 },
            Outcome::Updated { .. } => Outcome::Updated { version: 0 },
            other => other,
        }
    }

    /// Maps the found value, keeping every other outcome.
    pub fn map<'a, W>(&'a self, f: impl FnOnce(&'a V) -> W) -> Outcome<W> {
        match self {
            Outcome::Found { value, ttl_ms, version } => Outcome::Found {
                value: f(value),
                ttl_ms: *ttl_ms,
                version: *version,
            },
            Outcome::Missing => Outcome::Missing,
            Outcome::Created { version } => Outcome::Created { version: *version },
            Outcome::Replaced { version } => Outcome::Replaced { version: *version },
            Outcome::Updated { version } => Outcome::Updated { version: *version },
            Outcome::Deleted(removed) => Outcome::Deleted(*removed),
            Outcome::Rejected(limit) => Outcome::Rejected(*limit),
            Outcome::Refused(refusal) => Outcome::Refused(*refusal),
            Outcome::PreconditionFailed { current } => Outcome::PreconditionFailed { current: *current },
            Outcome::Withheld { version } => Outcome::Withheld { version: *version },
        }
    }
}

/// An owner's answer to a [`Batch`]: one outcome per operation it ran, in order, and the
/// operations it handed back unexecuted because the reply reached its byte budget
/// ([`crate::limits::PEER_REPLY_VALUE_BYTES_MAX`]) or the next one's key is locked by a
/// transaction (`blocked`). `deferred` is always a suffix of the batch.
#[derive(Debug, Default)]
pub struct PeerReply {
    pub outcomes: Vec<Outcome<Box<[u8]>>>,
    pub deferred: Vec<Op>,
    /// The owner stopped at a key a transaction holds: pause before sending `deferred` again.
    pub blocked: bool,
    /// Replicated batches (`--peers`): the node that led the group when it was answered.
    pub leader: Option<u64>,
    /// Replicated batches: the group could not run it (no quorum); every operation answers this.
    pub refused: Option<crate::error::Error>,
}

impl PeerReply {
    /// Answers every write in the reply with `refusal` instead (its log record will never be
    /// durable); reads keep their outcomes.
    pub fn refuse_writes(&mut self, refusal: Refusal) {
        for outcome in &mut self.outcomes {
            if matches!(
                outcome,
                Outcome::Created { .. } | Outcome::Replaced { .. } | Outcome::Updated { .. } | Outcome::Deleted(_)
            ) {
                *outcome = Outcome::Refused(refusal);
            }
        }
    }
}

/// Operations for one owner, gathered from one read of one connection (or one bulk update),
/// with the slot the owner answers in.
#[derive(Debug)]
pub struct Batch {
    /// Executed in order, so a pipelined PUT then GET of one key reads its own write.
    pub ops: Vec<Op>,
    /// The owner answers once, with an outcome per executed op, in order.
    pub reply: oneshot::Sender<PeerReply>,
}

/// Which keys a prefix listing asks one shard for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Keys that start with these bytes (empty: every key).
    pub prefix: Box<[u8]>,
    /// Only keys that sort strictly after this one (a cursor, or the last key of a page).
    pub after: Option<Box<[u8]>>,
    /// Whether the page carries values (otherwise each record's value is empty).
    pub values: bool,
}

/// One shard's page of a listing: keys in byte order (with values when asked), bounded by
/// [`crate::limits::LIST_PAGE_KEYS_MAX`] and [`crate::limits::LIST_PAGE_BYTES_MAX`].
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<Record>,
    /// More keys may match: ask again with `after` set to this key. `None`: the shard is done.
    pub resume_after: Option<Box<[u8]>>,
}

/// A listing's request for one shard's next page, with the slot it answers in.
#[derive(Debug)]
pub struct ListRequest {
    pub query: ListQuery,
    pub reply: oneshot::Sender<ListPage>,
}

/// What a watcher watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One key (registered on its owner).
    Key(Box<[u8]>),
    /// Every key that starts with these bytes (registered on every shard).
    Prefix(Box<[u8]>),
}

impl WatchTarget {
    /// Whether a change of `key` concerns this watcher.
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            WatchTarget::Key(watched) => **watched == *key,
            WatchTarget::Prefix(prefix) => key.starts_with(prefix),
        }
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Set,
    Delete,
    Expired,
    Evicted,
}

impl ChangeKind {
    /// The name watchers see (the SSE event's name).
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Set => "set",
            ChangeKind::Delete => "delete",
            ChangeKind::Expired => "expired",
            ChangeKind::Evicted => "evicted",
        }
    }
}

/// One change of one key on its owner, numbered by the owner's change sequence.
#[derive(Debug)]
pub struct Change {
    /// The owner's change number: increases by one with every change on that shard, so it
    /// orders the changes of each key.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The key, and its new value for a `Set` (empty otherwise).
    pub record: Record,
    /// A `Set` whose value was too large to keep in the history (over
    /// [`crate::limits::WATCH_HISTORY_VALUE_BYTES_MAX`]) while no one watched it: a watcher
    /// resuming over it is told to re-read the key.
    pub value_omitted: bool,
    /// The key's version after a `Set` (its ETag); 0 for a change that removed it.
    pub version: u64,
    /// When the owner made the change: a prefix watch, which hears from several shards,
    /// writes the changes it holds oldest first, so that one client's writes to keys on
    /// different shards reach it in the order they were acknowledged. Read only when a watcher
    /// wanted the change as it happened (`None` otherwise: no clock read on an unwatched write;
    /// a resume replays such changes before any live one).
    pub at: Option<std::time::Instant>,
}

impl Change {
    /// Bytes a queued change accounts for: its key and value, plus its bookkeeping.
    pub fn bytes(&self) -> usize {
        self.record.data_len() + std::mem::size_of::<Change>() + 16
    }
}

/// How a watcher's registration went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStart {
    /// Registered; changes after `seq` follow (after the replayed ones, on a resume).
    Started { seq: u64 },
    /// The resume point is older than the retained changes (or unknown): re-read, then watch.
    Compacted { oldest_seq: u64 },
    /// Not registered, and why.
    Refused(&'static str),
}

/// A connection on another shard asks to watch keys this shard owns: changes go into
/// `sender`, the registration's outcome into `reply`.
pub struct WatchRequest {
    pub target: WatchTarget,
    pub from: Option<u64>,
    pub sender: glommio::channels::shared_channel::SharedSender<std::sync::Arc<Change>>,
    pub shared: std::sync::Arc<super::watch::WatchShared>,
    pub reply: oneshot::Sender<WatchStart>,
}

impl std::fmt::Debug for WatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRequest")
            .field("target", &self.target)
            .field("from", &self.from)
            .finish()
    }
}

/// Everything that travels the mesh between shards.
#[derive(Debug)]
pub enum ShardMessage {
    /// Key operations for the receiving shard, which owns their keys.
    Batch(Batch),
    /// Key operations for the receiving shard to run through its Raft group (`--peers`).
    Replicate(Batch),
    /// A request for the receiving shard's numbers.
    Stats(oneshot::Sender<ShardStats>),
    /// A request for the receiving shard's next page of a prefix listing.
    List(ListRequest),
    /// A watcher to register on the receiving shard.
    Watch(WatchRequest),
    /// A transaction's step on the receiving shard's keys (see [`super::txn`]).
    Txn(super::txn::TxnMessage),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_clone_compare_and_drop_their_own_bytes() {
        let record = Record::new(b"key", &[7u8; 1000]);
        let copy = record.clone();
        assert_eq!(copy, record);
        assert_ne!(
            copy.as_bytes().as_ptr(),
            record.as_bytes().as_ptr(),
            "a clone owns its bytes"
        );
        drop(record);
        assert_eq!(copy.value(), &[7u8; 1000][..]);
        assert_eq!(Record::new(b"", b"").data_len(), 0);
        assert_eq!(Record::empty(), Record::new(b"", b""));
        assert!(!format!("{copy:?}").contains("7, 7"), "Debug never prints the value");
    }

    #[test]
    fn allocated_bytes_covers_the_data_and_is_zero_for_nothing() {
        assert_eq!(Record::empty().allocated_bytes(), 0);
        for len in [1usize, 24, 100, 4096, 100_000] {
            let record = Record::new(b"k", &vec![1u8; len - 1]);
            let bytes = record.allocated_bytes();
            assert!(bytes >= len + MALLOC_CHUNK_HEADER_BYTES, "{len}: {bytes}");
            assert!(bytes <= len + 4096 + 64, "{len}: {bytes}");
        }
    }

    #[test]
    fn record_splits_key_and_value() {
        let record = Record::new(b"key", b"value bytes");
        assert_eq!(record.key(), b"key");
        assert_eq!(record.value(), b"value bytes");
        assert_eq!(record.data_len(), 14);
        let empty = Record::new(b"k", b"");
        assert_eq!(empty.value(), b"");
    }

    #[test]
    fn outcomes_copy_found_values_only() {
        let found: Outcome<&[u8]> = Outcome::Found {
            value: b"v",
            ttl_ms: Some(5),
            version: 3,
        };
        assert_eq!(
            found.to_owned(),
            Outcome::Found {
                value: Box::from(&b"v"[..]),
                ttl_ms: Some(5),
                version: 3,
            }
        );
        assert_eq!(Outcome::<&[u8]>::Deleted(true).to_owned(), Outcome::Deleted(true));
    }

    // Goal: a peer reply whose log failed answers every write with the refusal, keeps reads;
    // a write reserves exactly the record it may append.
    #[test]
    fn failed_logs_refuse_writes_and_writes_reserve_their_record() {
        let mut reply = PeerReply {
            outcomes: vec![
                Outcome::Created { version: 1 },
                Outcome::Found {
                    value: Box::from(&b"v"[..]),
                    ttl_ms: None,
                    version: 1,
                },
                Outcome::Deleted(true),
                Outcome::Missing,
            ],
            ..PeerReply::default()
        };
        reply.refuse_writes(Refusal::LogFailed);
        assert_eq!(reply.outcomes[0], Outcome::Refused(Refusal::LogFailed));
        assert!(matches!(reply.outcomes[1], Outcome::Found { .. }));
        assert_eq!(reply.outcomes[2], Outcome::Refused(Refusal::LogFailed));
        assert_eq!(reply.outcomes[3], Outcome::Missing);
        let put = Op::put(Record::new(b"key", b"value"), None);
        assert_eq!(put.log_bytes(), crate::storage::set_bytes(3, 5));
        assert_eq!(Op::delete(b"key").log_bytes(), crate::storage::delete_bytes(3));
        assert_eq!(Op::Get(Box::from(&b"key"[..])).log_bytes(), 0);
        assert!(!Op::Get(Box::from(&b"k"[..])).is_write());
    }

    #[test]
    fn conditions_hold_only_for_their_versions() {
        assert!(Condition::NONE.holds(None) && Condition::NONE.holds(Some(7)));
        assert!(Condition::IF_ABSENT.holds(None) && !Condition::IF_ABSENT.holds(Some(7)));
        assert!(!Condition::IF_EXISTS.holds(None) && Condition::IF_EXISTS.holds(Some(7)));
        let seven = Condition::if_version(7);
        assert!(seven.holds(Some(7)) && !seven.holds(Some(8)) && !seven.holds(None));
        assert!(
            std::mem::size_of::<Op>() <= 48,
            "Op stays small: {}",
            std::mem::size_of::<Op>()
        );
    }
}
