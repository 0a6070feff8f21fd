//! What shards say to each other: store operations, their outcomes, and the batch that carries
//! them to an owner with a reply slot.
//!
//! Owns the wire between shards and the one allocation layout of a key-value pair
//! ([`Record`]). It never touches a store itself.

use crate::sync::oneshot;

/// A key and its value in one allocation: `key ++ value`, with the key's length alongside.
///
/// Built once by the HTTP layer straight from the request's bytes, moved to the owning shard,
/// and stored as it is: a write costs one allocation and one copy of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    bytes: Box<[u8]>,
    key_len: u32,
}

impl Record {
    /// Builds a record from a key and a value (keys are bounded far below `u32::MAX`).
    pub fn new(key: &[u8], value: &[u8]) -> Record {
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Record {
            bytes: bytes.into_boxed_slice(),
            key_len: key.len() as u32,
        }
    }

    /// A record holding nothing (no allocation): the content of a free slab node.
    pub fn empty() -> Record {
        Record {
            bytes: Box::default(),
            key_len: 0,
        }
    }

    /// Key and value bytes together, as allocated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.bytes[self.key_len as usize..]
    }

    /// Bytes of key plus value (what the store accounts as data).
    pub fn data_len(&self) -> usize {
        self.bytes.len()
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
    /// Report the shard's counters (sent to every shard; has no key).
    Stats,
}

impl Op {
    /// The key the operation is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get(key) | Op::Delete(key) => key,
            Op::Put { record, .. } | Op::Update(record) => record.key(),
            Op::Stats => b"",
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
    /// `Stats`: the shard's counters.
    Stats(Box<ShardStats>),
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
            Outcome::Stats(stats) => Outcome::Stats(stats.clone()),
        }
    }
}

/// Outcomes of a batch, in the order of its operations.
pub type Replies = Vec<Outcome<Box<[u8]>>>;

/// Operations for one owner, gathered from one read of one connection (or one bulk update),
/// with the slot the owner answers in.
#[derive(Debug)]
pub struct Batch {
    /// Executed in order, so a pipelined PUT then GET of one key reads its own write.
    pub ops: Vec<Op>,
    /// The owner sends one outcome per op, in order.
    pub reply: oneshot::Sender<Replies>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
