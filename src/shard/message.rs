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
    /// Create or replace.
    Put(Record),
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
            Op::Put(record) | Op::Update(record) => record.key(),
        }
    }
}

/// What an operation did. `V` is `&[u8]` when read in place on the owning shard and
/// `Box<[u8]>` when copied into a reply for another shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V> {
    /// `Get`: the value.
    Found(V),
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
            Outcome::Found(value) => Outcome::Found(f(value)),
            Outcome::Missing => Outcome::Missing,
            Outcome::Created => Outcome::Created,
            Outcome::Replaced => Outcome::Replaced,
            Outcome::Updated => Outcome::Updated,
            Outcome::Deleted(removed) => Outcome::Deleted(*removed),
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
        let found: Outcome<&[u8]> = Outcome::Found(b"v");
        assert_eq!(found.to_owned(), Outcome::Found(Box::from(&b"v"[..])));
        assert_eq!(Outcome::<&[u8]>::Deleted(true).to_owned(), Outcome::Deleted(true));
    }
}
