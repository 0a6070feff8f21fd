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

/// One store operation, addressed to the shard that owns its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read a value.
    Get(Box<[u8]>),
    /// Create or replace; `ttl_ms` sets a time to live, `None` clears any.
    Put { record: Record, ttl_ms: Option<u64> },
    /// Replace only if the key exists; never create.
    Update(Record),
    /// Remove if present.
    Delete(Box<[u8]>),
}

impl Op {
    /// The key the operation is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get(key) | Op::Delete(key) => key,
            Op::Put { record, .. } | Op::Update(record) => record.key(),
        }
    }
}

/// What an operation did. `V` is `&[u8]` when read in place on the owning shard and
/// `Box<[u8]>` when copied into a reply for another shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V> {
    /// `Get`: the value, and its remaining time to live when it has one.
    Found { value: V, ttl_ms: Option<u64> },
    /// `Get` or `Update` of a key that does not exist.
    Missing,
    /// `Put` made a new key.
    Created,
    /// `Put` replaced an existing key.
    Replaced,
    /// `Update` replaced an existing key.
    Updated,
    /// `Delete`: whether a key was removed.
    Deleted(bool),
    /// A write that would create a key beyond the shard's budget, in reject mode.
    Rejected(Limit),
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
    /// This shard's Raft group on this node (`--peers`), absent when running alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::GroupStatus>,
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
    /// Maps the found value, keeping every other outcome.
    pub fn map<'a, W>(&'a self, f: impl FnOnce(&'a V) -> W) -> Outcome<W> {
        match self {
            Outcome::Found { value, ttl_ms } => Outcome::Found {
                value: f(value),
                ttl_ms: *ttl_ms,
            },
            Outcome::Missing => Outcome::Missing,
            Outcome::Created => Outcome::Created,
            Outcome::Replaced => Outcome::Replaced,
            Outcome::Updated => Outcome::Updated,
            Outcome::Deleted(removed) => Outcome::Deleted(*removed),
            Outcome::Rejected(limit) => Outcome::Rejected(*limit),
        }
    }
}

/// An owner's answer to a [`Batch`]: one outcome per operation it ran, in order, and the
/// operations it handed back unexecuted because the reply reached its byte budget
/// ([`crate::limits::PEER_REPLY_VALUE_BYTES_MAX`]). `deferred` is always a suffix of the batch.
#[derive(Debug, Default)]
pub struct PeerReply {
    pub outcomes: Vec<Outcome<Box<[u8]>>>,
    pub deferred: Vec<Op>,
    /// Replicated batches (`--peers`): the node that led the group when it was answered.
    pub leader: Option<u64>,
    /// Replicated batches: the group could not run it (no quorum); every operation answers this.
    pub refused: Option<crate::error::Error>,
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

/// Everything that travels the mesh between shards.
#[derive(Debug)]
pub enum ShardMessage {
    /// Key operations for the receiving shard, which owns their keys.
    Batch(Batch),
    /// Key operations for the receiving shard to run through its Raft group (`--peers`).
    Replicate(Batch),
    /// A request for the receiving shard's numbers.
    Stats(oneshot::Sender<ShardStats>),
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
        };
        assert_eq!(
            found.to_owned(),
            Outcome::Found {
                value: Box::from(&b"v"[..]),
                ttl_ms: Some(5)
            }
        );
        assert_eq!(Outcome::<&[u8]>::Deleted(true).to_owned(), Outcome::Deleted(true));
    }
}
